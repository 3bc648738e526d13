"""Fake Stanford Dogs archives in the real layout, and the REAL tfds builder run on them.

The archives (images.tar, lists.tar, annotation.tar) follow docs/data-offline.md
§1.5: all 120 classes are listed in train_list.mat / test_list.mat (the builder
requires 120 label names), but only the first `present_classes` classes have image
files. Files are named `<wnid>_<j>.jpg`, so sorting by name as strings differs from
numeric order (`_10` < `_2`), as with the real data.

Every image is a constant gray whose level encodes its number j (`gray_level`),
which survives JPEG and any resize, so a test can tell which file an example came
from after the pipeline. `prepare_fake_stanford_dogs` runs the real builder with
the local files' checksums (recipe B); afterwards a plain
`tfds.load("stanford_dogs", data_dir=...)` or `load_dataset(..., download=False)`
works with no patch and no network.

The builder silently skips listed files that are not in images.tar, so a fake
with fewer than the real 120 x 100 training and 8,580 test files fails the
official split's checks (`official_splits.official_val_mask`): load it with
split="seeded", or give the test its own split file.
"""

import io
import os
import tarfile
from unittest import mock

import numpy as np
import scipy.io
import tensorflow as tf

NUM_CLASSES = 120


def class_folder(class_id):
    """Archive folder of a fake class, `<wnid>-Breed_<id>` (sorted like the label ids)."""
    return f"n02{100000 + class_id:06d}-Breed_{class_id:03d}"


def file_name(class_id, j):
    """Basename of the j-th fake image of a class: `<wnid>_<j>.jpg`."""
    return f"{class_folder(class_id).split('-')[0]}_{j}.jpg"


def gray_level(j):
    """Gray value (R = G = B) of the j-th image of a class; distinct for j < 112."""
    return 16 + (2 * j) % 224


def file_number_of_level(level):
    """Inverse of `gray_level` for j < 112."""
    return int(round((float(level) - 16) / 2))


def _add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _mat_bytes(items):
    files = np.empty((len(items), 1), dtype=object)
    annotations = np.empty((len(items), 1), dtype=object)
    for k, (path, _) in enumerate(items):
        files[k, 0] = path
        annotations[k, 0] = path[:-4]
    buffer = io.BytesIO()
    labels = np.array([[label] for _, label in items], dtype=np.float64)
    scipy.io.savemat(buffer, {"file_list": files, "annotation_list": annotations, "labels": labels})
    return buffer.getvalue()


def make_fake_archives(out_dir, present_classes=3, train_per_class=100, test_per_class=2, seed=0):
    """Write images.tar, lists.tar and annotation.tar of a tiny Stanford Dogs.

    Args:
        out_dir: Where to write the three archives.
        present_classes: Classes 0..present_classes-1 get image files.
        train_per_class: Training files per class (j = 0..train_per_class-1).
        test_per_class: Test files per class (the following j).
        seed: Seeds the image sizes (24-48 pixels per side).

    Returns:
        {"train": [(relative path, class id)], "test": [...]} of the images written.
    """
    if train_per_class + test_per_class > 112:
        raise ValueError("gray_level encodes at most 112 files per class.")
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    listed = {"train": [], "test": []}
    for class_id in range(NUM_CLASSES):
        for j in range(train_per_class + test_per_class):
            split = "train" if j < train_per_class else "test"
            # The .mat lists hold 1-based labels and `<folder>/<file>` paths.
            listed[split].append((f"{class_folder(class_id)}/{file_name(class_id, j)}", class_id + 1))
    with tarfile.open(os.path.join(out_dir, "lists.tar"), "w") as tar:
        for name, items in [
            ("train_list.mat", listed["train"]),
            ("test_list.mat", listed["test"]),
            ("file_list.mat", listed["train"] + listed["test"]),
        ]:
            _add_bytes(tar, name, _mat_bytes(items))
    written = {"train": [], "test": []}
    with tarfile.open(os.path.join(out_dir, "images.tar"), "w") as images, tarfile.open(
        os.path.join(out_dir, "annotation.tar"), "w"
    ) as annotations:
        for split, items in listed.items():
            for path, label in items:
                class_id = label - 1
                if class_id >= present_classes:
                    continue
                j = int(path.rsplit("_", 1)[1][:-4])
                height, width = (int(v) for v in rng.integers(24, 49, size=2))
                image = np.full((height, width, 3), gray_level(j), dtype=np.uint8)
                _add_bytes(images, "Images/" + path, tf.io.encode_jpeg(image, quality=95).numpy())
                xml = (
                    f"<annotation><filename>{os.path.basename(path)[:-4]}</filename>"
                    f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
                    f"<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
                    f"<xmax>{width - 3}</xmax><ymax>{height - 4}</ymax></bndbox></object></annotation>"
                )
                _add_bytes(annotations, "Annotation/" + path[:-4], xml.encode())
                written[split].append((path, class_id))
    return written


def prepare_fake_stanford_dogs(data_dir, tmp_dir, **archive_kwargs):
    """Prepare `stanford_dogs` in `data_dir` by running the real TFDS builder on fake archives.

    Recipe B of docs/data-offline.md: the builder's registered checksums are
    replaced (only during preparation) by those of the local archives, which are
    passed as the manual dir. Nothing is downloaded.

    Args:
        data_dir: TFDS data dir to prepare into.
        tmp_dir: Where to write the fake archives.
        **archive_kwargs: Passed to `make_fake_archives`.

    Returns:
        `data_dir`, as a string.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums

    tfds.disable_progress_bar()  # Test helper: keep pytest output readable.
    make_fake_archives(tmp_dir, **archive_kwargs)
    builder_cls = tfds.builder_cls("stanford_dogs")
    local_infos = {
        url: checksums.compute_url_info(os.path.join(tmp_dir, info.filename))
        for url, info in builder_cls.url_infos.items()
    }
    with mock.patch.object(builder_cls, "url_infos", local_infos):
        builder = tfds.builder("stanford_dogs", data_dir=os.fspath(data_dir))
        config = tfds.download.DownloadConfig(manual_dir=os.fspath(tmp_dir))
        builder.download_and_prepare(download_config=config)
    return os.fspath(data_dir)
