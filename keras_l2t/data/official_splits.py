"""The authors' train / val / test splits, matched to TFDS examples and verified.

The files in `split_files/` are the official `split/*` index lists of
alinlab/L2T-ww (MIT licence, `split_files/LICENSE-alinlab-L2T-ww`), converted to
JSON. Their indices count examples in the order the official loaders enumerate
them (torchvision's CIFAR100 in original-file order; an ImageFolder for CUB and
Dogs), which is not TFDS' order. This module turns TFDS examples into those
positions (CIFAR-100 through the `id` TFDS stores, CUB and Stanford Dogs through
file names), checks that the match is exact, and returns the validation mask. A
failed check raises `InputError` naming the dataset and what is wrong: a silently
wrong split is worse than none.
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
# stores no id or file name, and its files are in another order than the original.)
MATCHABLE = ("cifar100", "cub200", "dog")
# Official splits over class-balanced training sets, with a class-balanced validation
# set: every class has (train + val) / classes training images, val / classes of them
# for validation. CIFAR-100 and STL-10: 500 per class, 50 of them validation (10 %);
# Stanford Dogs' train_list: 100 per class, 10 validation. Checked per class, which
# is what catches a wrong record order (CIFAR-100's ids) or missing files (Dogs).
# CUB's classes have 29 or 30 training images, so only its totals are checked.
CLASS_BALANCED = ("cifar100", "stl10", "dog")
# How many of the classes that are off an error message names.
NAMED_CLASSES = 3


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


def _class_label(class_id, class_names):
    return f"class {class_id}" + (f" ({class_names[class_id]})" if class_names is not None else "")


def _per_class(split, count, num_classes):
    """`count` / `num_classes`: the per-class number of a `CLASS_BALANCED` split."""
    if count % num_classes:
        raise ValueError(f"Official split {split.name!r}: {count} images do not divide into {num_classes} classes.")
    return count // num_classes


def _classes_off(counts, expected, what, class_names):
    """'4 of 100 classes do not have the official 50 <what>: class 3 (name) has 47, ...'."""
    off = np.flatnonzero(counts != expected)
    named = ", ".join(f"{_class_label(c, class_names)} has {counts[c]}" for c in off[:NAMED_CLASSES])
    more = ", ..." if len(off) > NAMED_CLASSES else ""
    return f"{len(off)} of {len(counts)} classes do not have the official {expected} {what}: {named}{more}"


def check_class_sizes(split, labels, num_classes, dataset, class_names=None):
    """Raise `InputError` naming the classes whose TFDS training images are not the official number.

    Only for `CLASS_BALANCED` splits, where every class has (train + val) /
    classes images: a class with fewer has files missing (Stanford Dogs' TFDS
    builder silently skips listed files that are absent from images.tar).
    """
    if split.name not in CLASS_BALANCED:
        return
    per_class = _per_class(split, len(split.train) + len(split.val), num_classes)
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    if not np.all(counts == per_class):
        missing, extra = (int(np.sum(np.maximum(d, 0))) for d in (per_class - counts, counts - per_class))
        totals = [f"{missing} images missing"] * bool(missing) + [f"{extra} too many"] * bool(extra)
        off = _classes_off(counts, per_class, "training images", class_names)
        raise _mismatch(dataset, f"{off}; {', '.join(totals)} in all")


def check_val_class_counts(split, val_labels, num_classes, dataset, class_names=None):
    """Raise `InputError` unless each class has the official number of validation images.

    Only for `CLASS_BALANCED` splits (val / classes of every class). A mapping
    from TFDS records to official positions that is off (e.g. TFDS' record order
    is not torchvision's) picks other images, and almost surely not as many of
    every class.
    """
    if split.name not in CLASS_BALANCED:
        return
    per_class = _per_class(split, len(split.val), num_classes)
    counts = np.bincount(np.asarray(val_labels, np.int64), minlength=num_classes)
    if not np.all(counts == per_class):
        off = _classes_off(counts, per_class, "validation images", class_names)
        raise _mismatch(dataset, f"{off}: the TFDS record order differs from torchvision's")


def official_val_mask(split, positions, labels, num_test, num_classes, dataset, class_names=None):
    """Boolean mask of the official validation examples over the TFDS train examples.

    Args:
        split: The `OfficialSplit`.
        positions: Official position of each TFDS train example (TFDS order).
        labels: TFDS label of each TFDS train example (TFDS order).
        num_test: Number of TFDS test examples (used whole as the test set).
        num_classes: Number of TFDS classes; the split must keep all of them.
        dataset: Name used in error messages.
        class_names: Optional TFDS class names, to name classes in error messages.

    Raises:
        InputError: the TFDS examples are not exactly the official train + val
            enumeration (for `CLASS_BALANCED` splits: a class with another number
            of images, or of validation images, than the official one), or the
            test split is not the official test set.
    """
    if split.classes != tuple(range(num_classes)):
        raise _mismatch(dataset, f"the split keeps classes other than all {num_classes} of the TFDS data")
    num_train = len(split.train) + len(split.val)
    if not np.array_equal(np.sort(np.concatenate([split.train, split.val])), np.arange(num_train)):
        raise _mismatch(dataset, "the split's train and val overlap or leave examples out")
    positions, labels = np.asarray(positions, np.int64), np.asarray(labels, np.int64)
    if len(labels) != len(positions):
        raise ValueError(f"Got {len(labels)} labels but {len(positions)} positions.")
    check_class_sizes(split, labels, num_classes, dataset, class_names)
    if len(positions) != num_train:
        raise _mismatch(dataset, f"{len(positions)} TFDS train examples, the split indexes {num_train}")
    if not np.array_equal(np.sort(positions), np.arange(num_train)):
        raise _mismatch(dataset, f"the TFDS train examples are not positions 0..{num_train - 1}, each once")
    if len(split.test) != num_test or not np.array_equal(split.test, np.arange(num_test)):
        raise _mismatch(dataset, f"{num_test} TFDS test examples, the official test set is {len(split.test)}")
    in_val = np.zeros(num_train, bool)
    in_val[split.val] = True
    mask = in_val[positions]
    check_val_class_counts(split, labels[mask], num_classes, dataset, class_names)
    return mask


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
