"""Random-weight sources, the control for "does this source help at all": `random:ARCH[:WIDTH]`.

`random:resnet32:0.5` is a keras_l2t ResNet-32 at width 0.5 with its initial
weights (drawn from the run's seed, so each seed of a study has its own) and
initial BatchNorm statistics: a source with the architecture of a real one and
nothing learned, named `random_<arch>` in logs. It has no trained classifier (`has_classifier=False`), so LwF
refuses it.
"""

from keras_l2t import backbones
from keras_l2t.errors import InputError

PREFIX = "random:"


def handles(spec):
    """Whether `spec` asks for a random-weight source."""
    return spec.startswith(PREFIX)


def load(spec, image_size):
    """A random-weight `backbones` network: `random:ARCH` or `random:ARCH:WIDTH`."""
    arch, _, width = spec[len(PREFIX):].partition(":")
    try:
        width = float(width) if width else 1.0
    except ValueError:
        raise InputError(f"Source {spec!r}: the width after {PREFIX}{arch}: must be a number.") from None
    source = backbones.get_backbone(
        arch, num_classes=10, width=width, input_shape=(image_size, image_size, 3), name=f"random_{arch}"
    )
    source.has_classifier = False
    return source


CALIBRATION_BATCHES = 50


def calibrate_statistics(source, batches):
    """Sets the BatchNorm moving statistics of `source` from training-mode passes over `batches` of images.

    Only the statistics change (no weight is trained, no label is read); with
    momentum 0.9, 50 batches leave 0.5 % of the initial statistics.
    """
    trainable = source.trainable
    source.trainable = True  # BatchNorm updates its statistics only when trainable
    try:
        for images in batches:
            source.network(images, training=True)
    finally:
        source.trainable = trainable
    return source
