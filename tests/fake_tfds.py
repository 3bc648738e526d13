"""Small TFDS datasets made offline by running the real TFDS builders on generated archives (recipe B)."""

import io
import tarfile

import numpy as np


def prepare_with_real_builder(tfds_name, archive_dir, data_dir):
    """Run the real TFDS builder on generated archives in `archive_dir` (recipe B); returns data_dir."""
    from unittest import mock

    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums

    builder_cls = tfds.builder_cls(tfds_name)
    local = {
        url: checksums.compute_url_info(archive_dir / info.filename)
        for url, info in builder_cls.url_infos.items()
    }
    with mock.patch.object(builder_cls, "url_infos", local):
        tfds.builder(tfds_name, data_dir=str(data_dir)).download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(archive_dir))
        )
    return str(data_dir)


CIFAR100_TRAIN, CIFAR100_TEST = 300, 20


def write_fake_cifar100(archive_dir):
    """cifar-100-binary.tar.gz in the real layout; image i has R = i % 256, G = i // 256, label i % 100."""

    def records(count):
        out = []
        for i in range(count):
            image = np.zeros((3, 32, 32), np.uint8)
            image[0], image[1] = i % 256, i // 256
            out.append(bytes([(i % 100) // 5, i % 100]) + image.tobytes())  # coarse label, fine label
        return b"".join(out)

    files = {
        "train.bin": records(CIFAR100_TRAIN),
        "test.bin": records(CIFAR100_TEST),
        "coarse_label_names.txt": "\n".join(f"coarse_{c}" for c in range(20)).encode(),
        "fine_label_names.txt": "\n".join(f"fine_{c}" for c in range(100)).encode(),
    }
    with tarfile.open(archive_dir / "cifar-100-binary.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("cifar-100-binary/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
