"""Prepare a TFDS dataset offline from a local copy of its original archives.

Debian's `dataset-fashion-mnist` package installs the four Fashion-MNIST
archives in `/usr/share/datasets/fashion-mnist/`, recompressed with `gzip -n`:
the gzip header lost the file name and the time stamp, so the files no longer
match the sha256 that TFDS registers, and TFDS refuses them. The compressed
stream itself is upstream's. Putting the name and upstream's time stamp back
(recorded in `_UPSTREAM_GZIP_MTIMES`, found by matching the registered sha256)
gives back the upstream archives byte for byte. `prepare_from_local_copy`
does that, checks every archive against the registered size and sha256, and
runs the real TFDS builder on them, as if they had been downloaded: nothing but
the real data can get through.
"""

import hashlib
import os
import shutil
import struct
import tempfile
import urllib.parse

from absl import logging
import tensorflow_datasets as tfds

from keras_l2t.errors import InputError

# Where distribution packages install the archives, and the Debian/Ubuntu package that does.
DEFAULT_DIRS = {"fashion_mnist": ("/usr/share/datasets/fashion-mnist",)}
DEBIAN_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}

# Upstream gzip header time stamps (seconds since the epoch, 2017-08-31 UTC).
_UPSTREAM_GZIP_MTIMES = {
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": 1504176606,
        "train-labels-idx1-ubyte.gz": 1504176606,
        "t10k-images-idx3-ubyte.gz": 1504176627,
        "t10k-labels-idx1-ubyte.gz": 1504176627,
    },
}
SUPPORTED = tuple(_UPSTREAM_GZIP_MTIMES)

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_FNAME = 0x08


class LocalCopyError(InputError):
    """A local copy is missing files, or its files are not the dataset's registered archives."""


def supports(tfds_name):
    """Whether `tfds_name` can be prepared from a local copy."""
    return tfds_name in _UPSTREAM_GZIP_MTIMES


def _registered(tfds_name):
    """Archive file name -> registered `UrlInfo` (size, sha256) of the TFDS builder."""
    infos = {}
    for url, info in tfds.builder_cls(tfds_name).url_infos.items():
        infos[info.filename or os.path.basename(urllib.parse.urlparse(url).path)] = info
    return infos


def restore_gzip_header(data, filename, mtime):
    """`data` (a gzip file without FNAME) with the original file name and time stamp put back.

    The gzip header is magic (2), method (1), flags (1), mtime (4), extra flags
    (1), OS (1), then, with the FNAME flag, the zero-terminated name of the
    uncompressed file; the compressed stream and trailer follow unchanged.
    """
    if len(data) < 10 or data[:2] != _GZIP_MAGIC or data[2] != 8:
        raise LocalCopyError(f"{filename} is not a gzip (deflate) file.")
    if data[3] != 0:
        raise LocalCopyError(f"{filename} has gzip header flags {data[3]:#x}; expected none (gzip -n).")
    name = filename[: -len(".gz")] if filename.endswith(".gz") else filename
    header = _GZIP_MAGIC + bytes([8, _GZIP_FNAME]) + struct.pack("<I", mtime) + data[8:10]
    return header + name.encode("latin-1") + b"\0" + data[10:]


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def upstream_archive(tfds_name, path):
    """The registered archive at `path`, as bytes: as it is, or with its gzip header restored.

    Raises:
        LocalCopyError: the file is neither the registered archive nor a
            recompressed copy of it.
    """
    filename = os.path.basename(path)
    expected = _registered(tfds_name)[filename]
    with open(path, "rb") as f:
        data = f.read()
    candidates = [data]
    mtime = _UPSTREAM_GZIP_MTIMES[tfds_name].get(filename)
    if mtime is not None and data[:2] == _GZIP_MAGIC and len(data) > 3 and data[3] == 0:
        candidates.append(restore_gzip_header(data, filename, mtime))
    for candidate in candidates:
        if len(candidate) == expected.size and _sha256(candidate) == expected.checksum:
            return candidate
    raise LocalCopyError(
        f"{path} is not {tfds_name}'s archive {filename}: expected {expected.size} bytes with sha256 "
        f"{expected.checksum} (as registered by TFDS), got {len(data)} bytes with sha256 {_sha256(data)}."
    )


def find_local_copy(tfds_name, dirs=None):
    """The first of `dirs` (default: `DEFAULT_DIRS`) holding every archive of `tfds_name`, or None."""
    if not supports(tfds_name):
        return None
    filenames = list(_registered(tfds_name))
    for directory in DEFAULT_DIRS.get(tfds_name, ()) if dirs is None else dirs:
        if all(os.path.isfile(os.path.join(directory, f)) for f in filenames):
            return os.fspath(directory)
    return None


def prepare_from_local_copy(tfds_name, from_dir, data_dir=None):
    """Runs the real TFDS builder of `tfds_name` on the archives in `from_dir`; returns the builder.

    Each archive is verified (restored first if it was recompressed) and written to
    a temporary manual dir inside the data dir, which is removed afterwards; TFDS
    checks the registered checksums again while preparing. No network is used.

    Args:
        tfds_name: A name in `SUPPORTED`, e.g. "fashion_mnist".
        from_dir: Directory with the archives under their registered names.
        data_dir: TFDS data dir (default TFDS_DATA_DIR or ~/tensorflow_datasets).

    Raises:
        LocalCopyError: unsupported dataset, missing archives, or files that are
            not the registered archives.
    """
    if not supports(tfds_name):
        raise LocalCopyError(f"No local-copy preparation for {tfds_name!r}; supported: {list(SUPPORTED)}.")
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    filenames = sorted(_registered(tfds_name))
    missing = [f for f in filenames if not os.path.isfile(os.path.join(from_dir, f))]
    if missing:
        raise LocalCopyError(f"{from_dir} lacks {tfds_name} archive(s) {missing} (needs {filenames}).")
    archives = {f: upstream_archive(tfds_name, os.path.join(from_dir, f)) for f in filenames}
    logging.info("Preparing %s in %s from the local copy in %s (offline).", tfds_name, builder.data_dir, from_dir)
    root = os.fspath(builder.data_dir_root)
    os.makedirs(root, exist_ok=True)
    manual_dir = tempfile.mkdtemp(prefix=f"{tfds_name}_local_copy_", dir=root)
    try:
        for filename, data in archives.items():
            with open(os.path.join(manual_dir, filename), "wb") as f:
                f.write(data)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    finally:
        shutil.rmtree(manual_dir, ignore_errors=True)
    return builder
