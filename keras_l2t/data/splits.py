"""Train / validation / test selection as boolean masks over label arrays.

L2T-ww validates on a class-balanced 10 % of each training set (alinlab/L2T-ww#3):
`class_balanced_split` draws such a split with a seed, for datasets without the
authors' split files (those are matched in `official_splits.py`). Everything in
this module is plain numpy and deterministic.
"""

import numpy as np

from keras_l2t.errors import InputError


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
