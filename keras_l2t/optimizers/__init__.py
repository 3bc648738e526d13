"""Optimizers and schedules with the official code's (PyTorch) semantics."""

from keras_l2t.optimizers.schedules import EpochCosineDecay, auto_meta_learning_rate
from keras_l2t.optimizers.sgd import SGD, sgd_momentum_step
from keras_l2t.optimizers.adam import AdamL2
