"""Models that own a training algorithm."""

from keras_l2t.models.l2t_ww import TRANSFER_MODES, L2TWW
