"""The states and batches both sides of the reference trajectory start from (NumPy only).

Two settings of the authors' code, each run for a few iterations from one
seeded state (T = 2, β = 0.5, SGD 0.1 / 0.9 / 1e-4, Adam with weight decay
1e-4): the 32 setting, their README's CIFAR-100 command (ResNet-32 →
VGG-9-BN, 15 pairs, the shipped ResNet-32 source), and the 224 setting, their
Stanford Dogs command (ResNet-34 → ResNet-18, their default 16 pairs; a seeded
ResNet-34 stands in for the ImageNet weights). Names and layouts are the
official PyTorch ones (conv kernels OIHW, Linear weights (out, in)); NumPy's
`default_rng` makes the same numbers on every platform, so the fixture needs
no weights. Imported by `record_official_trajectory.py` (a Python with torch,
no TensorFlow) and by `tests/test_official_trajectory.py`.
"""

import json
import math

import numpy as np

PAIRS = [(m, n) for m in (4, 9, 14) for n in range(5)]  # the README's 4-0,...,14-4
PAIRS_SPEC = ",".join(f"{m}-{n}" for m, n in PAIRS)
NUM_CLASSES = 100  # the official cifar100 split's classes
EPOCHS = 200  # the official default --epochs
LEARNING_RATE = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
META_WEIGHT_DECAY = 1e-4
BETA = 0.5
INNER_STEPS = 2
BATCH_SIZE = 8
PROBE_SIZE = 8
ITERATIONS = 4
META_LEARNING_RATES = (1e-4, 1e-2)
SEED = 0
SAMPLES_PER_TENSOR = 8

# VGG-9-BN (the official cfg [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M] with BN):
# indices in `features` of conv i and BN i (i = 1..8), and the channel widths.
VGG_CONV_INDICES = [0, 4, 8, 11, 15, 18, 22, 25]
VGG_BN_INDICES = [1, 5, 9, 12, 16, 19, 23, 26]
VGG_WIDTHS = [64, 128, 256, 256, 512, 512, 512, 512]
SOURCE_CHANNELS = {4: 16, 9: 32, 14: 64}  # ResNet-32 taps of the pairs
TARGET_CHANNELS = [64, 128, 256, 512, 512]  # VGG-9-BN taps 0..4


def epoch_zero_learning_rate():
    """θ's rate in epoch 0: the official loop steps CosineAnnealingLR(T_max=200) before the first batch."""
    return LEARNING_RATE * (1 + math.cos(math.pi / EPOCHS)) / 2


def _transfer_state(rng, pairs, source_channels, target_channels):
    """Regressors ("branch", PyTorch-default), what-nets off zero ("wnet") and where-nets with bias 1 ("lwnet")."""
    state = {}
    for p, (m, n) in enumerate(pairs):
        bound = 1 / math.sqrt(target_channels[n])
        state[f"branch.{p}.weight"] = rng.uniform(-bound, bound, (source_channels[m], target_channels[n], 1, 1))
        state[f"branch.{p}.bias"] = rng.uniform(-bound, bound, source_channels[m])
    for p, (m, _) in enumerate(pairs):
        channels = source_channels[m]
        state[f"wnet.{p}.weight"] = rng.normal(0, 0.5 / math.sqrt(channels), (channels, channels))
        state[f"wnet.{p}.bias"] = rng.normal(0, 0.1, channels)
        bound = 1 / math.sqrt(channels)
        state[f"lwnet.{p}.weight"] = rng.uniform(-bound, bound, (1, channels))
        state[f"lwnet.{p}.bias"] = np.ones(1)
    return state


def initial_state():
    """{official name: float64 array}: target, regressors ("branch"), what-nets ("wnet"), where-nets ("lwnet").

    He-normal convolutions, BN affine terms and statistics off their defaults
    (so that a swapped γ/β or mean/var shows), a small random classifier,
    PyTorch-default regressors, what-nets off zero (w starts non-uniform) and
    where-nets with the official bias 1 (λ starts inside relu6's range).
    """
    rng = np.random.default_rng(SEED)
    state = {}
    channels_in = 3
    for conv, bn, width in zip(VGG_CONV_INDICES, VGG_BN_INDICES, VGG_WIDTHS):
        state[f"target.features.{conv}.weight"] = rng.normal(0, math.sqrt(2 / (9 * width)), (width, channels_in, 3, 3))
        state[f"target.features.{conv}.bias"] = rng.normal(0, 0.01, width)
        state[f"target.features.{bn}.weight"] = rng.uniform(0.8, 1.2, width)
        state[f"target.features.{bn}.bias"] = rng.normal(0, 0.05, width)
        state[f"target.features.{bn}.running_mean"] = rng.normal(0, 0.1, width)
        state[f"target.features.{bn}.running_var"] = rng.uniform(0.5, 1.5, width)
        channels_in = width
    state["target.classifier.weight"] = rng.normal(0, 0.05, (NUM_CLASSES, 512))
    state["target.classifier.bias"] = rng.normal(0, 0.01, NUM_CLASSES)
    state.update(_transfer_state(rng, PAIRS, SOURCE_CHANNELS, TARGET_CHANNELS))
    return state


def batches():
    """(images (K, B, 32, 32, 3) NHWC, labels (K, B), probe images (P, 32, 32, 3)), float64, N(0, 1)."""
    rng = np.random.default_rng(SEED + 1)
    images = rng.standard_normal((ITERATIONS, BATCH_SIZE, 32, 32, 3))
    labels = rng.integers(0, NUM_CLASSES, (ITERATIONS, BATCH_SIZE))
    probe = rng.standard_normal((PROBE_SIZE, 32, 32, 3))
    return images, labels, probe


# The 224 setting: ResNet-34 (ImageNet classes) -> ResNet-18 (Stanford Dogs' 120 classes).
RESNET_PAIRS = [(m, n) for m in (4, 3, 2, 1) for n in (4, 3, 2, 1)]  # the authors' default --pairs, in order
RESNET_PAIRS_SPEC = ",".join(f"{m}-{n}" for m, n in RESNET_PAIRS)
RESNET_CHANNELS = [64, 64, 128, 256, 512]  # taps 0 (stem) .. 4 of both
RESNET_SOURCE_CLASSES = 1000
RESNET_TARGET_CLASSES = 120
RESNET_IMAGE_SIZE = 224  # the authors' ResNets pool 7x7 at the end: 224 only
RESNET_BATCH_SIZE = 2
# The official 1e-4. At 1e-2 this setting amplifies round-off by ~1000x an iteration (keras-l2t against
# itself, taped and recomputed meta-gradient: φ 1e-12 apart after iteration 1, 1e-7 after 4), too much
# for a 1e-9 comparison; the 32 setting covers 1e-2.
RESNET_META_LEARNING_RATE = 1e-4


def _resnet_state(rng, prefix, blocks_per_stage, num_classes):
    """A torchvision-named ResNet state: He-normal convolutions, BN terms and statistics off their defaults."""
    state = {}

    def conv(name, out, inp, k):
        state[f"{prefix}{name}.weight"] = rng.normal(0, math.sqrt(2 / (k * k * out)), (out, inp, k, k))

    def batch_norm(name, width, gamma=(0.8, 1.2)):
        state[f"{prefix}{name}.weight"] = rng.uniform(*gamma, width)
        state[f"{prefix}{name}.bias"] = rng.normal(0, 0.05, width)
        state[f"{prefix}{name}.running_mean"] = rng.normal(0, 0.1, width)
        state[f"{prefix}{name}.running_var"] = rng.uniform(0.5, 1.5, width)

    conv("conv1", 64, 3, 7)
    batch_norm("bn1", 64)
    channels = 64
    for stage, blocks in enumerate(blocks_per_stage):
        width = 64 * 2**stage
        for block in range(blocks):
            name = f"layer{stage + 1}.{block}"
            conv(f"{name}.conv1", width, channels, 3)
            batch_norm(f"{name}.bn1", width)
            conv(f"{name}.conv2", width, width, 3)
            batch_norm(f"{name}.bn2", width, gamma=(0.3, 0.6))  # residual branches start small, as trained ones
            if block == 0 and (stage > 0 or channels != width):
                conv(f"{name}.downsample.0", width, channels, 1)
                batch_norm(f"{name}.downsample.1", width)
            channels = width
    state[f"{prefix}fc.weight"] = rng.normal(0, 0.05, (num_classes, 512))
    state[f"{prefix}fc.bias"] = rng.normal(0, 0.01, num_classes)
    return state


def resnet_initial_state():
    """The 224 setting's state: "source." (ResNet-34), "target." (ResNet-18), "branch.", "wnet.", "lwnet."."""
    rng = np.random.default_rng(SEED + 2)
    state = _resnet_state(rng, "source.", (3, 4, 6, 3), RESNET_SOURCE_CLASSES)
    state.update(_resnet_state(rng, "target.", (2, 2, 2, 2), RESNET_TARGET_CLASSES))
    state.update(_transfer_state(rng, RESNET_PAIRS, RESNET_CHANNELS, RESNET_CHANNELS))
    return state


def resnet_batches():
    """As `batches`, for the 224 setting: (images (K, B, 224, 224, 3), labels (K, B), probe (B, 224, 224, 3))."""
    rng = np.random.default_rng(SEED + 3)
    shape = (RESNET_BATCH_SIZE, RESNET_IMAGE_SIZE, RESNET_IMAGE_SIZE, 3)
    images = rng.standard_normal((ITERATIONS, *shape))
    labels = rng.integers(0, RESNET_TARGET_CLASSES, (ITERATIONS, RESNET_BATCH_SIZE))
    return images, labels, rng.standard_normal(shape)


def sample_indices(name, size):
    """The flat indices of `name`'s sampled entries: fixed per name, the same on both sides."""
    rng = np.random.default_rng([SEED, *name.encode()])
    return np.sort(rng.choice(size, min(SAMPLES_PER_TENSOR, size), replace=False))


def summary(name, array):
    """(sum, L2 norm, sampled entries) of a tensor: enough to localise a drift, small enough to commit."""
    flat = np.asarray(array, np.float64).reshape(-1)
    return np.array([flat.sum(), np.linalg.norm(flat)]), flat[sample_indices(name, flat.size)]


def write_fixture(path, arrays, **metadata):
    """Packs {key: float array} into one compressed .npz: the values end to end and a JSON index."""
    index, chunks, offset = {}, [], 0
    for key, value in arrays.items():
        flat = np.asarray(value, np.float64).reshape(-1)
        index[key] = [offset, list(np.shape(value))]
        chunks.append(flat)
        offset += flat.size
    header = json.dumps({"index": index, "metadata": metadata}).encode()
    np.savez_compressed(path, values=np.concatenate(chunks), header=np.frombuffer(header, np.uint8))


def read_fixture(path):
    """({key: float64 array}, metadata) from `write_fixture`."""
    with np.load(path) as data:
        values, header = data["values"], json.loads(data["header"].tobytes().decode())
    arrays = {}
    for key, (offset, shape) in header["index"].items():
        size = int(np.prod(shape)) if shape else 1
        arrays[key] = values[offset : offset + size].reshape(shape)
    return arrays, header["metadata"]
