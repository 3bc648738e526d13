"""Offline preparation of the real Fashion-MNIST from local archives (keras_l2t/data/local_copies.py)."""

import gzip
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_l2t.data import availability, load_dataset, local_copies

DEBIAN_DIR = local_copies.DEFAULT_DIRS["fashion_mnist"][0]
ARCHIVES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
needs_debian_files = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(DEBIAN_DIR, f)) for f in ARCHIVES),
    reason=f"the real Fashion-MNIST archives are not in {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)",
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gzip(payload, filename, mtime):
    buffer = io.BytesIO()
    with gzip.GzipFile(filename=filename, mode="wb", fileobj=buffer, mtime=mtime) as f:
        f.write(payload)
    return buffer.getvalue()


def test_restore_gzip_header_gives_back_the_original_bytes():
    payload = np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes()
    original = _gzip(payload, "data-idx1-ubyte", 1504176627)
    stripped = _gzip(payload, "", 0)  # what `gzip -n` writes: no name, no time stamp
    assert stripped != original and len(original) - len(stripped) == len("data-idx1-ubyte\0")
    restored = local_copies.restore_gzip_header(stripped, "data-idx1-ubyte.gz", 1504176627)
    assert restored == original
    assert gzip.decompress(restored) == payload


def test_files_that_are_not_the_registered_archives_are_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ARCHIVES:  # right names and format, wrong content (as an MNIST copy would be)
        (src / name).write_bytes(_gzip(b"\0\0\x08\x01" + bytes(100), "", 0))
    with pytest.raises(local_copies.LocalCopyError, match="sha256"):
        local_copies.prepare_from_local_copy("fashion_mnist", str(src), data_dir=str(tmp_path / "data"))
    assert not (tmp_path / "data" / "fashion_mnist").exists()
    with pytest.raises(local_copies.LocalCopyError, match="lacks"):
        local_copies.prepare_from_local_copy("fashion_mnist", str(tmp_path), data_dir=str(tmp_path / "data"))
    with pytest.raises(local_copies.LocalCopyError, match="No local-copy"):
        local_copies.prepare_from_local_copy("cifar10", str(src), data_dir=str(tmp_path / "data"))


@needs_debian_files
def test_a_corrupted_debian_copy_is_refused(tmp_path):
    with open(os.path.join(DEBIAN_DIR, ARCHIVES[3]), "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / ARCHIVES[3]).write_bytes(bytes(data))
    with pytest.raises(local_copies.LocalCopyError, match="sha256"):
        local_copies.upstream_archive("fashion_mnist", str(tmp_path / ARCHIVES[3]))
    # The intact file is restored to the registered upstream archive.
    restored = local_copies.upstream_archive("fashion_mnist", os.path.join(DEBIAN_DIR, ARCHIVES[3]))
    assert gzip.decompress(restored)[:8] == b"\0\0\x08\x01\0\0\x27\x10"  # idx1 magic, 10,000 labels


def test_prepared_builder_falls_back_to_an_installed_local_copy(tmp_path, monkeypatch):
    local = tmp_path / "installed"
    local.mkdir()
    for name in ARCHIVES:
        (local / name).write_bytes(b"x")
    calls = []

    def fake_prepare(tfds_name, from_dir, data_dir=None):
        calls.append((tfds_name, from_dir, os.fspath(data_dir)))
        return "builder"

    monkeypatch.setitem(local_copies.DEFAULT_DIRS, "fashion_mnist", (str(tmp_path / "absent"), str(local)))
    monkeypatch.setattr(local_copies, "prepare_from_local_copy", fake_prepare)
    data_dir = str(tmp_path / "data")
    assert availability.prepared_builder("fashion_mnist", data_dir=data_dir, download=False) == "builder"
    assert calls == [("fashion_mnist", str(local), data_dir)]
    # Without a local copy it still fails fast, and says how to bring one.
    monkeypatch.setitem(local_copies.DEFAULT_DIRS, "fashion_mnist", (str(tmp_path / "absent"),))
    with pytest.raises(availability.DatasetNotFoundError, match="train.prepare_data --dataset=fashion_mnist"):
        availability.prepared_builder("fashion_mnist", data_dir=data_dir, download=False)


@needs_debian_files
def test_prepare_data_cli_then_load_the_real_fashion_mnist(tmp_path):
    data_dir = str(tmp_path / "tfds")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, "-m", "train.prepare_data", "--dataset=fashion_mnist", f"--from_dir={DEBIAN_DIR}",
         f"--data_dir={data_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "(test 10000, train 60000)" in run.stdout
    assert not os.path.exists(os.path.join(data_dir, "downloads", "manual"))  # the temporary copies are gone

    splits = load_dataset("fashion_mnist", data_dir=data_dir, download=False, classes=[5, 6, 7, 8, 9],
                          train_examples_per_class=10, batch_size=10, seed=0)
    assert splits.class_names == ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert (splits.num_classes, splits.num_train, splits.num_val, splits.num_test) == (5, 50, 3000, 5000)
    images, labels = next(iter(splits.train))
    assert images.shape == (10, 32, 32, 3) and set(labels.numpy()) <= set(range(5))
    test_labels = np.concatenate([y.numpy() for _, y in splits.test])
    np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 5)
