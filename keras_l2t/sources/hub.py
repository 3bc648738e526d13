"""Sources from keras-hub: any vision backbone or image classifier preset, or a timm checkpoint it converts.

The 224 setting of the paper transfers from torchvision's ImageNet ResNet-34,
which timm publishes as `resnet34.tv_in1k`; keras-hub converts timm checkpoints
on loading, so `hub_source("hf://timm/resnet34.tv_in1k")` (short name
`resnet34_imagenet`) is that network as a keras_l2t `Backbone`, its logits from
the preset's classification head. Its taps are numbered as the official code
and `backbones.resnet34` number them (tap k is the same tensor for either, so
`3-3` means the same pair). Every other keras-hub vision family is tapped as
`keras_l2t.backbones.hub` says: CNNs at their stages, vision transformers
(ViT, DeiT, DINOv2, DINOv3, CLIP, SigLIP) at chosen blocks, Swin at its
stages. A preset without a classification head (DINOv2, CLIP) is a source
without logits (`has_classifier=False`: FM, AT, L2T-w and L2T-ww take it, LwF
refuses it).

Each source keeps its own input convention: the preset's image converter says
how it scales pixels (a `ChannelAffine` maps keras_l2t's ImageNet-normalised
images to it). A transformer keeps its fixed input size (the converter's where
the family can be rebuilt at it); `keras_l2t.sources.load_source` resizes the
target's images for it.

Loading never waits on the network: a preset is read from a local directory, or
from the Hugging Face cache when it is there; only when it is missing and the hub
answers within seconds is it downloaded. Otherwise an `InputError` says which
files to copy where.
"""

import json
import os

import keras
import numpy as np

from keras_l2t.backbones.backbone import Backbone
from keras_l2t.backbones.hub import import_keras_hub, hub_network, vision_tower
from keras_l2t.layers.channel_affine import ChannelAffine
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


def _builtin_preset(name):
    if "/" in name or name.endswith(".keras"):
        return False
    try:
        return name in import_keras_hub().models.Backbone.presets
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


def local_preset(spec):
    """A preset keras-hub can load without the network, or an InputError saying what to provide."""
    spec = HUB_ALIASES.get(spec, spec)
    if os.path.isdir(spec):
        return spec
    if spec.startswith("hf://"):
        return _hugging_face_snapshot(spec)
    if not reachable_endpoints([KAGGLE_HOST]):
        raise InputError(
            f"keras-hub preset {spec!r} is downloaded from Kaggle, and {KAGGLE_HOST[0]} is unreachable. On a "
            f"machine with internet access save it with `keras_hub.models.Backbone.from_preset({spec!r})"
            f".save_to_preset(DIR)` (ImageClassifier for a classifier preset) and `keras_hub.layers.ImageConverter"
            f".from_preset({spec!r}).save_to_preset(DIR)`, copy DIR here and pass DIR instead of {spec!r}."
        )
    return spec


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


def _image_converter(preset, classifier=None):
    """The preset's image converter (how it scales pixels, at what size), or None if it has none."""
    keras_hub = import_keras_hub()
    converter = getattr(getattr(classifier, "preprocessor", None), "image_converter", None)
    if converter is not None:
        return converter
    try:
        return keras_hub.layers.ImageConverter.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError):
        pass
    path = os.path.join(preset, "image_converter.json") if os.path.isdir(preset) else None
    if path and os.path.isfile(path):  # a two-tower converter saved beside its image tower alone
        with open(path, encoding="utf-8") as f:
            return keras.saving.deserialize_keras_object(json.load(f))
    return None


def _fixed_size(backbone):
    shape = vision_tower(backbone).inputs[0].shape
    return None if shape[1] is None else int(shape[1])


def _backbone_at_converter_size(keras_hub, preset, backbone, converter):
    """The headless backbone rebuilt at the converter's size where the family allows (DINOv2/v3, Swin)."""
    size = getattr(converter, "image_size", None)
    fixed = _fixed_size(backbone)
    if not size or fixed is None or tuple(size) == (fixed, fixed) or size[0] != size[1]:
        return backbone
    try:
        return keras_hub.models.Backbone.from_preset(preset, image_shape=(size[0], size[1], 3))
    except (ValueError, TypeError):  # fixed position embeddings (ViT, CLIP, SigLIP): keep the config's size
        return backbone


def hub_source(spec, image_size=224, name=None, blocks=None):
    """A keras-hub preset as a frozen keras_l2t `Backbone`.

    Args:
        spec: `resnet34_imagenet`, a `hf://` or `kaggle://` handle, a keras-hub
            preset name, or a local preset directory (timm's `config.json` +
            `model.safetensors`, or a keras-hub preset of a classifier or of a
            backbone alone).
        image_size: Input side for a fully convolutional network; a network
            with a fixed input size (transformers) keeps its own.
        name: The Backbone's name (default: derived from `spec`).
        blocks: Transformers: the 1-based blocks to tap (default 4 evenly spaced).

    A preset with an image classifier gives a source with logits; one with a
    backbone alone (DINOv2, CLIP, ...) a source without (`has_classifier=False`).
    """
    keras_hub = import_keras_hub()
    preset = local_preset(spec)
    name = name or os.path.basename(HUB_ALIASES.get(spec, spec).rstrip("/")).replace(".", "_").replace("-", "_")
    try:
        classifier = keras_hub.models.ImageClassifier.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError, TypeError):
        classifier = None  # a backbone alone (e.g. DINOv2), or a classifier keras-hub cannot build
    if classifier is not None:
        return classifier_source(classifier, image_size=image_size, name=name, spec=spec, blocks=blocks,
                                 converter=_image_converter(preset, classifier))
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError, TypeError) as error:
        raise InputError(f"keras-hub could not load a vision backbone from {spec!r}: {error}") from error
    converter = _image_converter(preset)
    backbone = _backbone_at_converter_size(keras_hub, preset, backbone, converter)
    return backbone_source(backbone, image_size=image_size, name=name, spec=spec, blocks=blocks, converter=converter)


def _source_network(backbone, image_size, name, spec, blocks, converter, head=None):
    scale, offset = _input_affine(converter)
    affine = None
    if not (np.allclose(scale, 1.0, atol=1e-6) and np.allclose(offset, 0.0, atol=1e-6)):
        affine = ChannelAffine(scale, offset, name="preset_inputs")
    size = _fixed_size(backbone) or image_size
    return hub_network(backbone, size, blocks=blocks, spec=repr(spec), head=head, affine=affine, name=name)


def backbone_source(backbone, image_size=224, name=None, spec=None, blocks=None, converter=None):
    """A keras-hub vision `Backbone` object without a classification head as a frozen keras_l2t `Backbone`.

    Its first output is an embedding, not logits (`has_classifier=False`).
    `converter`: the keras-hub image converter whose pixel scaling it expects
    (None: raw pixels in [0, 255], keras-hub's convention without one).
    """
    spec = spec or type(backbone).__name__
    name = name or type(backbone).__name__.lower()
    network, transfer_taps = _source_network(backbone, image_size, name, spec, blocks, converter)
    source = Backbone(network, transfer_taps=transfer_taps, has_classifier=False, name=name)
    source.trainable = False
    return source


def classifier_source(classifier, image_size=224, name=None, spec=None, blocks=None, converter=None):
    """A keras-hub `ImageClassifier` object (loaded or built, e.g. at random weights) as a keras_l2t `Backbone`.

    The taps are its backbone's (`keras_l2t.backbones.hub.hub_taps`), the
    logits its own head's (a softmax head is read before its softmax).
    `spec` only names the classifier in error messages (default: its class
    name); `converter` defaults to the classifier's preprocessor's.
    """
    spec = spec or type(classifier).__name__
    converter = converter or getattr(getattr(classifier, "preprocessor", None), "image_converter", None)
    name = name or type(classifier.backbone).__name__.lower()
    network, transfer_taps = _source_network(
        classifier.backbone, image_size, name, spec, blocks, converter, head=_classifier_head(classifier, spec)
    )
    source = Backbone(network, transfer_taps=transfer_taps, name=name)
    source.trainable = False
    return source


def _classifier_head(classifier, spec):
    """The classifier's layers after its backbone, as a model from the backbone's output to the logits."""
    backbone = classifier.backbone
    calls = [node for node in backbone._inbound_nodes if node.operation is backbone]  # pylint: disable=protected-access
    if len(calls) != 1:
        raise InputError(f"{spec!r}: cannot find where its classifier calls its backbone; use the backbone alone.")
    features = keras.tree.pack_sequence_as(backbone.output, calls[0].output_tensors)  # a tensor, or HGNetV2's dict
    dense = getattr(classifier, "output_dense", None)
    logits = classifier.outputs[0]
    if dense is not None and getattr(dense.activation, "__name__", "linear") != "linear":
        logits = _logits_head(dense)(dense.input)
    return keras.Model(features, logits, name=f"{classifier.name}_head")


def handles(spec):
    """Whether `spec` names a keras-hub source (`is_hub_spec`)."""
    return is_hub_spec(spec)


def load(spec, image_size, blocks=None):
    """The keras-hub source `spec` (`hub_source`)."""
    return hub_source(spec, image_size, blocks=blocks)
