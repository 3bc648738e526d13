"""Stock normalisation layers made exact in their second derivative, in place."""

import keras

from keras_l2t.layers.batch_normalization import BatchNormalization
from keras_l2t.layers.layer_normalization import LayerNormalization


def exact_normalizations(model):
    """Makes every stock BatchNormalization / LayerNormalization inside `model` keep its second derivative.

    Keras' own compute the variance around `stop_gradient(mean)`, which drops
    a term of the meta-gradient (docs/method.md §4.8). Each such layer becomes
    keras_l2t's subclass in place (weights, momentum and epsilon kept; the
    moving variance keeps Keras' biased update). Returns how many were changed.
    """
    changed = 0
    for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
        if type(layer) is keras.layers.BatchNormalization:  # pylint: disable=unidiomatic-typecheck
            layer.__class__ = BatchNormalization
            layer.unbiased_moving_variance = False
            changed += 1
        elif type(layer) is keras.layers.LayerNormalization:  # pylint: disable=unidiomatic-typecheck
            layer.__class__ = LayerNormalization
            changed += 1
    return changed
