"""The dataset registry and `load_dataset`: train / val / test tf.data pipelines.

Every dataset is read the way the official L2T-ww code reads it (method.md §4.4,
§8): ImageNet normalisation everywhere; Inception crop + flip at 224 for the
fine-grained datasets; pad-4 random crop (+ flip for natural images) at 32.
Validation is carved out of the training set: the official Stanford Dogs split
(Appendix A), otherwise a seeded, class-balanced `val_fraction` of each class.

TFDS datasets are looked up in `data_dir` (default: TFDS_DATA_DIR or
~/tensorflow_datasets). Without network access, place the builder's archives in
`<data_dir>/downloads/manual/` (for stanford_dogs: images.tar, lists.tar and
annotation.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/); when the
data is missing and cannot be fetched, `DatasetNotFoundError` is raised within
seconds (see `availability.py`).
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from keras_l2t.data import pipeline, preprocessing, sources, splits
from keras_l2t.data.availability import prepared_builder

FOLDER_PREFIX = "folder:"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one dataset is read, split and augmented.

    Attributes:
        tfds_name: TFDS builder name, or None for datasets read otherwise.
        image_size: Default side length of the model input.
        augmentation: "imagenet" (Inception crop + flip; resize 256 / centre-crop
            224 for eval), "cifar" (pad 4, random crop, flip) or "pad_crop" (pad 4,
            random crop, no flip); the 32x32 kinds evaluate on the resized image.
        official_val: Use the official Stanford Dogs validation offsets instead of
            a class-balanced random `val_fraction`.
        test_split: TFDS split used as the test set.
        cache: Keep decoded, resized uint8 images in memory (small datasets).
    """

    tfds_name: str | None
    image_size: int
    augmentation: str
    official_val: bool = False
    test_split: str = "test"
    cache: bool = False


DATASETS = {
    "digits": DatasetSpec(None, 32, "pad_crop", cache=True),
    "stanford_dogs": DatasetSpec("stanford_dogs", 224, "imagenet", official_val=True),
    "caltech_birds2011": DatasetSpec("caltech_birds2011", 224, "imagenet"),
    "cifar10": DatasetSpec("cifar10", 32, "cifar", cache=True),
    "cifar100": DatasetSpec("cifar100", 32, "cifar", cache=True),
    "stl10": DatasetSpec("stl10", 32, "cifar", cache=True),
    "fashion_mnist": DatasetSpec("fashion_mnist", 32, "cifar", cache=True),
    "mnist": DatasetSpec("mnist", 32, "pad_crop", cache=True),
}
FOLDER_SPEC = DatasetSpec(None, 224, "imagenet")
DATASET_NAMES = tuple(DATASETS)


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    """The three splits of a dataset, ready for `Model.fit` / `evaluate`.

    `train` is shuffled every epoch, augmented and batched with the last partial
    batch dropped; `val` and `test` use the eval transform, in a fixed order. All
    yield (float32 NHWC ImageNet-normalised images, int32 labels).
    `train_epochs(first_epoch, num_epochs, steps_per_epoch=None)` is the training
    stream keyed by epoch (see `pipeline.train_epochs`): what resumable runs use.
    """

    name: str
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    num_train: int
    num_val: int
    num_test: int
    image_size: int
    class_names: tuple[str, ...]
    train_epochs: Callable[..., tf.data.Dataset] = None


def _spec_and_sources(name, data_dir, download, skip_unreadable=False):
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        if not path:
            raise ValueError("A folder dataset needs a path: 'folder:PATH'.")
        return FOLDER_SPEC, *sources.folder_sources(path, skip_unreadable)
    if name not in DATASETS:
        valid = ", ".join(DATASET_NAMES)
        raise ValueError(f"Unknown dataset {name!r}; valid names: {valid}, or 'folder:PATH'.")
    spec = DATASETS[name]
    if spec.tfds_name is None:
        return spec, *sources.digits_sources()
    builder = prepared_builder(spec.tfds_name, data_dir=data_dir, download=download)
    return spec, sources.TfdsSource(builder, "train"), sources.TfdsSource(builder, spec.test_split)


def _transforms(spec, image_size, augment):
    """(prepare, train augmentation, eval transform) for a dataset spec."""
    if spec.augmentation == "imagenet":
        prepare = pipeline.decode

        def augment_fn(image, seed):
            return preprocessing.imagenet_train(image, image_size, seed)

        def eval_fn(image):
            return preprocessing.imagenet_eval(image, image_size)

    else:
        small_train = {"cifar": preprocessing.cifar_train, "pad_crop": preprocessing.pad_crop_train}
        train_fn = small_train[spec.augmentation]

        def prepare(image):
            # Resized once (and cached) as uint8, like the official PIL pipeline.
            resized = preprocessing.resize(pipeline.decode(image), image_size)
            return tf.saturate_cast(tf.round(resized), tf.uint8)

        def augment_fn(image, seed):
            return train_fn(image, image_size, seed)

        def eval_fn(image):
            return preprocessing.small_eval(image, image_size)

    def eval_as_train(image, seed):
        del seed  # No augmentation: training examples get the eval transform.
        return eval_fn(image)

    return prepare, (augment_fn if augment else eval_as_train), eval_fn


def _masks(spec, train_source, seed, val_fraction, train_examples_per_class):
    """(train mask, val mask) over the training source."""
    labels = train_source.labels
    if spec.official_val:
        val_mask = splits.stanford_dogs_official_val_mask(labels, train_source.filenames)
    else:
        val_mask = splits.class_balanced_split(labels, val_fraction, seed)
    train_mask = ~val_mask
    if train_examples_per_class is not None:
        kept = splits.examples_per_class_mask(labels[train_mask], train_examples_per_class, seed)
        train_mask[np.flatnonzero(train_mask)] = kept
    return train_mask, val_mask


def load_dataset(
    name,
    *,
    data_dir=None,
    image_size=None,
    batch_size=64,
    eval_batch_size=None,
    seed=0,
    classes=None,
    train_examples_per_class=None,
    val_fraction=0.1,
    augment=True,
    download=True,
    skip_unreadable_images=False,
):
    """Train / val / test pipelines of a registered dataset or an image folder.

    Args:
        name: One of `DATASET_NAMES`, or "folder:PATH" for
            PATH/{train,test}/<class>/<image files>.
        data_dir: TFDS data dir (default TFDS_DATA_DIR or ~/tensorflow_datasets);
            archives for offline preparation go in `<data_dir>/downloads/manual/`.
        image_size: Side of the model input; default per dataset (224 or 32).
        batch_size: Training batch size (last partial batch dropped).
        eval_batch_size: Batch size of val and test; default `batch_size`.
        seed: Seeds the validation split, the per-class subsampling, the shuffle
            and the augmentation.
        classes: Original class ids to keep, relabelled 0..k-1 in this order, in
            all three splits (validation is carved before subsetting, so it does
            not depend on `classes`).
        train_examples_per_class: Keep only this many seeded training examples per
            class (after the validation split is carved).
        val_fraction: Class-balanced share of the training set used for validation
            (ignored by stanford_dogs, which uses the official split).
        augment: Apply the training augmentation (else the eval transform).
        download: Allow TFDS to download when the host is reachable.
        skip_unreadable_images: In a folder dataset, leave out (with a warning)
            files that are not images instead of raising.

    Returns:
        A `DatasetSplits`.

    Raises:
        ValueError: unknown name, bad arguments, or fewer training examples than
            `batch_size`.
        DatasetNotFoundError: the data is missing and cannot be fetched.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    spec, train_source, test_source = _spec_and_sources(name, data_dir, download, skip_unreadable_images)
    image_size = image_size or spec.image_size
    class_names = train_source.class_names
    train_mask, val_mask = _masks(spec, train_source, seed, val_fraction, train_examples_per_class)

    if classes is None:
        train_labels = train_source.labels.astype(np.int32)
        test_labels = None
    else:
        train_labels = splits.class_subset(train_source.labels, classes, len(class_names))
        test_labels = splits.class_subset(test_source.labels, classes, len(class_names))
        class_names = tuple(class_names[c] for c in classes)
    train_labels, val_labels = np.where(train_mask, train_labels, -1), np.where(val_mask, train_labels, -1)
    num_train, num_val = int(np.sum(train_labels >= 0)), int(np.sum(val_labels >= 0))
    num_test = test_source.num_examples if test_labels is None else int(np.sum(test_labels >= 0))
    if num_train < batch_size:
        raise ValueError(
            f"Dataset {name!r} has {num_train} training examples, fewer than batch_size={batch_size}: "
            "with drop_remainder=True the training set would be empty. Lower batch_size."
        )

    prepare, augment_fn, eval_fn = _transforms(spec, image_size, augment)
    train_kwargs = dict(prepare=prepare, augment=augment_fn, batch_size=batch_size, seed=seed, cache=spec.cache)
    train_records = train_source.select(train_labels)
    val_records = train_source.select(val_labels)
    if isinstance(train_source, sources.TfdsSource) and not spec.cache:
        # Keep the (encoded) validation examples so each evaluation does not rescan train.
        val_records = val_records.cache()
    eval_kwargs = dict(
        prepare=prepare, transform=eval_fn, batch_size=eval_batch_size or batch_size, cache=spec.cache
    )
    return DatasetSplits(
        name=name,
        train=pipeline.train_dataset(train_records, num_train, **train_kwargs),
        val=pipeline.eval_dataset(val_records, num_examples=num_val, **eval_kwargs),
        test=pipeline.eval_dataset(test_source.select(test_labels), num_examples=num_test, **eval_kwargs),
        num_classes=len(class_names),
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        image_size=image_size,
        class_names=class_names,
        train_epochs=pipeline.train_epochs(train_records, num_train, **train_kwargs),
    )
