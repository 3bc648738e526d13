"""Source networks: the paper's, keras-hub presets, `.keras` backbones, or keras.applications' ResNet-50.

The frozen source of L2T-ww is any `Backbone`. `load_source` accepts:
- "tinyimagenet_resnet32": the authors' Tiny-ImageNet ResNet-32 (32×32 setting),
  shipped with the package (`official_weights`);
- "resnet34_imagenet" (torchvision's ImageNet ResNet-34 through timm, the 224
  setting), any `hf://` / `kaggle://` handle, keras-hub preset name or local
  preset directory (`hub_sources`);
- "resnet50_imagenet" (keras.applications);
- a path to a saved `.keras` backbone (e.g. from `train.pretrain_source`).
Downloads happen only where the host answers; otherwise loading fails within
seconds saying which files to put where.
"""

import os

import keras
from keras import ops

from keras_l2t import hub_sources, official_weights
from keras_l2t.backbones.backbone import Backbone
from keras_l2t.data.availability import reachable_endpoints
from keras_l2t.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_l2t.errors import InputError

RESNET50_TAPS = ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")
RESNET50_WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
RESNET50_WEIGHTS_HOST = ("storage.googleapis.com", 443)
NAMED_SOURCES = (
    official_weights.TINYIMAGENET_RESNET32, *hub_sources.HUB_ALIASES, "resnet50_imagenet",
)


class SourceUnavailableError(InputError, RuntimeError):
    """The source network cannot be loaded (missing/corrupt file, weights not downloadable)."""


@keras.saving.register_keras_serializable(package="keras_l2t")
class CaffeInputs(keras.layers.Layer):
    """Maps keras_l2t inputs (RGB, ImageNet mean/std normalised) to Keras' "caffe" ResNet inputs.

    keras.applications ResNet-50 expects BGR pixels in [0, 255] minus the
    ImageNet BGR mean; every keras_l2t pipeline yields (x/255 − mean)/std RGB.
    """

    def call(self, inputs):
        mean = ops.convert_to_tensor(IMAGENET_MEAN, inputs.dtype)
        std = ops.convert_to_tensor(IMAGENET_STD, inputs.dtype)
        pixels = (inputs * std + mean) * 255.0
        bgr = ops.flip(pixels, axis=-1)
        return bgr - ops.convert_to_tensor([103.939, 116.779, 123.68], inputs.dtype)


def _weights_cached():
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.exists(os.path.join(keras_home, "models", RESNET50_WEIGHTS_FILE))


def resnet50_imagenet(image_size=224, weights="imagenet"):
    """keras.applications ResNet-50 as a `Backbone`: taps at the 4 stage outputs (256…2048 ch)."""
    if weights == "imagenet" and not _weights_cached() and not reachable_endpoints([RESNET50_WEIGHTS_HOST]):
        raise SourceUnavailableError(
            "--source=resnet50_imagenet needs Keras' ImageNet ResNet-50 weights, which are not cached "
            f"({RESNET50_WEIGHTS_FILE} under $KERAS_HOME/models or ~/.keras/models) and cannot be "
            f"downloaded: {RESNET50_WEIGHTS_HOST[0]} is unreachable. Copy the file there from a "
            "machine with internet access, or pass --source=PATH to a .keras backbone."
        )
    inputs = keras.Input((image_size, image_size, 3), name="images")
    caffe = CaffeInputs(name="caffe_inputs")(inputs)
    model = keras.applications.ResNet50(weights=weights, input_tensor=caffe, classifier_activation=None)
    return Backbone.from_keras_model(model, RESNET50_TAPS, name="resnet50_imagenet")


def load_source(spec, image_size):
    """The frozen source `Backbone` for `spec`: a name in NAMED_SOURCES, a keras-hub preset, or a `.keras` path.

    Raises:
        SourceUnavailableError: with what to do, when it cannot be loaded or does
            not fit `image_size`.
    """
    if spec == "resnet50_imagenet":
        source = resnet50_imagenet(image_size)
    elif spec == official_weights.TINYIMAGENET_RESNET32:
        source = official_weights.tinyimagenet_resnet32(image_size)
    elif not os.path.isfile(spec) and hub_sources.is_hub_spec(spec):
        source = hub_sources.hub_source(spec, image_size)
    else:
        if not os.path.isfile(spec):
            raise SourceUnavailableError(
                f"Source {spec!r} is neither a file nor one of {NAMED_SOURCES}. Train one with "
                "`python -m train.pretrain_source` or pass --source=auto."
            )
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
    if source.image_shape[:2] not in ((image_size, image_size), (None, None)):
        raise SourceUnavailableError(
            f"Source {spec!r} takes {source.image_shape[:2]} inputs but the target gets "
            f"{image_size}×{image_size}; use --image_size={source.image_shape[0]} or another source."
        )
    source.trainable = False
    return source
