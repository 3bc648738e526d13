"""Sources from keras-hub: any image backbone preset, or any timm checkpoint keras-hub converts.

The 224 setting of the paper transfers from torchvision's ImageNet ResNet-34,
which timm publishes as `resnet34.tv_in1k`; keras-hub converts timm checkpoints
on loading, so `hub_source("hf://timm/resnet34.tv_in1k")` (short name
`resnet34_imagenet`) is that network as a keras_l2t `Backbone`, its logits from
the preset's classification head.

Taps of a keras-hub ResNet are numbered as the official code
(`forward_with_features` of models/resnet_ilsvrc.py) and `backbones.resnet34`
number them: 0 is the stem after its ReLU, before the max-pool (stride 2), and
1–4 are the four stage outputs, keras-hub's pyramid outputs P2–P5 (strides 4,
8, 16, 32); pairs such as "all" draw from 1–4 (docs/method.md §1.1). So tap k
of `resnet34_imagenet` is the same tensor as tap k of `backbones.resnet34` with
the same weights, and `3-3` means the same pair for either source. Other
keras-hub backbones are tapped at their pyramid outputs in level order,
numbered from 0.

Loading never waits on the network: a preset is read from a local directory, or
from the Hugging Face cache when it is there; only when it is missing and the hub
answers within seconds is it downloaded. Otherwise an `InputError` says which
files to copy where.
"""

import os

import keras
import numpy as np

from keras_l2t.backbones.backbone import Backbone
from keras_l2t.data.availability import reachable_endpoints
from keras_l2t.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_l2t.errors import InputError

# Short names of the sources the paper uses that keras-hub provides.
HUB_ALIASES = {"resnet34_imagenet": "hf://timm/resnet34.tv_in1k"}
HUGGING_FACE_HOST = ("huggingface.co", 443)
KAGGLE_HOST = ("www.kaggle.com", 443)
# Files keras-hub reads from a timm or keras-hub preset directory.
PRESET_FILE_PATTERNS = ("*.json", "*.safetensors", "*.weights.h5")


def is_hub_spec(spec):
    """Whether `spec` names a keras-hub source: an alias, a hf:// or kaggle:// handle, a preset directory, or a built-in preset name."""
    if spec in HUB_ALIASES or spec.startswith(("hf://", "kaggle://")):
        return True
    if os.path.isdir(spec):
        return os.path.isfile(os.path.join(spec, "config.json"))
    return _builtin_preset(spec)


def _keras_hub():
    try:
        import keras_hub  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise InputError(
            f"keras-hub sources need the keras-hub package ({error}); `pip install keras-hub safetensors` "
            "(keras-hub needs Python >= 3.11)."
        ) from error
    return keras_hub


def _builtin_preset(name):
    if "/" in name or name.endswith(".keras"):
        return False
    try:
        return name in _keras_hub().models.Backbone.presets
    except InputError:
        return False


def _hugging_face_snapshot(spec):
    """The local directory holding the preset files of a hf:// handle, downloading them only if the hub answers."""
    import huggingface_hub  # pylint: disable=import-outside-toplevel
    from huggingface_hub import constants  # pylint: disable=import-outside-toplevel

    repo_id = spec.removeprefix("hf://")
    try:
        return huggingface_hub.snapshot_download(repo_id, allow_patterns=list(PRESET_FILE_PATTERNS), local_files_only=True)
    except Exception:  # pylint: disable=broad-except  # not (completely) cached: fall through
        pass
    if not reachable_endpoints([HUGGING_FACE_HOST]):
        raise InputError(
            f"Source {spec!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"{HUGGING_FACE_HOST[0]} is unreachable. On a machine with internet access run "
            f"`hf download {repo_id} config.json model.safetensors --local-dir DIR` (`huggingface-cli download` "
            "before huggingface_hub 1.0), copy DIR here "
            "and pass --source=DIR (or copy that machine's cache folder models--"
            f"{repo_id.replace('/', '--')} into the cache above)."
        )
    return huggingface_hub.snapshot_download(repo_id, allow_patterns=list(PRESET_FILE_PATTERNS))


def _local_preset(spec):
    """A preset keras-hub can load without the network, or an InputError saying what to provide."""
    spec = HUB_ALIASES.get(spec, spec)
    if os.path.isdir(spec):
        return spec
    if spec.startswith("hf://"):
        return _hugging_face_snapshot(spec)
    if not reachable_endpoints([KAGGLE_HOST]):
        raise InputError(
            f"keras-hub preset {spec!r} is downloaded from Kaggle, and {KAGGLE_HOST[0]} is unreachable. On a "
            f"machine with internet access save it with `keras_hub.models.ImageClassifier.from_preset({spec!r})"
            ".save_to_preset(DIR)`, copy DIR here and pass --source=DIR."
        )
    return spec


@keras.saving.register_keras_serializable(package="keras_l2t")
class ChannelAffine(keras.layers.Layer):
    """y = x·scale + offset per channel: maps keras_l2t's normalised inputs to what a preset expects."""

    def __init__(self, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(s) for s in scale]
        self.offset = [float(o) for o in offset]

    def call(self, inputs):
        scale = keras.ops.convert_to_tensor(self.scale, inputs.dtype)
        offset = keras.ops.convert_to_tensor(self.offset, inputs.dtype)
        return inputs * scale + offset

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


def _input_affine(converter):
    """(scale, offset) from keras_l2t inputs, (pixels/255 − ImageNet mean)/std, to the converter's output.

    The converter maps pixels p ∈ [0, 255] to p·s + o (keras-hub's ImageConverter);
    with p = 255·(x·std + mean) that is x·(255·std·s) + (255·mean·s + o).
    """
    scale = np.broadcast_to(np.asarray(1.0 if converter is None or converter.scale is None else converter.scale), (3,))
    offset = np.broadcast_to(np.asarray(0.0 if converter is None or converter.offset is None else converter.offset), (3,))
    std, mean = np.asarray(IMAGENET_STD), np.asarray(IMAGENET_MEAN)
    return 255.0 * std * scale, 255.0 * mean * scale + offset


def _logits_head(dense):
    """The preset's output Dense, or a linear copy of it where it applies a softmax/sigmoid (the losses take logits)."""
    if getattr(dense.activation, "__name__", "linear") == "linear":
        return dense
    linear = keras.layers.Dense(dense.units, name=f"{dense.name}_logits")
    linear.build(dense.kernel.shape[:-1])
    linear.set_weights(dense.get_weights())
    return linear


def hub_source(spec, image_size=224, name=None):
    """A keras-hub image classifier preset as a frozen keras_l2t `Backbone`.

    Args:
        spec: `resnet34_imagenet`, a `hf://` or `kaggle://` handle, a keras-hub
            preset name, or a local preset directory (timm's `config.json` +
            `model.safetensors`, or a keras-hub preset).
        image_size: Input side.
        name: The Backbone's name (default: derived from `spec`).

    The taps of a ResNet are its stem (tap 0, before the max-pool) and its
    `pyramid_outputs` P2–P5 (taps 1–4, the transfer taps), as the official code
    and `backbones.resnet34` number them; any other backbone's are its
    `pyramid_outputs` in level order. The logits are the preset's
    classification head on the backbone's output.
    """
    keras_hub = _keras_hub()
    preset = _local_preset(spec)
    try:
        classifier = keras_hub.models.ImageClassifier.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise InputError(f"keras-hub could not load an image classifier from {spec!r}: {error}") from error
    name = name or os.path.basename(HUB_ALIASES.get(spec, spec).rstrip("/")).replace(".", "_").replace("-", "_")
    return classifier_source(classifier, image_size=image_size, name=name, spec=spec)


def classifier_source(classifier, image_size=224, name=None, spec=None):
    """A keras-hub `ImageClassifier` object (loaded or built, e.g. at random weights) as a keras_l2t `Backbone`.

    The taps and logits are those of `hub_source`; `spec` only names the
    classifier in error messages (default: its class name).
    """
    keras_hub = _keras_hub()
    spec = spec or type(classifier).__name__
    if type(classifier).__init__ is not keras_hub.models.ImageClassifier.__init__ or not all(
        hasattr(classifier, layer) for layer in ("pooler", "output_dense")
    ):
        raise InputError(
            f"{spec!r} is a {type(classifier).__name__}, whose classification head is not keras-hub's standard "
            "pooler + dense head; only presets with that head (e.g. ResNet, CSPNet, EfficientNet) can be sources."
        )
    backbone = classifier.backbone
    levels = sorted(getattr(backbone, "pyramid_outputs", None) or {}, key=lambda level: int(level.lstrip("P")))
    if not levels:
        raise InputError(f"The backbone of {spec!r} ({type(backbone).__name__}) has no pyramid_outputs to tap.")
    tap_names, tap_tensors = list(levels), [backbone.pyramid_outputs[k] for k in levels]
    transfer_taps = None  # every tap
    if isinstance(backbone, keras_hub.models.ResNetBackbone):
        tap_names, tap_tensors = ["stem"] + tap_names, [_resnet_stem(backbone, spec)] + tap_tensors
        transfer_taps = tuple(range(1, len(tap_names)))  # the stage outputs, as backbones.resnet34's
    features = keras.Model(backbone.inputs, [backbone.output] + tap_tensors)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    scale, offset = _input_affine(getattr(classifier.preprocessor, "image_converter", None))
    x = inputs
    if not (np.allclose(scale, 1.0, atol=1e-6) and np.allclose(offset, 0.0, atol=1e-6)):
        x = ChannelAffine(scale, offset, name="preset_inputs")(x)
    backbone_output, *taps = features(x)
    taps = [keras.layers.Identity(name=tap_name)(tap) for tap_name, tap in zip(tap_names, taps)]  # λ image names
    logits = _logits_head(classifier.output_dense)(classifier.pooler(backbone_output))
    name = name or type(classifier.backbone).__name__.lower()
    network = keras.Model(inputs, [logits] + taps, name=f"{name}_network")
    return Backbone(network, transfer_taps=transfer_taps, name=name)


def _resnet_stem(backbone, spec):
    """The stem output of a keras-hub ResNet before its max-pool: the official code's feature 0 (`r1`).

    That is the last input conv's ReLU (`conv{n}_relu`); a pre-activation ResNet
    (v2) has no BN/ReLU there, so it is that conv's output (`conv{n}_conv`).
    """
    last = len(backbone.input_conv_filters)
    layer_name = f"conv{last}_conv" if backbone.use_pre_activation else f"conv{last}_relu"
    try:
        return backbone.get_layer(layer_name).output
    except ValueError as error:
        raise InputError(
            f"The ResNet backbone of {spec!r} has no layer {layer_name!r} to tap as its stem (tap 0); "
            "this keras-hub version names its layers differently."
        ) from error
