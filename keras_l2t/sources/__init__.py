"""Source networks: one module per kind, one entry point (`load_source`, `load_sources`).

The frozen source of L2T-ww is any `Backbone`. A spec names it:
- `official`: "tinyimagenet_resnet32", the authors' Tiny-ImageNet ResNet-32
  (32×32 setting), shipped with the package;
- `hub`: any keras-hub vision backbone or classifier preset: a `hf://` or
  `kaggle://` handle, a preset name, a local preset directory, or the alias
  "resnet34_imagenet" (timm's torchvision ResNet-34, the 224 setting); CNNs are
  tapped at their pyramid levels, vision transformers at chosen blocks
  (`keras_l2t.backbones.hub`);
- `applications`: "resnet50_imagenet" (keras.applications);
- `saved`: a path to a saved `.keras` Backbone (e.g. from `train.pretrain_source`);
- `random_init`: "random:ARCH[:WIDTH]", a keras_l2t backbone at random weights
  (the control source).
Several specs make a `SourceStack` (`load_sources`). Each kind module has
`handles(spec)` and `load(spec, image_size)`; a new kind is a new module in
KINDS. Downloads happen only where the host answers; otherwise loading fails
within seconds saying which files to put where.
"""

from keras_l2t.errors import SourceUnavailableError
from keras_l2t.sources import applications, hub, official, random_init, saved
from keras_l2t.sources.stack import SourceStack, pair_label

# In the order they are asked whether they handle a spec (a file is a saved source, whatever its name).
KINDS = (official, applications, random_init, saved, hub)
NAMED_SOURCES = (*official.NAMES, *hub.HUB_ALIASES, *applications.NAMES)

__all__ = ["AUTO_SOURCE", "KINDS", "NAMED_SOURCES", "SourceStack", "SourceUnavailableError", "load_source", "load_sources",
           "pair_label", "source_entries", "with_auto_source"]


def _load_one(spec, image_size, blocks=None, calibration_images=None):
    kind = next((kind for kind in KINDS if kind.handles(spec)), None)
    if kind is None:
        raise SourceUnavailableError(
            f"Source {spec!r} is neither a file, a keras-hub preset (name, hf:// or kaggle:// handle, or a "
            f"directory with config.json), random:ARCH nor one of {NAMED_SOURCES}. Train one with "
            "`python -m train.pretrain_source` or pass --source=auto."
        )
    if kind is hub:
        return hub.load(spec, image_size, blocks=blocks)
    source = kind.load(spec, image_size)
    if kind is random_init and calibration_images is not None:
        random_init.calibrate_statistics(source, calibration_images)
    return source


def load_source(spec, image_size, blocks=None, calibration_images=None):
    """The frozen source `Backbone` for `spec`, seeing `image_size`×`image_size` images.

    `blocks`: which blocks of a vision transformer source to tap (1-based;
    default 4 evenly spaced); other sources ignore it. `calibration_images`:
    batches of images that set a random source's BatchNorm statistics
    (`random_init.calibrate_statistics`); other sources ignore them.

    A source built for another fixed size (a saved network, a transformer at
    its preset's resolution) comes as a one-member `SourceStack` that resizes
    the images for it.

    Raises:
        SourceUnavailableError: with what to do, when it cannot be loaded.
    """
    source = _load_one(spec, image_size, blocks, calibration_images)
    if source.image_shape[:2] not in ((image_size, image_size), (None, None)):
        source = SourceStack.of([source], image_size, name=source.name)
    source.trainable = False
    return source


AUTO_SOURCE = "auto"  # train.main's source pretrained first (train.flags)


def source_entries(spec):
    """The sources a spec names: "A,B" is two sources (a multi-source run), "A" one."""
    return [entry.strip() for entry in spec.split(",")] if spec else []


def with_auto_source(spec, path):
    """`spec` with its `auto` entry replaced by the pretrained source's `path`."""
    return ",".join(path if entry == AUTO_SOURCE else entry for entry in source_entries(spec))


def load_sources(specs, image_size, blocks=None, calibration_images=None):
    """One frozen source for one spec (`load_source`), a `SourceStack` of them for several.

    `specs`: a list of specs, or one string that `source_entries` splits
    ("A,B"); `blocks` and `calibration_images` are as for `load_source`.
    """
    specs = source_entries(specs) if isinstance(specs, str) else list(specs)
    if len(specs) == 1:
        return load_source(specs[0], image_size, blocks, calibration_images)
    stack = SourceStack.of([_load_one(spec, image_size, blocks, calibration_images) for spec in specs], image_size)
    stack.trainable = False
    return stack
