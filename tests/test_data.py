"""Tests of keras_l2t.data: splits, preprocessing, the dataset loaders, fast failure.

Everything runs offline. Stanford Dogs goes through the REAL tfds builder, run once
per session on generated archives (`fake_dogs_data_dir` in conftest.py).
"""

import collections
import os
import re
import socket
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from keras_l2t.data import (
    DATASET_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetNotFoundError,
    DatasetSplits,
    load_dataset,
)
from keras_l2t.data import availability, datasets, official_splits, pipeline, preprocessing, sources, splits
from keras_l2t.errors import InputError
from tests import fake_stanford_dogs as fake_dogs
from tests import fake_tfds
from tests.fake_tfds import prepare_with_real_builder

def _unbatch(dataset):
    """All (images, labels) of a batched dataset as two numpy arrays."""
    images, labels = [], []
    for image_batch, label_batch in dataset:
        images.append(image_batch.numpy())
        labels.append(label_batch.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _to_uint8(images):
    """Undo ImageNet normalisation: float images -> uint8 pixel values."""
    pixels = (images * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255.0
    return np.round(pixels).astype(np.uint8)


# ----------------------------------------------------------------------------- splits


def test_class_balanced_split_counts_seeding_and_edge_cases():
    labels = np.repeat([0, 1, 2, 3, 4], [10, 50, 3, 1, 2])
    mask = splits.class_balanced_split(labels, 0.1, seed=0)
    counts = np.bincount(labels[mask], minlength=5)
    # round(0.1 n) half up, at least 1 for classes of >= 2, never the whole class.
    np.testing.assert_array_equal(counts, [1, 5, 1, 0, 1])
    np.testing.assert_array_equal(mask, splits.class_balanced_split(labels, 0.1, seed=0))
    many = np.repeat(np.arange(4), 100)
    assert not np.array_equal(
        splits.class_balanced_split(many, 0.1, seed=0), splits.class_balanced_split(many, 0.1, seed=1)
    )
    assert not splits.class_balanced_split(labels, 0.0).any()
    with pytest.raises(ValueError):
        splits.class_balanced_split(labels, 1.0)


def test_examples_per_class_mask_and_class_subset():
    labels = np.repeat([0, 1, 2], [10, 3, 6])
    mask = splits.examples_per_class_mask(labels, 4, seed=3)
    np.testing.assert_array_equal(np.bincount(labels[mask]), [4, 3, 4])
    np.testing.assert_array_equal(mask, splits.examples_per_class_mask(labels, 4, seed=3))
    new_labels = splits.class_subset(labels, [2, 0], num_classes=3)
    np.testing.assert_array_equal(new_labels[labels == 2], 0)
    np.testing.assert_array_equal(new_labels[labels == 0], 1)
    np.testing.assert_array_equal(new_labels[labels == 1], -1)
    for bad in ([], [0, 0], [3]):
        with pytest.raises(ValueError):
            splits.class_subset(labels, bad, num_classes=3)


# (train, val, test) sizes and number of classes of the shipped official splits.
OFFICIAL_SIZES = {
    "cifar100": (45_000, 5_000, 10_000, 100),
    "stl10": (4_500, 500, 8_000, 10),
    "cub200": (4_994, 1_000, 5_794, 200),
    "dog": (10_800, 1_200, 8_580, 120),
}


@pytest.mark.parametrize("name", official_splits.SPLIT_NAMES)
def test_shipped_official_splits_sizes_disjointness_and_classes(name):
    split = official_splits.load_official_split(name)
    num_train, num_val, num_test, num_classes = OFFICIAL_SIZES[name]
    assert (len(split.train), len(split.val), len(split.test)) == (num_train, num_val, num_test)
    assert split.classes == tuple(range(num_classes))
    assert not set(split.train) & set(split.val)
    train_and_val = np.sort(np.concatenate([split.train, split.val]))
    np.testing.assert_array_equal(train_and_val, np.arange(num_train + num_val))
    np.testing.assert_array_equal(split.test, np.arange(num_test))
    assert os.path.exists(os.path.join(official_splits.SPLIT_DIR, "LICENSE-alinlab-L2T-ww"))


# Rows of docs/method.md Appendix A (decoded from the official split/dog-val): class ->
# positions among its 100 training files sorted by name.
APPENDIX_A_ROWS = {
    0: (3, 15, 22, 32, 38, 45, 63, 78, 83, 89),
    57: (6, 14, 17, 18, 24, 32, 68, 89, 93, 99),
    119: (7, 14, 17, 23, 26, 30, 31, 53, 60, 82),
}


def test_shipped_dog_split_is_10_of_each_class_of_100_files():
    # The Dogs ImageFolder has 100 training files per class: index = class * 100 + position.
    val = np.sort(official_splits.load_official_split("dog").val)
    np.testing.assert_array_equal(np.bincount(val // 100, minlength=120), [10] * 120)
    for class_id, positions in APPENDIX_A_ROWS.items():
        np.testing.assert_array_equal(val[val // 100 == class_id] % 100, positions)


def _tiny_split(train, val, test, num_classes, name="tiny"):
    return official_splits.OfficialSplit(
        name, np.array(train), np.array(val), np.array(test), tuple(range(num_classes))
    )


def test_positions_from_ids_and_the_official_val_mask():
    ids = [b"train_00003", b"train_00000", "train_00002", b"train_00001"]
    positions = official_splits.positions_from_ids(ids, "train_", "cifar100")
    np.testing.assert_array_equal(positions, [3, 0, 2, 1])
    labels = [1, 0, 0, 1]  # official positions 0, 2 are class 0; 1, 3 class 1
    split = _tiny_split([0, 2], [1, 3], [0, 1], 2)
    mask = official_splits.official_val_mask(split, positions, labels, num_test=2, num_classes=2, dataset="cifar100")
    np.testing.assert_array_equal(mask, [True, False, False, True])
    with pytest.raises(InputError, match="cifar100.*test_00001"):
        official_splits.positions_from_ids([b"test_00001"], "train_", "cifar100")
    failures = {  # what is wrong -> (positions, labels, num_test, num_classes)
        "too few examples": ([3, 0, 2], [1, 0, 0], 2, 2),
        "a position twice": ([3, 0, 3, 1], labels, 2, 2),
        "a position out of range": ([4, 0, 2, 1], labels, 2, 2),
        "another test set": ([3, 0, 2, 1], labels, 3, 2),
        "other classes": ([3, 0, 2, 1], labels, 2, 3),
    }
    for bad_positions, bad_labels, num_test, num_classes in failures.values():
        with pytest.raises(InputError, match="official cifar100 split"):
            official_splits.official_val_mask(split, bad_positions, bad_labels, num_test, num_classes, "cifar100")
    overlapping = _tiny_split([0, 1, 2], [1, 3], [0, 1], 2)
    with pytest.raises(InputError, match="overlap"):
        official_splits.official_val_mask(overlapping, [3, 0, 2, 1], labels, 2, 2, "cifar100")
    uneven = _tiny_split([0, 2, 4], [1, 3], [0, 1], 2, name="cifar100")  # 5 images cannot be 2 equal classes
    with pytest.raises(ValueError, match="5 images do not divide into 2 classes"):
        official_splits.official_val_mask(uneven, [4, 3, 0, 2, 1], [0, 1, 0, 0, 1], 2, 2, "cifar100")


def _balanced_official_labels(split, rng):
    """Labels in official order giving every class the same number of train and of val images, as the real data."""
    num_classes = len(split.classes)
    labels = np.empty(len(split.train) + len(split.val), np.int64)
    for part in (split.train, split.val):
        labels[np.sort(part)] = rng.permutation(np.repeat(np.arange(num_classes), len(part) // num_classes))
    return labels


@pytest.mark.parametrize("name", official_splits.CLASS_BALANCED)
def test_official_split_checks_validation_counts_per_class(name):
    """The shipped split on records whose order maps right passes; a wrong record order fails, naming classes."""
    split = official_splits.load_official_split(name)
    num_classes, num_train = len(split.classes), len(split.train) + len(split.val)
    per_class = len(split.val) // num_classes
    rng = np.random.default_rng(0)
    official_labels = _balanced_official_labels(split, rng)
    positions = rng.permutation(num_train)  # record k is the image at official position positions[k]
    labels = official_labels[positions]
    mask = official_splits.official_val_mask(split, positions, labels, len(split.test), num_classes, name)
    np.testing.assert_array_equal(np.sort(positions[mask]), np.sort(split.val))
    np.testing.assert_array_equal(np.bincount(labels[mask], minlength=num_classes), [per_class] * num_classes)

    shuffled = rng.permutation(positions)  # ids that do not follow the images: almost every class is off
    pattern = rf"official {name} split .*classes do not have the official {per_class} validation images: class \d+ has"
    with pytest.raises(InputError, match=pattern + r".*TFDS record order differs from torchvision's"):
        official_splits.official_val_mask(split, shuffled, labels, len(split.test), num_classes, name)

    # Two records' ids swapped: a validation image of one class for a training image of another.
    val_record = int(np.flatnonzero(mask)[0])
    train_record = int(np.flatnonzero(~mask & (labels != labels[val_record]))[0])
    swapped = positions.copy()
    swapped[[val_record, train_record]] = swapped[[train_record, val_record]]
    low, high = sorted((int(labels[val_record]), int(labels[train_record])))
    counts = {labels[val_record]: per_class - 1, labels[train_record]: per_class + 1}
    expected = (
        f"2 of {num_classes} classes do not have the official {per_class} validation images: "
        f"class {low} has {counts[low]}, class {high} has {counts[high]}: the TFDS record order"
    )
    with pytest.raises(InputError, match=re.escape(expected)):
        official_splits.official_val_mask(split, swapped, labels, len(split.test), num_classes, name)


def test_imagefolder_positions_sort_folders_then_file_names_as_strings():
    # ImageFolder order: class folders sorted, then files sorted as strings (x_10 before x_2).
    files = [("001.Albatross", "x_1.jpg"), ("001.Albatross", "x_10.jpg"), ("001.Albatross", "x_2.jpg"),
             ("002.Auklet", "a.jpg"), ("010.Wren", "b.jpg")]
    labels = [0, 0, 0, 1, 9]
    order = np.random.default_rng(0).permutation(len(files))
    names = [f"CUB_200_2011/images/{files[i][0]}/{files[i][1]}".encode() for i in order]
    positions = official_splits.imagefolder_positions(names, np.array(labels)[order], "caltech_birds2011")
    np.testing.assert_array_equal(positions, order)
    swapped = np.array([9, 0, 0, 1, 0])[order]  # labels no longer follow the folder names
    with pytest.raises(InputError, match="caltech_birds2011"):
        official_splits.imagefolder_positions(names, swapped, "caltech_birds2011")
    mixed = np.array([0, 1, 0, 1, 9])[order]  # one folder, two labels
    with pytest.raises(InputError, match="001.Albatross"):
        official_splits.imagefolder_positions(names, mixed, "caltech_birds2011")


def test_split_argument_resolution(caplog):
    assert datasets._resolved_split("cifar100", datasets.DATASETS["cifar100"], None) == "official"
    assert datasets._resolved_split("cifar100", datasets.DATASETS["cifar100"], "seeded") == "seeded"
    assert datasets._resolved_split("cifar10", datasets.DATASETS["cifar10"], None) == "seeded"
    with pytest.raises(InputError, match="cifar10.*no official split"):
        datasets._resolved_split("cifar10", datasets.DATASETS["cifar10"], "official")
    with pytest.raises(InputError, match="random"):
        datasets._resolved_split("cifar100", datasets.DATASETS["cifar100"], "random")
    with pytest.raises(InputError, match="stl10's official split cannot be matched"):
        datasets._resolved_split("stl10", datasets.DATASETS["stl10"], "official")
    datasets._warned_unmatched.discard("stl10")
    with caplog.at_level("WARNING"):
        for split in (None, "seeded"):
            assert datasets._resolved_split("stl10", datasets.DATASETS["stl10"], split) == "seeded"
    warnings = [r for r in caplog.records if "stl10" in r.getMessage()]
    assert len(warnings) == 1 and "seeded" in warnings[0].getMessage()  # said once
    assert [datasets.default_split(n) for n in ("cifar100", "caltech_birds2011", "stanford_dogs")] == ["official"] * 3
    assert [datasets.default_split(n) for n in ("stl10", "cifar10", "digits", "folder:x")] == ["seeded"] * 4


# ------------------------------------------------------------------------ preprocessing


def test_normalize_constant_image_matches_hand_computed_values():
    image = tf.fill([4, 5, 3], tf.constant(128, tf.uint8))
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    out = preprocessing.normalize(image).numpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.broadcast_to(expected, (4, 5, 3)), rtol=1e-6)


@pytest.mark.parametrize("shape", [(300, 500, 3), (500, 300, 3)])
def test_imagenet_transforms_shapes_ranges_and_seeding(shape):
    image = tf.random.stateless_uniform(shape, seed=[1, 2], maxval=256, dtype=tf.int32)
    image = tf.cast(image, tf.uint8)
    evaluated = preprocessing.imagenet_eval(image, 224)
    assert evaluated.shape == (224, 224, 3) and evaluated.dtype == tf.float32
    constant = preprocessing.imagenet_eval(tf.fill(shape, tf.constant(77, tf.uint8)), 224).numpy()
    np.testing.assert_allclose(constant, 77.0, atol=1e-3)
    seed = tf.constant([5, 6], tf.int64)
    augmented = preprocessing.imagenet_train(image, 224, seed)
    assert augmented.shape == (224, 224, 3)
    values = augmented.numpy()
    assert values.min() >= 0 and values.max() <= 255
    np.testing.assert_array_equal(values, preprocessing.imagenet_train(image, 224, seed).numpy())
    other = preprocessing.imagenet_train(image, 224, tf.constant([7, 8], tf.int64)).numpy()
    assert not np.array_equal(values, other)


def _torchvision_crop_boxes(height, width, count, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """NumPy transcription of torchvision `RandomResizedCrop.get_params`: (top, left, h, w) rows."""
    boxes = []
    for _ in range(count):
        for _ in range(10):
            area = height * width * rng.uniform(*scale)
            aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
            w, h = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                boxes.append((rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w))
                break
        else:
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                w, h = int(round(height * max(ratio))), height
            else:
                w, h = width, height
            boxes.append(((height - h) // 2, (width - w) // 2, h, w))
    return np.array(boxes)


def _crop_boxes(height, width, count):
    seeds = tf.stack([tf.range(count, dtype=tf.int64), tf.fill([count], tf.constant(11, tf.int64))], axis=1)

    @tf.function
    def boxes(seeds):
        return tf.map_fn(
            lambda s: tf.stack(preprocessing.random_resized_crop_box(height, width, s)), seeds,
            fn_output_signature=tf.int32,
        )

    return boxes(seeds).numpy()


@pytest.mark.parametrize("height, width, min_fallbacks", [(200, 300, 0.0), (40, 400, 0.2)])
def test_random_resized_crop_boxes_follow_torchvisions_distribution(height, width, min_fallbacks):
    count = 2000
    ours = _crop_boxes(height, width, count)
    reference = _torchvision_crop_boxes(height, width, count, np.random.default_rng(0))
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    clamped_w = round(height * 4 / 3)  # both images are wider than 4:3
    centre = (0, (width - clamped_w) // 2, height, clamped_w)

    def statistics(boxes):
        """Area fraction and log aspect ratio of the sampled (not fallback) boxes; share of fallbacks."""
        fallbacks = np.all(boxes == centre, axis=1)
        sampled = boxes[~fallbacks]
        area = sampled[:, 2] * sampled[:, 3] / (height * width)
        return area, np.log(sampled[:, 3] / sampled[:, 2]), fallbacks.mean()

    area, log_ratio, fallback = statistics(ours)
    ref_area, ref_log_ratio, ref_fallback = statistics(reference)
    for ours_values, ref_values in ((area, ref_area), (log_ratio, ref_log_ratio)):
        n, ref_n = len(ours_values), len(ref_values)
        standard_error = np.sqrt(ours_values.var() / n + ref_values.var() / ref_n)
        assert abs(ours_values.mean() - ref_values.mean()) < 4 * standard_error
        spread = np.quantile(ref_values, 0.9) - np.quantile(ref_values, 0.1)
        tolerance = 3 * np.sqrt(1 / n + 1 / ref_n) * spread
        for q in (0.1, 0.25, 0.5, 0.75, 0.9):
            assert abs(np.quantile(ours_values, q) - np.quantile(ref_values, q)) < tolerance
    assert ref_fallback >= min_fallbacks
    assert abs(fallback - ref_fallback) < 4 * np.sqrt(ref_fallback * (1 - ref_fallback) / count) + 0.01


def test_random_resized_crop_fallback_is_the_centred_clamped_crop():
    # 10 x 1000: no crop of ratio <= 4/3 covers 8 % of the image, so every draw falls back.
    boxes = _crop_boxes(10, 1000, 50)
    np.testing.assert_array_equal(boxes, np.tile([0, (1000 - 13) // 2, 10, 13], (50, 1)))
    tall = _crop_boxes(1000, 10, 5)
    np.testing.assert_array_equal(tall, np.tile([(1000 - 13) // 2, 0, 13, 10], (5, 1)))


def test_small_image_transforms():
    image = tf.random.stateless_uniform([32, 32, 3], [0, 1], minval=1, maxval=256, dtype=tf.int32)
    image = tf.cast(image, tf.uint8)
    np.testing.assert_array_equal(preprocessing.small_eval(image, 32).numpy(), image.numpy())
    assert preprocessing.small_eval(tf.zeros([96, 96, 3], tf.uint8), 32).shape == (32, 32, 3)
    for seed in range(8):
        cropped = preprocessing.pad_crop_train(image, 32, tf.constant([seed, 0])).numpy()
        flipped = preprocessing.cifar_train(image, 32, tf.constant([seed, 0])).numpy()
        assert cropped.shape == flipped.shape == (32, 32, 3)
        # A crop of the zero-padded image: the pixels that are not padding are a shifted copy.
        inside = cropped.reshape(-1, 3)[cropped.reshape(-1, 3).sum(1) > 0]
        assert len(inside) >= 28 * 28
    gray = preprocessing.to_three_channels(tf.zeros([8, 8, 1], tf.uint8))
    assert gray.shape == (8, 8, 3)


# ------------------------------------------------------------------------------ digits


def _digits_uint8():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target


def _image_keys(images):
    """Multiset of 8x8 images (first channel) recovered from normalised pipeline output."""
    return collections.Counter(img[..., 0].tobytes() for img in _to_uint8(images))


def test_digits_splits_are_a_class_balanced_partition():
    data = load_dataset("digits", image_size=8, batch_size=1, eval_batch_size=256, augment=False)
    assert isinstance(data, DatasetSplits)
    assert (data.num_classes, data.class_names) == (10, tuple("0123456789"))
    assert data.num_train + data.num_val + data.num_test == 1797
    train_x, train_y = _unbatch(data.train)
    val_x, val_y = _unbatch(data.val)
    test_x, test_y = _unbatch(data.test)
    assert (len(train_y), len(val_y), len(test_y)) == (data.num_train, data.num_val, data.num_test)
    raw_images, raw_labels = _digits_uint8()
    per_class = np.bincount(raw_labels)
    test_counts = np.floor(0.2 * per_class + 0.5)
    np.testing.assert_array_equal(np.bincount(test_y), test_counts)
    np.testing.assert_array_equal(np.bincount(val_y), np.floor(0.1 * (per_class - test_counts) + 0.5))
    # train + val + test is exactly the whole dataset (as a multiset of images).
    union = _image_keys(train_x) + _image_keys(val_x) + _image_keys(test_x)
    assert union == collections.Counter(img.tobytes() for img in raw_images)

    reseeded = load_dataset("digits", image_size=8, batch_size=64, eval_batch_size=256, seed=1, augment=False)
    assert _image_keys(_unbatch(reseeded.test)[0]) == _image_keys(test_x)  # test never changes
    assert _image_keys(_unbatch(reseeded.val)[0]) != _image_keys(val_x)


def test_digits_training_stream_shapes_and_determinism():
    first = load_dataset("digits", batch_size=32, seed=4)
    second = load_dataset("digits", batch_size=32, seed=4)
    other = load_dataset("digits", batch_size=32, seed=5)
    x, y = next(iter(first.train))  # epoch 1
    assert x.shape == (32, 32, 32, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert next(iter(first.test))[0].shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(x.numpy(), next(iter(second.train))[0].numpy())
    epoch2, epoch2_again = next(iter(first.train)), next(iter(second.train))
    np.testing.assert_array_equal(epoch2[0].numpy(), epoch2_again[0].numpy())
    assert not np.array_equal(x.numpy(), epoch2[0].numpy())  # reshuffled, re-augmented
    assert not np.array_equal(x.numpy(), next(iter(other.train))[0].numpy())


def test_training_stream_keyed_by_epoch_resumes_exactly():
    data = load_dataset("digits", batch_size=32, seed=4)
    from_start = [x.numpy() for x, _ in data.train_epochs(0, 3, 4)]
    from_epoch_2 = [x.numpy() for x, _ in data.train_epochs(2, 1, 4)]
    assert len(from_start) == 12 and len(from_epoch_2) == 4
    for a, b in zip(from_start[8:], from_epoch_2):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(from_start[0], from_start[4])  # epochs differ
    again = load_dataset("digits", batch_size=32, seed=4).train_epochs(1, 1, 4)
    np.testing.assert_array_equal(next(iter(again))[0].numpy(), from_start[4])

    # Without augmentation, a full epoch is a permutation of the training set (minus the partial batch).
    plain = load_dataset("digits", image_size=8, batch_size=32, eval_batch_size=256, augment=False)
    train_x = _unbatch(load_dataset("digits", image_size=8, batch_size=1, augment=False).train)[0]
    epoch_x, epoch_y = _unbatch(plain.train_epochs(5, 1))
    assert len(epoch_y) == (plain.num_train // 32) * 32
    assert not _image_keys(epoch_x) - _image_keys(train_x)  # a sub-multiset: nothing repeated
    assert len(set(_image_keys(epoch_x).values()) - {1}) <= 1  # (digits has a few duplicate images)
    assert not np.array_equal(epoch_y, _unbatch(plain.train_epochs(6, 1))[1])


def test_training_streams_reshuffle_the_whole_training_set():
    # 25,000 examples, more than any shuffle window the pipeline ever had (10,000): the
    # first batch of an epoch must draw from the whole set, in both training streams.
    num = 25_000
    records = tf.data.Dataset.from_tensor_slices((tf.zeros([num], tf.uint8), tf.range(num, dtype=tf.int32)))
    kwargs = dict(prepare=tf.identity, augment=lambda image, seed: image, batch_size=1000, seed=3, cache=False)
    for first_batch in (
        next(iter(pipeline.train_dataset(records, num, **kwargs)))[1].numpy(),
        next(iter(pipeline.train_epochs(records, num, **kwargs)(0, 1)))[1].numpy(),
    ):
        assert len(set(first_batch)) == 1000
        assert np.mean(first_batch >= 10_000) > 0.5  # about 60 % of the set lies past the first 10,000


def test_digits_classes_and_examples_per_class():
    full = load_dataset("digits", image_size=8, batch_size=10, eval_batch_size=512, augment=False)
    subset = load_dataset(
        "digits", image_size=8, batch_size=2, eval_batch_size=512, augment=False,
        classes=[9, 5], train_examples_per_class=7,
    )
    assert subset.num_classes == 2 and subset.class_names == ("9", "5")
    assert subset.num_train == 14
    train_y = _unbatch(subset.train)[1]
    np.testing.assert_array_equal(np.bincount(train_y), [7, 7])
    full_val_x, full_val_y = _unbatch(full.val)
    val_x, val_y = _unbatch(subset.val)
    # The validation split is carved before subsetting: same images as the full run.
    assert _image_keys(val_x[val_y == 0]) == _image_keys(full_val_x[full_val_y == 9])
    assert _image_keys(val_x[val_y == 1]) == _image_keys(full_val_x[full_val_y == 5])
    test_x, test_y = _unbatch(subset.test)
    full_test_x, full_test_y = _unbatch(full.test)
    assert _image_keys(test_x[test_y == 0]) == _image_keys(full_test_x[full_test_y == 9])
    assert subset.num_test == int(np.sum(full_test_y == 9) + np.sum(full_test_y == 5))


def test_argument_errors():
    with pytest.raises(ValueError, match="stanford_dogs"):
        load_dataset("imagenet_dogs")
    with pytest.raises(ValueError, match="batch_size"):
        load_dataset("digits", classes=[0], train_examples_per_class=3, batch_size=8)
    assert set(DATASET_NAMES) >= {"digits", "stanford_dogs", "cifar100", "stl10", "caltech_birds2011"}


# ------------------------------------------------------------------------ stanford_dogs


def _dog_files(images, labels):
    """Fake-dogs file names of pipeline outputs, read back from their gray levels."""
    levels = _to_uint8(images)[:, 0, 0, 0]
    return {fake_dogs.file_name(int(c), fake_dogs.file_number_of_level(v)) for c, v in zip(labels, levels)}


DOG_CLASSES, DOG_TEST = 120, 8580


def _dogs_train_source(files, seed=0):
    """A stand-in for TFDS' Stanford Dogs train split: (class, file number) pairs as records, in a shuffled order.

    File names are TFDS' `image/filename`, `Images/<class folder>/<wnid>_<j>.jpg`;
    class names are TFDS' (lower-cased folder names).
    """
    order = np.random.default_rng(seed).permutation(len(files))
    return types.SimpleNamespace(
        labels=np.array([files[i][0] for i in order]),
        filenames=np.array(
            [f"Images/{fake_dogs.class_folder(files[i][0])}/{fake_dogs.file_name(*files[i])}".encode() for i in order]
        ),
        class_names=tuple(fake_dogs.class_folder(c).lower() for c in range(DOG_CLASSES)),
    )


def _dogs_val_files(source, test_examples=DOG_TEST):
    mask = datasets._official_val_mask(
        "stanford_dogs", datasets.DATASETS["stanford_dogs"], source, types.SimpleNamespace(num_examples=test_examples)
    )
    return {os.path.basename(f.decode()) for f in source.filenames[mask]}


ALL_DOG_FILES = [(c, j) for c in range(DOG_CLASSES) for j in range(100)]


def test_stanford_dogs_official_split_picks_files_by_name():
    """The shipped split on 120 x 100 fake files: files sorted by name as strings, whatever TFDS' record order."""
    val = np.sort(official_splits.load_official_split("dog").val)
    expected = set()
    for c in range(DOG_CLASSES):
        by_name = sorted(fake_dogs.file_name(c, j) for j in range(100))  # x_10 before x_2, as ImageFolder
        expected |= {by_name[p] for p in val[val // 100 == c] % 100}
    picked = _dogs_val_files(_dogs_train_source(ALL_DOG_FILES, seed=0))
    assert picked == expected and len(picked) == 1200
    class_0 = sorted(fake_dogs.file_name(0, j) for j in range(100))
    assert {f for f in picked if f.startswith("n02100000_")} == {class_0[p] for p in APPENDIX_A_ROWS[0]}
    assert _dogs_val_files(_dogs_train_source(ALL_DOG_FILES, seed=1)) == picked


def test_stanford_dogs_official_split_fails_fast_on_missing_files():
    half = [(c, j) for c, j in ALL_DOG_FILES if j % 2 == 0]  # half of every class: the case that gave 595 val images
    expected = (
        "120 of 120 classes do not have the official 100 training images: class 0 (n02100000-breed_000) has 50, "
        "class 1 (n02100001-breed_001) has 50, class 2 (n02100002-breed_002) has 50, ...; 6000 images missing in all"
    )
    with pytest.raises(InputError, match="official stanford_dogs split .*" + re.escape(expected)):
        _dogs_val_files(_dogs_train_source(half))
    gaps = [(c, j) for c, j in ALL_DOG_FILES if not (c == 7 and j < 3) and c != 90]
    expected = (
        "2 of 120 classes do not have the official 100 training images: class 7 (n02100007-breed_007) has 97, "
        "class 90 (n02100090-breed_090) has 0; 103 images missing in all"
    )
    with pytest.raises(InputError, match=re.escape(expected)):
        _dogs_val_files(_dogs_train_source(gaps))
    expected = "1 of 120 classes do not have the official 100 training images: class 4 (n02100004-breed_004) has 101"
    with pytest.raises(InputError, match=re.escape(expected + "; 1 too many in all")):
        _dogs_val_files(_dogs_train_source(ALL_DOG_FILES + [(4, 100)]))  # a file that is not in train_list


def test_stanford_dogs_official_split_fails_fast_on_labels_out_of_order():
    source = _dogs_train_source(ALL_DOG_FILES)
    swapped = source.labels.copy()  # classes 1 and 2 exchange labels: no longer the sorted folder order
    swapped[source.labels == 1], swapped[source.labels == 2] = 2, 1
    with pytest.raises(InputError, match="stanford_dogs.*do not follow the sorted class-folder names"):
        _dogs_val_files(types.SimpleNamespace(**{**vars(source), "labels": swapped}))
    relabelled = source.labels.copy()  # one file labelled as the next class
    relabelled[np.flatnonzero(source.labels == 4)[0]] = 5
    with pytest.raises(InputError, match="stanford_dogs.*n02100004-Breed_004.*labels (4 and 5|5 and 4)"):
        _dogs_val_files(types.SimpleNamespace(**{**vars(source), "labels": relabelled}))
    with pytest.raises(InputError, match="stanford_dogs.*8579 TFDS test examples, the official test set is 8580"):
        _dogs_val_files(source, test_examples=DOG_TEST - 1)


def test_stanford_dogs_official_split_refuses_the_incomplete_fake(fake_dogs_data_dir):
    """conftest's fake has files in 3 of the 120 listed classes: TFDS' builder skips the rest silently."""
    kwargs = dict(data_dir=fake_dogs_data_dir, download=False, batch_size=10, augment=False)
    expected = (
        "117 of 120 classes do not have the official 100 training images: class 3 (n02100003-breed_003) has 0, "
    )
    with pytest.raises(InputError, match="official stanford_dogs split .*" + re.escape(expected)):
        load_dataset("stanford_dogs", **kwargs)
    seeded = load_dataset("stanford_dogs", split="seeded", **kwargs)
    assert (seeded.num_train, seeded.num_val, seeded.num_test) == (270, 30, 6)


# A complete fake Stanford Dogs: every listed file present, DOGS_TRAIN_PER_CLASS training files a class.
DOGS_TRAIN_PER_CLASS = 4


@pytest.fixture(scope="module")
def complete_dogs(tmp_path_factory):
    """(TFDS data dir, split dir): the real builder on 120 classes x (4 train + 1 test) files, and a split for them.

    The split file (`split_dog.json`) puts file position `c % 4` of class c in validation.
    """
    data_dir = fake_dogs.prepare_fake_stanford_dogs(
        tmp_path_factory.mktemp("complete_dogs_data"), tmp_path_factory.mktemp("complete_dogs_archives"),
        present_classes=DOG_CLASSES, train_per_class=DOGS_TRAIN_PER_CLASS, test_per_class=1,
    )
    split_dir = tmp_path_factory.mktemp("dog_split")
    val = [c * DOGS_TRAIN_PER_CLASS + c % DOGS_TRAIN_PER_CLASS for c in range(DOG_CLASSES)]
    _write_split_file(split_dir, "dog", val, DOG_CLASSES * DOGS_TRAIN_PER_CLASS, DOG_CLASSES, DOG_CLASSES)
    return data_dir, str(split_dir)


def _complete_dogs_val_files(class_ids):
    """The files the complete fake's split puts in validation, by name."""
    return {
        sorted(fake_dogs.file_name(c, j) for j in range(DOGS_TRAIN_PER_CLASS))[c % DOGS_TRAIN_PER_CLASS]
        for c in class_ids
    }


def test_stanford_dogs_official_val_split_through_real_builder(complete_dogs, monkeypatch):
    data_dir, split_dir = complete_dogs
    monkeypatch.setattr(official_splits, "SPLIT_DIR", split_dir)
    data = load_dataset(
        "stanford_dogs", data_dir=data_dir, download=False, image_size=32, batch_size=10, eval_batch_size=64,
        augment=False,
    )
    assert (data.num_classes, data.image_size) == (120, 32)
    assert data.class_names[0] == "n02100000-breed_000"
    assert (data.num_train, data.num_val, data.num_test) == (360, 120, 120)
    all_files = {fake_dogs.file_name(c, j) for c in range(DOG_CLASSES) for j in range(DOGS_TRAIN_PER_CLASS)}
    expected_val = _complete_dogs_val_files(range(DOG_CLASSES))

    # What the pipelines yield (images carry their file number as gray level).
    val_x, val_y = _unbatch(data.val)
    assert _dog_files(val_x, val_y) == expected_val
    train_x, train_y = _unbatch(data.train)
    assert len(train_y) == 360 and _dog_files(train_x, train_y) == all_files - expected_val
    np.testing.assert_array_equal(np.bincount(train_y), [3] * DOG_CLASSES)
    test_x, test_y = _unbatch(data.test)
    assert _dog_files(test_x, test_y) == {fake_dogs.file_name(c, DOGS_TRAIN_PER_CLASS) for c in range(DOG_CLASSES)}

    # TFDS hands over the JPEG bytes undecoded; the pipeline decodes them as PIL does.
    import io

    import tensorflow_datasets as tfds
    from PIL import Image

    source = sources.TfdsSource(tfds.builder("stanford_dogs", data_dir=data_dir), "train")
    encoded, _ = next(iter(source.select()))
    assert encoded.dtype == tf.string and tf.io.is_jpeg(encoded)
    pil = np.asarray(Image.open(io.BytesIO(encoded.numpy())).convert("RGB"))
    np.testing.assert_array_equal(pipeline.decode(encoded).numpy(), pil)


def test_stanford_dogs_augmented_batches_and_subsets(complete_dogs, monkeypatch):
    data_dir, split_dir = complete_dogs
    monkeypatch.setattr(official_splits, "SPLIT_DIR", split_dir)
    data = load_dataset(
        "stanford_dogs", data_dir=data_dir, download=False, batch_size=4, classes=[2, 0], train_examples_per_class=2,
    )
    assert data.class_names == ("n02100002-breed_002", "n02100000-breed_000")
    assert (data.num_train, data.num_val, data.num_test) == (4, 2, 2)
    x, y = next(iter(data.train))
    assert x.shape == (4, 224, 224, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
    val_x, val_y = _unbatch(data.val)
    files = _dog_files(val_x, np.where(val_y == 0, 2, 0))  # back to the original class ids
    assert files == _complete_dogs_val_files([0, 2])


# ------------------------------------------------------- a class-balanced TFDS dataset

CIFAR_TRAIN_PER_BATCH, CIFAR_TEST = 40, 30  # 5 train batch files -> 200 train images


def _write_fake_cifar10(archive_dir):
    """cifar-10-binary.tar.gz in the real layout; image i has R = i % 256, G = i // 256."""
    import io
    import tarfile

    def batch(first_index, count):
        records = []
        for i in range(first_index, first_index + count):
            label = i % 10
            image = np.zeros((3, 32, 32), np.uint8)
            image[0], image[1], image[2] = i % 256, i // 256, 7 * label
            records.append(bytes([label]) + image.tobytes())
        return b"".join(records)

    files = {
        f"data_batch_{k + 1}.bin": batch(k * CIFAR_TRAIN_PER_BATCH, CIFAR_TRAIN_PER_BATCH) for k in range(5)
    }
    files["test_batch.bin"] = batch(1000, CIFAR_TEST)
    files["batches.meta.txt"] = "\n".join(f"class_{c}" for c in range(10)).encode()
    with tarfile.open(archive_dir / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("cifar-10-batches-bin/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def fake_cifar10_data_dir(tmp_path_factory):
    """`cifar10` prepared by the real TFDS builder from a tiny generated archive (recipe B)."""
    archive_dir, data_dir = tmp_path_factory.mktemp("cifar_archive"), tmp_path_factory.mktemp("cifar_data")
    _write_fake_cifar10(archive_dir)
    return prepare_with_real_builder("cifar10", archive_dir, data_dir)


def _cifar_ids(images):
    pixels = _to_uint8(images)[:, 0, 0, :]
    return pixels[:, 0].astype(int) + 256 * pixels[:, 1].astype(int)


def test_tfds_class_balanced_val_picks_the_masked_records(fake_cifar10_data_dir):
    import tensorflow_datasets as tfds

    data = load_dataset(
        "cifar10", data_dir=fake_cifar10_data_dir, download=False, batch_size=1, seed=3, augment=False
    )
    assert (data.num_train, data.num_val, data.num_test, data.image_size) == (180, 20, 30, 32)
    assert data.class_names[0] == "class_0"
    # Expected: the class-balanced mask applied to the records in TFDS file order.
    records = tfds.load("cifar10", split="train", data_dir=fake_cifar10_data_dir, shuffle_files=False)
    ids = np.array([int(ex["image"][0, 0, 0]) + 256 * int(ex["image"][0, 0, 1]) for ex in records])
    labels = np.array([int(ex["label"]) for ex in records])
    val_mask = splits.class_balanced_split(labels, 0.1, seed=3)
    val_x, val_y = _unbatch(data.val)
    train_x, train_y = _unbatch(data.train)
    assert sorted(_cifar_ids(val_x)) == sorted(ids[val_mask])
    assert sorted(_cifar_ids(train_x)) == sorted(ids[~val_mask])
    np.testing.assert_array_equal(val_y, _cifar_ids(val_x) % 10)  # labels travel with images
    np.testing.assert_array_equal(np.bincount(val_y), [2] * 10)
    augmented = load_dataset("cifar10", data_dir=fake_cifar10_data_dir, download=False, batch_size=8)
    x, _ = next(iter(augmented.train))
    assert x.shape == (8, 32, 32, 3) and x.dtype == tf.float32


def _write_split_file(folder, name, val, num_train, num_test, num_classes):
    import json

    classes = list(range(num_classes))
    train = sorted(set(range(num_train)) - set(val))
    parts = {"train": train, "val": sorted(val), "test": list(range(num_test))}
    (folder / f"split_{name}.json").write_text(
        json.dumps({part: {"classes": classes, "indices": indices} for part, indices in parts.items()})
    )


def test_cifar100_official_split_through_real_builder(fake_cifar100_data_dir, tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    # TFDS stores the examples in another order than train.bin; the split indexes train.bin.
    source = sources.TfdsSource(tfds.builder("cifar100", data_dir=fake_cifar100_data_dir), "train")
    positions = official_splits.positions_from_ids(source.ids, "train_", "cifar100")
    assert not np.array_equal(positions, np.arange(fake_tfds.CIFAR100_TRAIN))
    np.testing.assert_array_equal(source.labels, positions % 100)  # the id is the position in train.bin

    # One validation image of each class (image i has class i % 100), as the official split's 50.
    rng = np.random.default_rng(1)
    val = [int(c + 100 * rng.integers(fake_tfds.CIFAR100_TRAIN // 100)) for c in range(100)]
    _write_split_file(tmp_path, "cifar100", val, fake_tfds.CIFAR100_TRAIN, fake_tfds.CIFAR100_TEST, 100)
    monkeypatch.setattr(official_splits, "SPLIT_DIR", str(tmp_path))
    kwargs = dict(data_dir=fake_cifar100_data_dir, download=False, batch_size=1, augment=False)
    data = load_dataset("cifar100", **kwargs)  # official by default
    assert (data.num_train, data.num_val, data.num_test) == (200, 100, 20)
    val_x, val_y = _unbatch(data.val)
    train_x, train_y = _unbatch(data.train)
    assert sorted(_cifar_ids(val_x)) == sorted(val)
    assert sorted(_cifar_ids(train_x)) == sorted(set(range(fake_tfds.CIFAR100_TRAIN)) - set(val))
    np.testing.assert_array_equal(val_y, _cifar_ids(val_x) % 100)  # labels travel with images

    seeded = load_dataset("cifar100", split="seeded", seed=1, **kwargs)
    assert sorted(_cifar_ids(_unbatch(seeded.val)[0])) != sorted(val)

    # TFDS ids that do not follow its records (a record order other than train.bin's):
    shuffled_ids = rng.permutation(source.ids)
    with monkeypatch.context() as patch:
        patch.setattr(sources.TfdsSource, "ids", property(lambda self: shuffled_ids))
        with pytest.raises(InputError, match=r"official cifar100 split .*classes do not have the official 1 valid"):
            load_dataset("cifar100", **kwargs)

    # An official split that indexes one example of each class more than TFDS has:
    _write_split_file(tmp_path, "cifar100", val, fake_tfds.CIFAR100_TRAIN + 100, fake_tfds.CIFAR100_TEST, 100)
    expected = "100 of 100 classes do not have the official 4 training images: class 0 (fine_0) has 3,"
    with pytest.raises(InputError, match="official cifar100 split .*" + re.escape(expected)):
        load_dataset("cifar100", split="official", **kwargs)


def test_cub_official_split_matches_imagefolder_positions(tmp_path, monkeypatch):
    """caltech_birds2011's wiring on a stand-in source (the real builder needs OpenCV for its masks)."""
    folders = [f"{c + 1:03d}.Bird_{c}" for c in range(3)]
    files = [(c, folder, f"Bird_{c}_{j}.jpg") for c, folder in enumerate(folders) for j in (1, 2, 10, 11)]
    order = np.random.default_rng(2).permutation(len(files))  # TFDS order differs from ImageFolder's
    train_source = types.SimpleNamespace(
        labels=np.array([files[i][0] for i in order]),
        filenames=np.array([f"CUB_200_2011/images/{files[i][1]}/{files[i][2]}".encode() for i in order]),
        class_names=tuple(folders),
    )
    # ImageFolder positions: Bird_c_1, Bird_c_10, Bird_c_11, Bird_c_2 for each class c.
    val = [1, 7, 8]  # Bird_0_10, Bird_1_2, Bird_2_1
    _write_split_file(tmp_path, "cub200", val, len(files), 5, 3)
    monkeypatch.setattr(official_splits, "SPLIT_DIR", str(tmp_path))
    spec = datasets.DATASETS["caltech_birds2011"]
    test_source = types.SimpleNamespace(num_examples=5)
    mask = datasets._official_val_mask("caltech_birds2011", spec, train_source, test_source)
    picked = {os.path.basename(f.decode()) for f in train_source.filenames[mask]}
    assert picked == {"Bird_0_10.jpg", "Bird_1_2.jpg", "Bird_2_1.jpg"}
    with pytest.raises(InputError, match="caltech_birds2011.*test"):
        bigger_test = types.SimpleNamespace(num_examples=6)
        datasets._official_val_mask("caltech_birds2011", spec, train_source, bigger_test)


# ----------------------------------------------------------------------- image folders


def _write_folder_dataset(root, train_counts, test_counts):
    for split, counts in (("train", train_counts), ("test", test_counts)):
        for class_name, count in counts.items():
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = np.full((20, 30, 3), 10 * i, np.uint8)
                (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())


def test_folder_dataset(tmp_path):
    _write_folder_dataset(tmp_path, {"dog": 6, "cat": 6}, {"dog": 2, "cat": 2})
    data = load_dataset(f"folder:{tmp_path}", image_size=64, batch_size=4)
    assert data.class_names == ("cat", "dog")
    assert (data.num_train, data.num_val, data.num_test) == (10, 2, 4)
    x, y = next(iter(data.train))
    assert x.shape == (4, 64, 64, 3) and y.dtype == tf.int32
    test_x, test_y = _unbatch(data.test)
    assert test_x.shape == (4, 64, 64, 3) and sorted(test_y) == [0, 0, 1, 1]


def _write_images(folder, count, shape):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(np.full(shape, 10 * i, np.uint8)).numpy())


def test_folder_dataset_setting_follows_image_size(tmp_path, caplog):
    small, large = tmp_path / "small", tmp_path / "large"
    for split, count in (("train", 5), ("test", 1)):
        for class_name in ("a", "b"):
            _write_images(small / split / class_name, count, (48, 64, 3))
            _write_images(large / split / class_name, count, (65, 40, 3))
    with caplog.at_level("INFO"):
        small_data = load_dataset(f"folder:{small}", batch_size=4)
        large_data = load_dataset(f"folder:{large}", batch_size=4)
    assert small_data.image_size == 32 and large_data.image_size == 224
    messages = [r.getMessage() for r in caplog.records if "folder:" in r.getMessage()]
    assert len(messages) == 2
    assert "32x32" in messages[0] and "cifar" in messages[0] and "64 px" in messages[0]
    assert "224x224" in messages[1] and "imagenet" in messages[1] and "65 px" in messages[1]
    assert next(iter(small_data.train))[0].shape == (4, 32, 32, 3)
    assert next(iter(large_data.test))[0].shape == (2, 224, 224, 3)

    # An explicit augmentation chooses the setting; "none" keeps the judged one.
    assert load_dataset(f"folder:{small}", batch_size=4, augmentation="imagenet").image_size == 224
    assert load_dataset(f"folder:{large}", batch_size=4, augmentation="pad_crop").image_size == 32
    def constant_images(data):  # constant gray files stay constant unless a pad-crop adds zeros
        images = _to_uint8(_unbatch(data.train)[0])
        return [bool(image.min() == image.max()) for image in images]

    assert all(constant_images(load_dataset(f"folder:{small}", batch_size=4, augmentation="none")))
    assert not all(constant_images(small_data))
    with pytest.raises(InputError, match="flip"):
        load_dataset(f"folder:{small}", augmentation="flip")


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "nowhere")):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    _write_folder_dataset(tmp_path, {"cat": 3, "dog": 3}, {"cat": 1})
    with pytest.raises(ValueError, match="dog"):
        load_dataset(f"folder:{tmp_path}", batch_size=2)
    (tmp_path / "test" / "dog").mkdir()
    with pytest.raises(ValueError, match=str(tmp_path / "test" / "dog")):
        load_dataset(f"folder:{tmp_path}", batch_size=2)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        load_dataset(f"folder:{empty}")


# ------------------------------------------------------------------------- fast failure


def test_missing_tfds_data_fails_fast_without_download(tmp_path):
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("stanford_dogs", data_dir=str(tmp_path), download=False)
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert str(tmp_path) in message and "stanford_dogs" in message
    assert os.path.join(str(tmp_path), "downloads", "manual") in message
    for archive in ("images.tar", "lists.tar", "annotation.tar"):
        assert archive in message


def test_missing_tfds_data_fails_fast_offline_with_download(tmp_path):
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError, match="unreachable"):
        load_dataset("stanford_dogs", data_dir=str(tmp_path), download=True)
    assert time.monotonic() - start < 30


def test_archives_in_manual_dir_are_prepared_without_network(tmp_path):
    from unittest import mock

    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums

    manual_dir = tmp_path / "data" / "downloads" / "manual"
    fake_dogs.make_fake_archives(manual_dir, present_classes=1, train_per_class=12, test_per_class=2)
    builder_cls = tfds.builder_cls("stanford_dogs")
    # The fake archives stand in for the real ones: register their checksums.
    local = {
        url: checksums.compute_url_info(manual_dir / info.filename)
        for url, info in builder_cls.url_infos.items()
    }
    with mock.patch.object(builder_cls, "url_infos", local):
        # Seeded: one class of 12 files cannot pass the official split's checks (120 classes of 100).
        data = load_dataset(
            "stanford_dogs", data_dir=str(tmp_path / "data"), download=False, batch_size=2, split="seeded"
        )
    assert (data.num_train, data.num_val, data.num_test) == (11, 1, 2)  # 10 % of 12, rounded


def test_reachability_probe():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        open_port = server.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]  # bound, not listening: refuses
            reachable = availability.reachable_endpoints(
                [("127.0.0.1", open_port), ("127.0.0.1", closed_port)], timeout=2
            )
    assert reachable == {("127.0.0.1", open_port)}
