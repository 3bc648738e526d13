"""Presets in timm's checkpoint format (`config.json` + `model.safetensors`) made from our own ResNet-34.

The format of `hf://timm/resnet34.tv_in1k`, the paper's 224 source, so that
tests load it through keras-hub offline: as a local directory, or laid out as a
Hugging Face cache entry.
"""

import json
import os

import numpy as np
from safetensors import numpy as safetensors_numpy

TIMM_RESNET34_CONFIG = {
    "architecture": "resnet34", "num_features": 512,
    "pretrained_cfg": {"input_size": [3, 224, 224], "interpolation": "bilinear",
                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}


def _timm_state_dict(resnet):
    """Our resnet34's weights under timm's (torchvision's) key names and layouts."""
    layers = {layer.name: layer for layer in resnet.network.layers}
    state = {}

    def conv(ours, theirs):
        state[f"{theirs}.weight"] = np.transpose(layers[ours].get_weights()[0], (3, 2, 0, 1))

    def batch_norm(ours, theirs):
        gamma, beta, mean, variance = layers[ours].get_weights()
        state.update({f"{theirs}.weight": gamma, f"{theirs}.bias": beta,
                      f"{theirs}.running_mean": mean, f"{theirs}.running_var": variance})

    conv("conv1", "conv1")
    batch_norm("bn1", "bn1")
    for stage, blocks in enumerate((3, 4, 6, 3)):
        for block in range(blocks):
            ours, theirs = f"layer{stage + 1}_{block}", f"layer{stage + 1}.{block}"
            for i in (1, 2):
                conv(f"{ours}_conv{i}", f"{theirs}.conv{i}")
                batch_norm(f"{ours}_bn{i}", f"{theirs}.bn{i}")
            if f"{ours}_downsample_conv" in layers:
                conv(f"{ours}_downsample_conv", f"{theirs}.downsample.0")
                batch_norm(f"{ours}_downsample_bn", f"{theirs}.downsample.1")
    kernel, bias = layers["fc"].get_weights()
    state["fc.weight"], state["fc.bias"] = kernel.T, bias
    return {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}


def write_timm_preset(resnet, directory):
    """Writes `resnet` (our resnet34) as timm's config.json + model.safetensors into `directory`."""
    os.makedirs(directory, exist_ok=True)
    safetensors_numpy.save_file(_timm_state_dict(resnet), os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump({**TIMM_RESNET34_CONFIG, "num_classes": resnet.num_classes}, f)


def write_hugging_face_cache_entry(resnet, cache_dir, repo_id="timm/resnet34.tv_in1k", commit="0" * 40):
    """Lays `resnet` out as huggingface_hub's cache holds a downloaded `repo_id` (refs/main → snapshot)."""
    repo = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))
    write_timm_preset(resnet, os.path.join(repo, "snapshots", commit))
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w", encoding="utf-8") as f:
        f.write(commit)
