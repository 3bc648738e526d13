"""keras-l2t: Learning What and Where to Transfer (L2T-ww) in Keras 3.

Importing the package registers every custom Keras object, so
`keras.saving.load_model` works in a fresh process after `import keras_l2t`.
"""

from keras_l2t import backbones, callbacks, data, determinism, distribute, experiment, export, initializers, layers
from keras_l2t import losses, models
from keras_l2t import optimizers, pairs, precision, sources
from keras_l2t.backbones import Backbone
from keras_l2t.models import L2TWW

__version__ = "0.1.0"
