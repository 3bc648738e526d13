"""Shared pytest fixtures."""

import os

# oneDNN halves CPU step time where TensorFlow leaves it off (docs/method.md §4.8);
# it must be set before TensorFlow is first imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=wrong-import-position

from tests import fake_tfds  # pylint: disable=wrong-import-position
from tests.fake_stanford_dogs import prepare_fake_stanford_dogs  # pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def fake_dogs_data_dir(tmp_path_factory):
    """A TFDS data dir where the real `stanford_dogs` builder was run on fake archives.

    3 classes have files (100 train + 2 test each, see tests/fake_stanford_dogs.py);
    built once per session. Use as `load_dataset("stanford_dogs", data_dir=...,
    download=False)` or `--data_dir=...` for train.main.
    """
    return prepare_fake_stanford_dogs(
        tmp_path_factory.mktemp("tfds_data"), tmp_path_factory.mktemp("fake_dogs_archives")
    )


@pytest.fixture(scope="session")
def fake_cifar100_data_dir(tmp_path_factory):
    """A TFDS data dir where the real `cifar100` builder was run on a generated archive.

    300 train and 20 test images (`tests/fake_tfds.py`): image i has red value
    i % 256, green i // 256 and fine label i % 100; tfds' id is `train_<i>`.
    """
    archive_dir = tmp_path_factory.mktemp("cifar100_archive")
    fake_tfds.write_fake_cifar100(archive_dir)
    return fake_tfds.prepare_with_real_builder("cifar100", archive_dir, tmp_path_factory.mktemp("cifar100_data"))


@pytest.fixture
def float64():
    """Every layer built inside the test computes in float64 (Keras' floatx and global dtype policy)."""
    import keras  # pylint: disable=import-outside-toplevel

    # Both: layers take the global dtype policy, which caches floatx on first use.
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
