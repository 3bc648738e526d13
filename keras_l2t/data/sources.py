"""Where examples come from: a TFDS split, scikit-learn digits, or an image folder.

A source lists its examples in a fixed order and knows their labels (and file
names, where they exist) before any image is decoded. Splits are therefore chosen
in numpy (`splits.py`) and applied with `select(new_labels)`, which keeps the
examples whose new label is >= 0 and yields `(raw image, int32 label)`: the raw
image is encoded bytes (tf.string), a uint8 HxWxC array, or, for image folders,
the file's path (`reads_files`), read only after the training set is shuffled so
that a full reshuffle holds paths, not images.
"""

import functools
import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_l2t.data import splits
from keras_l2t.data.availability import DatasetNotFoundError
from keras_l2t.errors import InputError

# File types read by `folder:PATH` datasets (ImageFolder's image extensions, minus
# the ones tf.io.decode_image cannot read).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# The digits test set is a fixed class-balanced 20 %, independent of the `seed`
# argument, so that it never changes between runs.
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 1905


class TfdsSource:
    """One split of a prepared TFDS dataset, read in file order with images left encoded."""

    def __init__(self, builder, split):
        self.builder = builder
        self.split = split
        features = builder.info.features
        self._decoders = {
            key: tfds.decode.SkipDecoding()
            for key, feature in features.items()
            if isinstance(feature, tfds.features.Image)
        }

    @property
    def num_examples(self):
        return self.builder.info.splits[self.split].num_examples

    @property
    def class_names(self):
        return tuple(self.builder.info.features["label"].names)

    def _examples(self):
        # shuffle_files=False: a fixed order, so record i is the same in every read.
        return self.builder.as_dataset(
            split=self.split,
            shuffle_files=False,
            decoders=self._decoders,
            read_config=tfds.ReadConfig(try_autocache=False),
        )

    @functools.cached_property
    def _metadata(self):
        """Labels, and file names and ids where the dataset has them: one pass, images not decoded."""
        features = self.builder.info.features
        keys = ["label"] + [key for key in ("image/filename", "id") if key in features]
        columns = {key: [] for key in keys}
        batches = self._examples().map(lambda ex: {key: ex[key] for key in keys},
                                       num_parallel_calls=tf.data.AUTOTUNE)
        for batch in batches.batch(4096).as_numpy_iterator():
            for key in keys:
                columns[key].append(batch[key])
        metadata = {key: np.concatenate(values) if values else np.zeros([0], object)
                    for key, values in columns.items()}
        metadata["label"] = metadata["label"].astype(np.int64)
        return metadata

    @property
    def labels(self):
        return self._metadata["label"]

    @property
    def filenames(self):
        """`image/filename` per example (bytes), or None if the dataset stores none."""
        return self._metadata.get("image/filename")

    @property
    def ids(self):
        """The `id` feature per example (bytes, e.g. CIFAR's `train_00042`), or None if absent."""
        return self._metadata.get("id")

    reads_files = False

    def select(self, new_labels=None):
        """(encoded image, int32 label) of the examples whose new label is >= 0.

        Args:
            new_labels: New label per example in source order (-1 drops it); None
                keeps every example with its original label.
        """
        examples = self._examples()
        if new_labels is None:
            return examples.map(
                lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        if len(new_labels) != self.num_examples:
            raise ValueError(f"Expected {self.num_examples} new labels, got {len(new_labels)}.")
        lookup = tf.constant(np.asarray(new_labels, np.int32))
        kept = examples.enumerate().filter(lambda i, ex: tf.gather(lookup, i) >= 0)
        return kept.map(
            lambda i, ex: (ex["image"], tf.gather(lookup, i)), num_parallel_calls=tf.data.AUTOTUNE
        )


class ArraySource:
    """Examples held in memory: uint8 images, or paths of image files (`reads_files`: records are paths)."""

    def __init__(self, images, labels, class_names, *, are_paths=False):
        self.images = np.asarray(images)
        self.labels = np.asarray(labels, np.int64)
        self.class_names = tuple(class_names)
        self.are_paths = are_paths
        self.filenames = self.images if are_paths else None

    @property
    def num_examples(self):
        return len(self.labels)

    def select(self, new_labels=None):
        """(raw image, int32 label) of the examples whose new label is >= 0, in source order."""
        if new_labels is None:
            new_labels = self.labels
        new_labels = np.asarray(new_labels, np.int32)
        keep = new_labels >= 0
        return tf.data.Dataset.from_tensor_slices((self.images[keep], new_labels[keep]))

    @property
    def reads_files(self):
        """Whether records are file paths (read by the pipeline) rather than images."""
        return self.are_paths


def digits_sources():
    """scikit-learn's 8x8 digits (1,797 images) as uint8 train and fixed 20 % test sources."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    class_names = tuple(str(c) for c in range(10))
    test = splits.class_balanced_split(labels, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED)
    return (
        ArraySource(images[~test], labels[~test], class_names),
        ArraySource(images[test], labels[test], class_names),
    )


def _image_files(folder):
    names = [n for n in tf.io.gfile.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(names)


def _class_folders(split_dir):
    return sorted(
        name.rstrip("/")
        for name in tf.io.gfile.listdir(split_dir)
        if tf.io.gfile.isdir(os.path.join(split_dir, name.rstrip("/")))
    )


# Leading bytes of the formats `tf.io.decode_image` reads.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def is_readable_image(path):
    """Whether the file starts like a JPEG, PNG, GIF or BMP (a cheap check, done before training)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(8)
    return head.startswith(IMAGE_SIGNATURES)


def _folder_split(split_dir, class_names, skip_unreadable):
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(split_dir, class_name)
        files = [os.path.join(class_dir, f) for f in _image_files(class_dir)]
        for path in [p for p in files if not is_readable_image(p)]:
            if not skip_unreadable:
                raise InputError(
                    f"Image file {path!r} is not a readable image (empty, or not JPEG/PNG/GIF/BMP data): "
                    "remove or replace it, or pass --skip_unreadable_images to leave such files out."
                )
            logging.warning("Skipping unreadable image file %s", path)
            files.remove(path)
        if not files:
            raise InputError(
                f"Class folder {class_dir!r} has no readable image files ({', '.join(IMAGE_EXTENSIONS)}): "
                "add images or remove the folder."
            )
        paths += files
        labels += [label] * len(files)
    return ArraySource(np.array(paths), labels, class_names, are_paths=True)


def folder_sources(path, skip_unreadable=False):
    """Train and test sources of `PATH/{train,test}/<class>/<image>`.

    Classes are the sorted sub-folder names of `PATH/train` (ImageFolder's order);
    `PATH/test` must have the same class folders. Files are sorted by name. Only
    files directly inside a class folder are read. A file that does not start
    like an image raises ValueError naming it, or is skipped (with a warning)
    if `skip_unreadable`.
    """
    split_dirs = {split: os.path.join(path, split) for split in ("train", "test")}
    for split_dir in split_dirs.values():
        if not tf.io.gfile.isdir(split_dir):
            raise DatasetNotFoundError(
                f"Image folder dataset {path!r} needs {split_dir!r} with one sub-folder per class "
                f"(layout PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg)."
            )
    class_names = _class_folders(split_dirs["train"])
    if not class_names:
        raise InputError(f"{split_dirs['train']!r} has no class folders.")
    test_classes = _class_folders(split_dirs["test"])
    if test_classes != class_names:
        missing = sorted(set(class_names) - set(test_classes))
        extra = sorted(set(test_classes) - set(class_names))
        raise InputError(
            f"{split_dirs['test']!r} must have the same class folders as {split_dirs['train']!r}; "
            f"missing: {missing}, extra: {extra}."
        )
    return tuple(_folder_split(split_dirs[split], class_names, skip_unreadable) for split in ("train", "test"))
