"""Custom Keras layers of keras_l2t."""

from keras_l2t.layers.batch_normalization import BatchNormalization
from keras_l2t.layers.subsample import Subsample2D
from keras_l2t.layers.feature_matching import FeatureMatching
from keras_l2t.layers.meta_networks import ChannelWeightNetwork, PairWeightNetwork
