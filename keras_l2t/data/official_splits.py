"""The authors' train / val / test splits, matched to TFDS examples and verified.

The files in `split_files/` are the official `split/*` index lists of
alinlab/L2T-ww (MIT licence, `split_files/LICENSE-alinlab-L2T-ww`), converted to
JSON. Their indices count examples in the order the official loaders enumerate
them (torchvision's CIFAR100 in original-file order; an ImageFolder for CUB and
Dogs), which is not TFDS' order. This module turns TFDS examples into those
positions (CIFAR-100 through the `id` TFDS stores, CUB through file names),
checks that the match is exact, and returns the validation mask. A failed check
raises `InputError` naming the dataset: a silently wrong split is worse than none.
"""

import dataclasses
import json
import os
import re

import numpy as np

from keras_l2t.errors import InputError

SPLIT_DIR = os.path.join(os.path.dirname(__file__), "split_files")

# Dataset name in the file names (`split_<name>.json`) of the official splits.
SPLIT_NAMES = ("cifar100", "stl10", "cub200", "dog")
# Those whose TFDS examples can be matched to the official positions. (TFDS' stl10
# stores no id or file name, and its files are in another order than the original;
# Stanford Dogs is matched by `splits.stanford_dogs_official_val_mask`.)
MATCHABLE = ("cifar100", "cub200", "dog")


@dataclasses.dataclass(frozen=True)
class OfficialSplit:
    """One official split file: index arrays into the official enumeration, and the classes kept."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    classes: tuple[int, ...]


def load_official_split(name):
    """The official split `name` (one of `SPLIT_NAMES`) from the shipped JSON file."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"No official split {name!r}; known: {', '.join(SPLIT_NAMES)}.")
    with open(os.path.join(SPLIT_DIR, f"split_{name}.json"), encoding="utf-8") as f:
        data = json.load(f)
    classes = [tuple(data[part]["classes"]) for part in ("train", "val", "test")]
    if len(set(classes)) != 1:
        raise ValueError(f"Official split {name!r} keeps different classes in train, val and test.")
    arrays = {part: np.asarray(data[part]["indices"], np.int64) for part in ("train", "val", "test")}
    return OfficialSplit(name=name, classes=classes[0], **arrays)


def _mismatch(dataset, what):
    return InputError(
        f"The official {dataset} split does not match the TFDS data ({what}); "
        "use split='seeded', or re-prepare the TFDS dataset."
    )


def positions_from_ids(ids, prefix, dataset):
    """Original-file positions from TFDS `id`s such as `train_00042` (CIFAR: the index in the file)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)")
    positions = np.empty(len(ids), np.int64)
    for k, example_id in enumerate(ids):
        text = example_id.decode("utf-8") if isinstance(example_id, bytes) else str(example_id)
        match = pattern.fullmatch(text)
        if match is None:
            raise _mismatch(dataset, f"example id {text!r} is not of the form {prefix}NNNNN")
        positions[k] = int(match.group(1))
    return positions


def imagefolder_positions(filenames, labels, dataset):
    """Positions in torchvision's ImageFolder order: class folders sorted by name, files by name within.

    The class folder is the parent directory of each file name. Also checks that
    ImageFolder's class of every example agrees with its TFDS label: one label per
    folder, increasing with the folder name.
    """
    paths = [f.decode("utf-8") if isinstance(f, bytes) else str(f) for f in filenames]
    keys = [(os.path.basename(os.path.dirname(p)), os.path.basename(p)) for p in paths]
    labels = np.asarray(labels)
    if len(keys) != len(labels):
        raise ValueError(f"Got {len(labels)} labels but {len(keys)} file names.")
    folder_labels = {}
    for (folder, _), label in zip(keys, labels):
        if folder_labels.setdefault(folder, int(label)) != int(label):
            labels_seen = f"{folder_labels[folder]} and {int(label)}"
            raise _mismatch(dataset, f"class folder {folder!r} holds examples of labels {labels_seen}")
    ordered_labels = [folder_labels[folder] for folder in sorted(folder_labels)]
    if any(a >= b for a, b in zip(ordered_labels, ordered_labels[1:])):
        raise _mismatch(dataset, "the TFDS labels do not follow the sorted class-folder names")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    positions = np.empty(len(keys), np.int64)
    positions[order] = np.arange(len(keys))
    return positions


def official_val_mask(split, positions, num_test, num_classes, dataset):
    """Boolean mask of the official validation examples over the TFDS train examples.

    Args:
        split: The `OfficialSplit`.
        positions: Official position of each TFDS train example (TFDS order).
        num_test: Number of TFDS test examples (used whole as the test set).
        num_classes: Number of TFDS classes; the split must keep all of them.
        dataset: Name used in error messages.

    Raises:
        InputError: the TFDS examples are not exactly the official train + val
            enumeration, or the test split is not the official test set.
    """
    if split.classes != tuple(range(num_classes)):
        raise _mismatch(dataset, f"the split keeps classes other than all {num_classes} of the TFDS data")
    num_train = len(split.train) + len(split.val)
    if not np.array_equal(np.sort(np.concatenate([split.train, split.val])), np.arange(num_train)):
        raise _mismatch(dataset, "the split's train and val overlap or leave examples out")
    positions = np.asarray(positions, np.int64)
    if len(positions) != num_train:
        raise _mismatch(dataset, f"{len(positions)} TFDS train examples, the split indexes {num_train}")
    if not np.array_equal(np.sort(positions), np.arange(num_train)):
        raise _mismatch(dataset, f"the TFDS train examples are not positions 0..{num_train - 1}, each once")
    in_val = np.zeros(num_train, bool)
    in_val[split.val] = True
    if len(split.test) != num_test or not np.array_equal(split.test, np.arange(num_test)):
        raise _mismatch(dataset, f"{num_test} TFDS test examples, the official test set is {len(split.test)}")
    return in_val[positions]


def train_positions(split_name, train_source, dataset):
    """Official position of each example of a TFDS train source (`sources.TfdsSource`), in source order."""
    if split_name == "cifar100":
        if train_source.ids is None:
            raise _mismatch(dataset, "its examples carry no id")
        return positions_from_ids(train_source.ids, "train_", dataset)
    if split_name in ("cub200", "dog"):
        if train_source.filenames is None:
            raise _mismatch(dataset, "its examples carry no file name")
        return imagefolder_positions(train_source.filenames, train_source.labels, dataset)
    raise ValueError(f"The official split {split_name!r} cannot be matched to TFDS examples.")
