"""Models that own a training algorithm."""

from keras_l2t.models.hand_crafted import HAND_CRAFTED_METHODS, HandCraftedTransfer
from keras_l2t.models.l2t_ww import TRANSFER_MODES, L2TWW
from keras_l2t.models.source_target import SourceTargetModel, check_source_and_target
