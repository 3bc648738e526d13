"""Datasets of the L2T-ww experiments as tf.data pipelines (docs/method.md §4.4, §8).

`load_dataset(name, ...)` returns a `DatasetSplits` with batched, normalised
train / val / test sets. Modules: `preprocessing` (image transforms), `splits`
(seeded validation / subset masks), `official_splits` (the authors' splits, matched
and checked), `availability` (TFDS preparation that fails fast offline), `sources`
(where examples come from), `pipeline` (decoding, tf.data assembly) and `datasets`
(the registry and `load_dataset`).
"""

from keras_l2t.data.availability import DatasetNotFoundError
from keras_l2t.data.datasets import AUGMENTATIONS, DATASET_NAMES, SPLITS, DatasetSplits, default_split, load_dataset
from keras_l2t.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "AUGMENTATIONS",
    "DATASET_NAMES",
    "DatasetNotFoundError",
    "DatasetSplits",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPLITS",
    "default_split",
    "load_dataset",
]
