"""Train / validation / test selection as boolean masks over label arrays.

L2T-ww validates on a class-balanced 10 % of each training set (alinlab/L2T-ww#3).
For Stanford Dogs the authors shipped the exact split (`split/dog-val`); its
within-class offsets are embedded here (docs/method.md Appendix A) so that the TFDS
`train` split can be cut exactly as the official code cut its ImageFolder
(docs/method.md §8.2). Everything in this module is plain numpy and deterministic.
"""

import os

import numpy as np
from keras_l2t.errors import InputError

# Official Stanford Dogs validation split, decoded from `split/dog-val` (docs/method.md
# Appendix A). Key: label id (= TFDS label id, sorted synset order). Value: positions
# among that class's 100 training files sorted by basename as Python strings.
STANFORD_DOGS_VAL_OFFSETS = {
    0: (3, 15, 22, 32, 38, 45, 63, 78, 83, 89),
    1: (8, 17, 25, 28, 38, 72, 76, 79, 89, 91),
    2: (5, 6, 7, 15, 32, 50, 77, 89, 90, 98),
    3: (10, 22, 33, 38, 58, 73, 87, 92, 93, 97),
    4: (2, 3, 8, 32, 60, 61, 64, 65, 83, 89),
    5: (3, 14, 22, 24, 45, 58, 61, 78, 86, 88),
    6: (12, 21, 24, 30, 34, 37, 38, 40, 44, 94),
    7: (0, 8, 9, 17, 21, 40, 74, 76, 89, 92),
    8: (8, 14, 22, 51, 55, 68, 82, 87, 88, 97),
    9: (14, 30, 38, 40, 55, 57, 78, 82, 85, 97),
    10: (11, 17, 33, 38, 42, 46, 64, 77, 87, 93),
    11: (6, 14, 23, 38, 41, 75, 81, 92, 97, 98),
    12: (29, 41, 47, 52, 59, 88, 89, 92, 95, 96),
    13: (37, 41, 44, 48, 56, 58, 65, 72, 74, 90),
    14: (33, 34, 36, 46, 48, 50, 81, 83, 90, 99),
    15: (3, 10, 11, 20, 32, 36, 58, 78, 79, 83),
    16: (10, 19, 50, 51, 52, 56, 72, 73, 79, 84),
    17: (16, 33, 44, 45, 49, 50, 52, 91, 97, 98),
    18: (10, 14, 18, 30, 34, 60, 66, 72, 92, 98),
    19: (1, 12, 16, 42, 65, 76, 81, 87, 95, 98),
    20: (14, 20, 22, 52, 58, 77, 79, 87, 92, 97),
    21: (19, 28, 30, 40, 46, 47, 52, 91, 98, 99),
    22: (0, 32, 39, 47, 50, 67, 77, 79, 91, 92),
    23: (6, 15, 26, 28, 31, 36, 63, 67, 78, 81),
    24: (1, 6, 12, 22, 41, 42, 52, 69, 81, 87),
    25: (21, 22, 31, 36, 42, 60, 75, 88, 91, 93),
    26: (19, 23, 28, 31, 41, 42, 66, 96, 97, 98),
    27: (7, 9, 18, 20, 26, 49, 79, 80, 82, 87),
    28: (1, 19, 47, 50, 58, 62, 65, 75, 77, 84),
    29: (7, 10, 15, 31, 37, 43, 44, 62, 77, 98),
    30: (1, 14, 38, 69, 70, 75, 76, 82, 88, 89),
    31: (5, 6, 19, 40, 43, 47, 60, 64, 77, 85),
    32: (13, 47, 57, 59, 62, 65, 69, 70, 84, 94),
    33: (5, 14, 16, 28, 49, 65, 71, 73, 79, 93),
    34: (1, 14, 17, 32, 39, 66, 70, 74, 85, 97),
    35: (0, 2, 3, 15, 38, 55, 61, 68, 97, 98),
    36: (24, 29, 59, 62, 66, 68, 69, 70, 80, 89),
    37: (1, 2, 5, 33, 48, 52, 61, 66, 97, 99),
    38: (14, 21, 27, 35, 44, 49, 67, 79, 84, 99),
    39: (2, 6, 27, 36, 37, 49, 59, 68, 88, 89),
    40: (2, 6, 18, 27, 37, 41, 45, 57, 81, 90),
    41: (7, 9, 43, 46, 53, 58, 63, 64, 78, 81),
    42: (40, 46, 47, 53, 58, 60, 67, 80, 90, 95),
    43: (1, 2, 28, 38, 47, 50, 52, 60, 74, 91),
    44: (14, 30, 33, 42, 44, 52, 72, 73, 78, 95),
    45: (6, 7, 34, 46, 62, 84, 86, 89, 90, 93),
    46: (5, 15, 20, 23, 41, 46, 65, 68, 72, 99),
    47: (10, 18, 36, 45, 54, 66, 67, 75, 81, 93),
    48: (5, 9, 32, 34, 38, 46, 78, 81, 84, 92),
    49: (2, 4, 11, 40, 43, 47, 53, 66, 74, 96),
    50: (6, 17, 25, 28, 30, 58, 67, 71, 80, 85),
    51: (24, 27, 34, 39, 63, 68, 81, 90, 92, 93),
    52: (2, 36, 37, 46, 58, 63, 66, 71, 74, 98),
    53: (3, 5, 10, 29, 40, 52, 53, 62, 73, 93),
    54: (0, 3, 7, 27, 28, 33, 43, 50, 59, 63),
    55: (0, 15, 32, 36, 60, 64, 65, 72, 75, 97),
    56: (0, 16, 26, 38, 47, 58, 65, 67, 93, 98),
    57: (6, 14, 17, 18, 24, 32, 68, 89, 93, 99),
    58: (1, 11, 29, 34, 39, 48, 66, 72, 81, 98),
    59: (4, 5, 7, 18, 28, 60, 69, 72, 73, 87),
    60: (8, 11, 14, 16, 29, 38, 42, 50, 51, 93),
    61: (0, 2, 3, 15, 24, 26, 27, 44, 94, 97),
    62: (2, 4, 23, 41, 42, 45, 46, 86, 90, 91),
    63: (1, 20, 23, 29, 33, 55, 58, 67, 74, 93),
    64: (2, 10, 12, 21, 34, 36, 38, 65, 84, 88),
    65: (3, 16, 20, 27, 40, 51, 52, 90, 91, 92),
    66: (22, 41, 47, 63, 71, 79, 81, 83, 93, 94),
    67: (5, 6, 10, 16, 30, 51, 52, 63, 66, 90),
    68: (17, 18, 26, 28, 32, 48, 56, 57, 64, 90),
    69: (13, 14, 18, 39, 51, 66, 74, 92, 95, 97),
    70: (11, 15, 31, 34, 36, 41, 64, 77, 85, 96),
    71: (14, 17, 20, 26, 30, 53, 55, 61, 74, 81),
    72: (8, 18, 21, 23, 27, 30, 36, 58, 69, 97),
    73: (5, 6, 13, 18, 34, 40, 48, 88, 93, 98),
    74: (4, 15, 20, 24, 31, 44, 53, 62, 68, 77),
    75: (32, 37, 42, 45, 61, 69, 81, 93, 98, 99),
    76: (8, 14, 16, 17, 37, 53, 67, 71, 81, 92),
    77: (7, 8, 12, 16, 54, 58, 83, 87, 89, 97),
    78: (4, 19, 23, 26, 31, 32, 38, 69, 84, 95),
    79: (1, 10, 22, 29, 33, 63, 76, 78, 82, 97),
    80: (0, 6, 12, 23, 33, 65, 73, 75, 88, 99),
    81: (0, 8, 32, 42, 54, 58, 61, 82, 92, 93),
    82: (11, 15, 36, 47, 52, 53, 56, 62, 67, 82),
    83: (3, 10, 16, 22, 25, 39, 48, 89, 95, 97),
    84: (7, 11, 43, 57, 58, 65, 68, 93, 98, 99),
    85: (4, 34, 47, 64, 67, 68, 71, 78, 81, 96),
    86: (2, 3, 10, 17, 21, 23, 36, 68, 72, 82),
    87: (6, 29, 38, 52, 63, 64, 66, 83, 90, 91),
    88: (19, 28, 29, 42, 50, 68, 73, 75, 84, 86),
    89: (6, 22, 38, 52, 59, 76, 80, 83, 85, 91),
    90: (16, 20, 24, 32, 46, 49, 65, 71, 88, 95),
    91: (10, 21, 30, 36, 48, 57, 63, 72, 74, 97),
    92: (4, 29, 44, 49, 52, 62, 77, 86, 89, 91),
    93: (40, 43, 45, 47, 51, 53, 65, 77, 90, 95),
    94: (50, 55, 71, 72, 74, 76, 77, 78, 81, 93),
    95: (14, 22, 26, 30, 43, 63, 75, 78, 88, 90),
    96: (5, 14, 22, 25, 51, 72, 77, 86, 90, 93),
    97: (19, 20, 27, 37, 51, 53, 56, 70, 72, 99),
    98: (0, 15, 22, 41, 42, 44, 58, 74, 77, 81),
    99: (2, 7, 13, 26, 45, 57, 65, 83, 85, 92),
    100: (8, 12, 24, 31, 36, 38, 63, 71, 93, 97),
    101: (1, 17, 20, 36, 39, 41, 56, 93, 95, 98),
    102: (1, 9, 25, 32, 36, 50, 53, 69, 90, 98),
    103: (4, 9, 27, 41, 65, 71, 73, 84, 85, 87),
    104: (7, 17, 18, 34, 37, 48, 56, 61, 63, 92),
    105: (11, 20, 26, 52, 53, 57, 67, 69, 76, 81),
    106: (27, 39, 46, 52, 60, 65, 66, 68, 69, 94),
    107: (6, 10, 11, 16, 44, 46, 58, 62, 78, 91),
    108: (3, 8, 11, 24, 32, 49, 53, 64, 67, 87),
    109: (1, 13, 14, 21, 24, 49, 50, 66, 67, 97),
    110: (0, 1, 2, 9, 31, 50, 56, 69, 84, 90),
    111: (6, 8, 23, 28, 47, 63, 84, 87, 92, 99),
    112: (9, 26, 27, 62, 64, 70, 71, 78, 94, 96),
    113: (13, 25, 29, 37, 42, 55, 58, 61, 77, 83),
    114: (0, 8, 10, 18, 25, 34, 38, 54, 77, 87),
    115: (0, 13, 14, 20, 24, 33, 51, 71, 82, 98),
    116: (1, 4, 27, 46, 53, 69, 73, 78, 85, 93),
    117: (3, 17, 33, 36, 70, 72, 74, 76, 77, 83),
    118: (11, 16, 21, 24, 29, 50, 68, 87, 89, 90),
    119: (7, 14, 17, 23, 26, 30, 31, 53, 60, 82),
}


def _rounded_count(fraction, count):
    """round(fraction * count), half up, kept in [1, count - 1] for classes of >= 2."""
    if fraction <= 0 or count < 2:
        return 0
    return int(min(max(np.floor(fraction * count + 0.5), 1), count - 1))


def _class_rng(seed, label):
    """A numpy Generator per (seed, class): one class's draw never depends on another's."""
    return np.random.default_rng([int(seed), int(label)])


def class_balanced_split(labels, fraction=0.1, seed=0):
    """Boolean mask of a class-balanced validation subset.

    Each class contributes round(fraction * count) examples (half rounded up), at
    least 1 when it has >= 2 examples and never all of them, drawn by a numpy
    Generator seeded with (seed, class).

    Args:
        labels: 1-D integer labels.
        fraction: Share of each class to put in validation, in [0, 1).
        seed: Non-negative integer seed.

    Returns:
        Boolean array like `labels`, True for validation examples.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
    labels = np.asarray(labels)
    mask = np.zeros(labels.shape, dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = _rounded_count(fraction, len(members))
        if count:
            mask[_class_rng(seed, label).choice(members, size=count, replace=False)] = True
    return mask


def examples_per_class_mask(labels, examples_per_class, seed=0):
    """Boolean mask keeping `examples_per_class` seeded examples of every class.

    Used for the limited-data regime; a class with fewer examples keeps all of them.
    """
    if examples_per_class < 1:
        raise InputError(f"examples_per_class must be >= 1, got {examples_per_class}.")
    labels = np.asarray(labels)
    mask = np.zeros(labels.shape, dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) <= examples_per_class:
            mask[members] = True
        else:
            chosen = _class_rng(seed, label).choice(members, size=examples_per_class, replace=False)
            mask[chosen] = True
    return mask


def class_subset(labels, classes, num_classes=None):
    """New label per example when keeping only `classes`, relabelled 0..k-1 in that order.

    Args:
        labels: 1-D integer labels (original class ids).
        classes: Original class ids to keep; the i-th becomes label i.
        num_classes: If given, every id in `classes` must be below it.

    Returns:
        int32 array like `labels`: the new label, or -1 for dropped examples.
    """
    classes = [int(c) for c in classes]
    if not classes:
        raise InputError("classes must name at least one class.")
    if len(set(classes)) != len(classes):
        raise InputError(f"classes has duplicates: {classes}.")
    if min(classes) < 0 or (num_classes is not None and max(classes) >= num_classes):
        raise InputError(f"classes must be ids in [0, {num_classes}), got {classes}.")
    labels = np.asarray(labels)
    new_labels = np.full(labels.shape, -1, dtype=np.int32)
    for new_label, label in enumerate(classes):
        new_labels[labels == label] = new_label
    return new_labels


def _basename(filename):
    if isinstance(filename, bytes):
        filename = filename.decode("utf-8")
    return os.path.basename(str(filename))


def stanford_dogs_official_val_mask(labels, filenames):
    """Boolean mask of the official L2T-ww Stanford Dogs validation examples.

    Reproduces `split/dog-val` on the TFDS `train` split (docs/method.md §8.2): group by
    label, sort each class by `os.path.basename(filename)` as Python strings (so
    `x_10.jpg` sorts before `x_2.jpg`), and take the Appendix-A offsets. A class with
    fewer than 100 files (test fixtures) keeps the offsets that exist.

    Args:
        labels: 1-D label ids (0..119), in any order.
        filenames: The matching `image/filename` values (str or bytes).
    """
    labels = np.asarray(labels)
    names = [_basename(f) for f in filenames]
    if len(names) != len(labels):
        raise ValueError(f"Got {len(labels)} labels but {len(names)} filenames.")
    mask = np.zeros(labels.shape, dtype=bool)
    for label in np.unique(labels):
        if int(label) not in STANFORD_DOGS_VAL_OFFSETS:
            raise InputError(
                f"Label {label} is not a Stanford Dogs class id (0..119): the TFDS data does not match the "
                "official split; re-prepare stanford_dogs, or use split='seeded'."
            )
        members = sorted(np.flatnonzero(labels == label), key=lambda i: names[i])
        for offset in STANFORD_DOGS_VAL_OFFSETS[int(label)]:
            if offset < len(members):
                mask[members[offset]] = True
    return mask
