"""Custom Keras layers of keras_l2t."""

from keras_l2t.layers.batch_normalization import BatchNormalization
from keras_l2t.layers.subsample import Subsample2D
