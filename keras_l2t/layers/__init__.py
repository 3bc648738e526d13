"""Custom Keras layers of keras_l2t."""

from keras_l2t.layers.batch_normalization import BatchNormalization
from keras_l2t.layers.subsample import Subsample2D
from keras_l2t.layers.feature_matching import FeatureMatching
from keras_l2t.layers.meta_networks import ChannelWeightNetwork, PairWeightNetwork
from keras_l2t.layers.token_grid import TokenGrid
from keras_l2t.layers.layer_normalization import LayerNormalization
from keras_l2t.layers.channel_affine import ChannelAffine
from keras_l2t.layers.normalization import exact_normalizations
