"""The dataset registry and `load_dataset`: train / val / test tf.data pipelines.

Every dataset is read the way the official L2T-ww code reads it (docs/method.md §4.4,
§8): ImageNet normalisation everywhere; RandomResizedCrop + flip at 224 for the
fine-grained datasets; pad-4 random crop (+ flip for natural images) at 32.
Validation is carved out of the training set: by default the authors' split
where it exists and can be matched to TFDS (Stanford Dogs, CUB-200, CIFAR-100;
matched and checked in `official_splits.py`), otherwise a seeded, class-balanced
`val_fraction` of each class. Image folders pick the 32x32 or the 224 setting from
their images' size.

TFDS datasets are looked up in `data_dir` (default: TFDS_DATA_DIR or
~/tensorflow_datasets). Without network access, place the builder's archives in
`<data_dir>/downloads/manual/` (for stanford_dogs: images.tar, lists.tar and
annotation.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/); when the
data is missing and cannot be fetched, `DatasetNotFoundError` is raised within
seconds (see `availability.py`).
"""

import dataclasses
from typing import Callable

from absl import logging
import numpy as np
import tensorflow as tf

from keras_l2t.data import official_splits, pipeline, preprocessing, sources, splits
from keras_l2t.data.availability import prepared_builder
from keras_l2t.errors import InputError

FOLDER_PREFIX = "folder:"

# Values of `load_dataset(augmentation=...)`; see `DatasetSpec.augmentation`.
AUGMENTATIONS = ("imagenet", "cifar", "pad_crop", "none")
# Values of `load_dataset(split=...)`.
SPLITS = ("official", "seeded")
# A folder whose sampled images are at most this many pixels on the longer side
# gets the 32x32 setting; it looks at up to FOLDER_SAMPLE_FILES training files.
SMALL_IMAGE_MAX_SIDE = 64
FOLDER_SAMPLE_FILES = 8


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one dataset is read, split and augmented.

    Attributes:
        tfds_name: TFDS builder name, or None for datasets read otherwise.
        image_size: Default side length of the model input.
        augmentation: "imagenet" (RandomResizedCrop + flip; resize 256 / centre-crop
            224 for eval), "cifar" (pad 4, random crop, flip), "pad_crop" (pad 4,
            random crop, no flip) or "none" (resize only); all but "imagenet"
            evaluate on the resized image.
        official_split: Name of the authors' split file (`official_splits.SPLIT_NAMES`),
            or None where there is none.
        test_split: TFDS split used as the test set.
        cache: Keep decoded, resized uint8 images in memory (small datasets).
    """

    tfds_name: str | None
    image_size: int
    augmentation: str
    official_split: str | None = None
    test_split: str = "test"
    cache: bool = False


DATASETS = {
    "digits": DatasetSpec(None, 32, "pad_crop", cache=True),
    "stanford_dogs": DatasetSpec("stanford_dogs", 224, "imagenet", official_split="dog"),
    "caltech_birds2011": DatasetSpec("caltech_birds2011", 224, "imagenet", official_split="cub200"),
    "cifar10": DatasetSpec("cifar10", 32, "cifar", cache=True),
    "cifar100": DatasetSpec("cifar100", 32, "cifar", cache=True, official_split="cifar100"),
    "stl10": DatasetSpec("stl10", 32, "cifar", cache=True, official_split="stl10"),
    "fashion_mnist": DatasetSpec("fashion_mnist", 32, "cifar", cache=True),
    "mnist": DatasetSpec("mnist", 32, "pad_crop", cache=True),
}
FOLDER_SPEC = DatasetSpec(None, 224, "imagenet")  # folders of large images
SMALL_FOLDER_SPEC = DatasetSpec(None, 32, "cifar", cache=True)  # folders of small images
DATASET_NAMES = tuple(DATASETS)


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    """The three splits of a dataset, ready for `Model.fit` / `evaluate`.

    `train` is shuffled every epoch, augmented and batched with the last partial
    batch dropped; `val` and `test` use the eval transform, in a fixed order. All
    yield (float32 NHWC ImageNet-normalised images, int32 labels).
    `train_epochs(first_epoch, num_epochs, steps_per_epoch=None)` is the training
    stream keyed by epoch (see `pipeline.train_epochs`): what resumable runs use.
    `class_names` name the labels 0..num_classes-1 (after `classes` relabelling);
    `eval_resize` says how val/test images are resized, as `keras_l2t.export`
    takes it: "imagenet" (shorter side to 256/224 of image_size, centre crop) or
    "small" (stretched to image_size x image_size).
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
    eval_resize: str = "small"


def _largest_side(paths):
    """The longest side, in pixels, among the images at `paths` that decode (a few files only), or None."""
    sides = []
    for path in paths:
        try:
            sides.append(max(pipeline.decode(tf.io.read_file(path)).shape[:2]))
        except tf.errors.InvalidArgumentError:
            pass  # a damaged file is reported when the pipeline reads it
    return max(sides) if sides else None


def _folder_choice(train_source, augmentation=None):
    """(spec, reason) of a folder dataset: explicit `augmentation`, else the size of a few sampled images."""
    if augmentation in ("imagenet", "cifar", "pad_crop"):
        spec = FOLDER_SPEC if augmentation == "imagenet" else SMALL_FOLDER_SPEC
        reason = f"augmentation={augmentation!r} was asked for"
    else:
        paths = train_source.images
        sample = paths[np.unique(np.linspace(0, len(paths) - 1, FOLDER_SAMPLE_FILES).astype(int))]
        side = _largest_side(sample)
        small = side is not None and side <= SMALL_IMAGE_MAX_SIDE
        spec = SMALL_FOLDER_SPEC if small else FOLDER_SPEC
        relation = "<=" if small else ">"
        reason = (
            f"the longest side of {len(sample)} sampled images is {side} px ({relation} {SMALL_IMAGE_MAX_SIDE})"
            if side is not None
            else f"none of {len(sample)} sampled images could be decoded"
        )
    if augmentation is not None:
        spec = dataclasses.replace(spec, augmentation=augmentation)
    return spec, reason


def folder_spec(name, train_source, augmentation=None):
    """The setting of a folder dataset, and log one line saying which and why.

    An explicit `augmentation` decides ("imagenet": the 224 setting, "cifar" /
    "pad_crop": the 32x32 one); otherwise up to `FOLDER_SAMPLE_FILES` training
    images, spread over the classes, are measured: at most `SMALL_IMAGE_MAX_SIDE`
    pixels on the longer side gives the 32x32 setting, anything larger the 224 one.
    """
    spec, reason = _folder_choice(train_source, augmentation)
    logging.info(
        "%s: the %dx%d setting (%s augmentation) because %s; pass image_size / augmentation to change it.",
        name, spec.image_size, spec.image_size, spec.augmentation, reason,
    )
    return spec


def folder_setting(name, augmentation=None, skip_unreadable=False):
    """(default image side, reason) of the folder dataset `name` (`folder:PATH`): 32 for small images, else 224.

    What `load_dataset` will choose (see `folder_spec`), decided before loading,
    so that an entry point can pick the matching networks and say why.
    """
    train_source, _ = sources.folder_sources(name[len(FOLDER_PREFIX) :], skip_unreadable)
    spec, reason = _folder_choice(train_source, augmentation)
    return spec.image_size, reason


def _spec_and_sources(name, data_dir, download, skip_unreadable=False, augmentation=None):
    if augmentation is not None and augmentation not in AUGMENTATIONS:
        raise InputError(f"Unknown augmentation {augmentation!r}; valid: {', '.join(AUGMENTATIONS)}.")
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        if not path:
            raise InputError("A folder dataset needs a path: 'folder:PATH'.")
        train_source, test_source = sources.folder_sources(path, skip_unreadable)
        return folder_spec(name, train_source, augmentation), train_source, test_source
    if name not in DATASETS:
        valid = ", ".join(DATASET_NAMES)
        raise InputError(f"Unknown dataset {name!r}; valid names: {valid}, or 'folder:PATH'.")
    spec = DATASETS[name]
    if augmentation is not None:
        spec = dataclasses.replace(spec, augmentation=augmentation)
    if spec.tfds_name is None:
        return spec, *sources.digits_sources()
    builder = prepared_builder(spec.tfds_name, data_dir=data_dir, download=download)
    return spec, sources.TfdsSource(builder, "train"), sources.TfdsSource(builder, spec.test_split)


def _transforms(spec, image_size, augment, reads_files=False):
    """(prepare, train augmentation, eval transform) for a dataset spec."""
    if reads_files:

        def decode(path):
            return pipeline.decode(tf.io.read_file(path))

    else:
        decode = pipeline.decode

    if spec.augmentation == "imagenet":
        prepare = decode

        def augment_fn(image, seed):
            return preprocessing.imagenet_train(image, image_size, seed)

        def eval_fn(image):
            return preprocessing.imagenet_eval(image, image_size)

    else:

        def resize_only(image, size, seed):
            del seed  # "none": no augmentation beyond the resize
            return preprocessing.small_eval(image, size)

        small_train = {
            "cifar": preprocessing.cifar_train, "pad_crop": preprocessing.pad_crop_train, "none": resize_only
        }
        train_fn = small_train[spec.augmentation]

        def prepare(image):
            # Resized once (and cached) as uint8, like the official PIL pipeline.
            resized = preprocessing.resize(decode(image), image_size)
            return tf.saturate_cast(tf.round(resized), tf.uint8)

        def augment_fn(image, seed):
            return train_fn(image, image_size, seed)

        def eval_fn(image):
            return preprocessing.small_eval(image, image_size)

    def eval_as_train(image, seed):
        del seed  # No augmentation: training examples get the eval transform.
        return eval_fn(image)

    return prepare, (augment_fn if augment else eval_as_train), eval_fn


_warned_unmatched = set()


def default_split(name):
    """The split `name` gets when none is asked for: "official" where its TFDS examples can be matched to it."""
    spec = DATASETS.get(name)
    return "official" if spec is not None and spec.official_split in official_splits.MATCHABLE else "seeded"


def _resolved_split(name, spec, split):
    """"official" or "seeded": what `split` (None: `default_split`) means for this dataset."""
    if split is not None and split not in SPLITS:
        raise InputError(f"Unknown split {split!r}; valid: {', '.join(SPLITS)}.")
    unmatchable = spec.official_split is not None and spec.official_split not in official_splits.MATCHABLE
    if split == "official" and spec.official_split is None:
        raise InputError(f"Dataset {name!r} has no official split; use split='seeded'.")
    if split == "official" and unmatchable:
        raise InputError(
            f"{name}'s official split cannot be matched to TFDS' examples (they carry no id or file name); "
            "use split='seeded'."
        )
    if unmatchable and name not in _warned_unmatched:
        _warned_unmatched.add(name)
        logging.warning(
            "%s: the seeded class-balanced split (the official split cannot be matched to TFDS' examples, "
            "which carry no id).", name,
        )
    if split is None:
        return "official" if spec.official_split is not None and not unmatchable else "seeded"
    return split


def _official_val_mask(name, spec, train_source, test_source):
    """The authors' validation examples of `train_source`, matched and checked by `official_splits`."""
    positions = official_splits.train_positions(spec.official_split, train_source, name)
    return official_splits.official_val_mask(
        official_splits.load_official_split(spec.official_split),
        positions,
        train_source.labels,
        num_test=test_source.num_examples,
        num_classes=len(train_source.class_names),
        dataset=name,
        class_names=train_source.class_names,
    )


def _masks(name, spec, split, train_source, test_source, seed, val_fraction, train_examples_per_class):
    """(train mask, val mask) over the training source."""
    labels = train_source.labels
    if split == "official":
        val_mask = _official_val_mask(name, spec, train_source, test_source)
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
    split=None,
    augmentation=None,
):
    """Train / val / test pipelines of a registered dataset or an image folder.

    Args:
        name: One of `DATASET_NAMES`, or "folder:PATH" for
            PATH/{train,test}/<class>/<image files>.
        data_dir: TFDS data dir (default TFDS_DATA_DIR or ~/tensorflow_datasets);
            archives for offline preparation go in `<data_dir>/downloads/manual/`.
        image_size: Side of the model input; default per dataset (224 or 32; for
            a folder, 32 when its images are small, see `folder_spec`).
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
            by the seeded split (the official splits fix their own).
        augment: Apply the training augmentation (else the eval transform).
        download: Allow TFDS to download when the host is reachable.
        skip_unreadable_images: In a folder dataset, leave out (with a warning)
            files that are not images instead of raising.
        split: "official" (the authors' train / val split, verified against the
            TFDS examples; test is TFDS' test split) or "seeded" (`val_fraction`
            of each class, drawn with `seed`). Default: official for
            stanford_dogs, caltech_birds2011 and cifar100; seeded otherwise
            (stl10's official split cannot be matched: a warning says so).
        augmentation: One of `AUGMENTATIONS` (see `DatasetSpec`); default per
            dataset, for folders from the images' size.

    Returns:
        A `DatasetSplits`.

    Raises:
        ValueError: unknown name, bad arguments, or fewer training examples than
            `batch_size`; `InputError` (a ValueError) for a bad `split` or
            `augmentation`, or an official split that does not match the data.
        DatasetNotFoundError: the data is missing and cannot be fetched.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    spec, train_source, test_source = _spec_and_sources(
        name, data_dir, download, skip_unreadable_images, augmentation
    )
    image_size = image_size or spec.image_size
    class_names = train_source.class_names
    split = _resolved_split(name, spec, split)
    train_mask, val_mask = _masks(
        name, spec, split, train_source, test_source, seed, val_fraction, train_examples_per_class
    )

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
        raise InputError(
            f"Dataset {name!r} has {num_train} training examples, fewer than batch_size={batch_size}: "
            "with drop_remainder=True the training set would be empty. Lower batch_size."
        )

    prepare, augment_fn, eval_fn = _transforms(spec, image_size, augment, train_source.reads_files)
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
        eval_resize="imagenet" if spec.augmentation == "imagenet" else "small",
    )
