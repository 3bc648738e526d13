"""Sources saved as `.keras` files: a keras_l2t `Backbone` (e.g. from `python -m train.pretrain_source`)."""

import os

import keras

from keras_l2t.backbones.backbone import Backbone
from keras_l2t.errors import SourceUnavailableError


def handles(spec):
    """Whether `spec` is a file (a `.keras` archive is the only kind of file a source can be)."""
    return os.path.isfile(spec)


def load(spec, image_size):
    """The `Backbone` saved at `spec`; `image_size` is checked by the caller (a saved network keeps its size)."""
    del image_size
    try:
        source = keras.saving.load_model(spec, compile=False)
    except Exception as error:  # pylint: disable=broad-except
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise SourceUnavailableError(
            f"Source checkpoint {spec!r} could not be loaded ({type(error).__name__}: {reason}). "
            "Is it a complete .keras file saved by keras_l2t?"
        ) from error
    if not isinstance(source, Backbone):
        raise SourceUnavailableError(
            f"Source checkpoint {spec!r} holds a {type(source).__name__}, not a keras_l2t Backbone; "
            "wrap other models with Backbone.from_keras_model(model, tap_layers) and save that."
        )
    return source
