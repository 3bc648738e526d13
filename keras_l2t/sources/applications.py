"""Sources from `keras.applications`: ImageNet ResNet-50 (`--source=resnet50_imagenet`).

Keras downloads the weights into `$KERAS_HOME/models` on first use; where they
are not cached and the host does not answer, loading fails within seconds
saying which file to put where.
"""

import os

import keras
from keras import ops

from keras_l2t.backbones.backbone import Backbone
from keras_l2t.data.availability import reachable_endpoints
from keras_l2t.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_l2t.errors import SourceUnavailableError

RESNET50_IMAGENET = "resnet50_imagenet"
RESNET50_TAPS = ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")
RESNET50_WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
RESNET50_WEIGHTS_HOST = ("storage.googleapis.com", 443)
NAMES = (RESNET50_IMAGENET,)


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
    return Backbone.from_keras_model(model, RESNET50_TAPS, name=RESNET50_IMAGENET)


def handles(spec):
    """Whether `spec` names a keras.applications source."""
    return spec in NAMES


def load(spec, image_size):
    """The keras.applications source `spec` (one of NAMES) at `image_size`."""
    del spec  # the only one so far
    return resnet50_imagenet(image_size)
