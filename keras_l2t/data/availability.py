"""Make a TFDS dataset available, or fail within seconds saying how to provide it.

`tfds.load` on a machine that cannot reach the dataset host retries for minutes
before it raises (docs/data-offline.md: 205 s for Stanford Dogs). This module
decides up front, in order:

1. the dataset is already prepared in the data dir: use it, no network;
2. every archive the builder registers is in `<data_dir>/downloads/manual/`
   (TFDS' manual dir): prepare from those files, no network (for the datasets of
   `local_copies`, recompressed copies such as Debian's are accepted too);
3. `download=True` and every archive's host answers a TCP connect within 3 s
   (through the configured HTTP(S) proxy if any): let TFDS download and prepare;
4. a local copy of the archives is installed where `local_copies.DEFAULT_DIRS`
   says (e.g. Debian's `dataset-fashion-mnist`): prepare from it, no network;
5. otherwise raise `DatasetNotFoundError` naming the data dir, the manual dir and
   the archives to put there.
"""

import os
import socket
import threading
import time
import urllib.parse
import urllib.request

from absl import logging
import tensorflow_datasets as tfds

from keras_l2t.data import local_copies
from keras_l2t.errors import InputError

# Upper bound on the whole reachability check (DNS lookup plus TCP connect).
REACHABILITY_TIMEOUT_S = 3.0


class DatasetNotFoundError(InputError, FileNotFoundError):
    """The dataset is neither prepared nor obtainable (no local archives, no network)."""


def manual_dir_of(data_dir_root):
    """TFDS' manual download dir for a data dir: `<data_dir>/downloads/manual`."""
    return os.path.join(os.fspath(data_dir_root), "downloads", "manual")


def _archives(tfds_name):
    """Registered archive file name -> its URLs (a file may have mirror URLs)."""
    archives = {}
    for url, info in (tfds.builder_cls(tfds_name).url_infos or {}).items():
        filename = info.filename or os.path.basename(urllib.parse.urlparse(url).path)
        archives.setdefault(filename, []).append(url)
    return archives


def _endpoint(url):
    """(host, port) that fetching `url` connects to: the proxy if one is configured."""
    parsed = urllib.parse.urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        proxied = urllib.parse.urlparse(proxy if "://" in proxy else "http://" + proxy)
        return proxied.hostname, proxied.port or 80
    default_port = 443 if parsed.scheme == "https" else 80
    return parsed.hostname, parsed.port or default_port


def reachable_endpoints(endpoints, timeout=REACHABILITY_TIMEOUT_S):
    """The subset of (host, port) pairs that accept a TCP connection within `timeout`.

    DNS lookup and connect run in daemon threads because `socket.getaddrinfo` has
    no timeout of its own; the whole check returns after at most `timeout` seconds.
    """
    reachable = set()
    lock = threading.Lock()

    def probe(endpoint):
        if not endpoint[0]:
            return
        try:
            with socket.create_connection(endpoint, timeout=timeout):
                with lock:
                    reachable.add(endpoint)
        except (OSError, ValueError):
            pass

    threads = [threading.Thread(target=probe, args=(e,), daemon=True) for e in set(endpoints)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        return set(reachable)


def _can_download(archives, homepage):
    """Whether every archive has at least one URL whose host (or proxy) answers."""
    url_lists = list(archives.values()) or ([[homepage]] if homepage else [])
    if not url_lists:
        return False
    reachable = reachable_endpoints(_endpoint(url) for urls in url_lists for url in urls)
    return all(any(_endpoint(url) in reachable for url in urls) for urls in url_lists)


def _not_found_message(name, builder, archives, homepage, reason):
    manual_dir = manual_dir_of(builder.data_dir_root)
    lines = [
        f"Dataset {name!r} is not prepared in data_dir {os.fspath(builder.data_dir_root)!r} "
        f"(looked for {os.fspath(builder.data_dir)!r}) and {reason}.",
        "To provide it without network access, put these archives in the TFDS manual dir "
        f"{manual_dir!r} and call again:",
    ]
    for filename, urls in sorted(archives.items()):
        lines.append(f"  {filename}  (from {urls[0]})")
    if homepage:
        lines.append(f"Dataset homepage: {homepage}")
    if name in local_copies.DEBIAN_PACKAGES:
        lines.append(
            f"Or `apt-get install {local_copies.DEBIAN_PACKAGES[name]}` (Debian/Ubuntu), or prepare from a "
            f"directory holding the archives: python -m train.prepare_data --dataset={name} --from_dir=DIR"
        )
    lines.append(
        "Or run once on a machine with internet access (download=True) and copy the prepared "
        f"'{builder.name}' folder into the data dir, or pass data_dir= / set TFDS_DATA_DIR to "
        "where it is prepared."
    )
    return "\n".join(lines)


def prepared_builder(tfds_name, *, data_dir=None, download=True):
    """A TFDS builder whose data is prepared, following the order of the module docstring.

    Args:
        tfds_name: Registered TFDS name, e.g. "stanford_dogs".
        data_dir: TFDS data dir; None means TFDS_DATA_DIR or ~/tensorflow_datasets.
        download: Allow downloading when the host is reachable.

    Raises:
        DatasetNotFoundError: within seconds, when the data cannot be had.
    """
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    archives = _archives(tfds_name)
    homepage = builder.info.homepage
    manual_dir = manual_dir_of(builder.data_dir_root)
    missing = [f for f in archives if not os.path.exists(os.path.join(manual_dir, f))]
    has_manual_dir = os.path.isdir(manual_dir)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir if has_manual_dir else None)
    if archives and not missing:
        if local_copies.supports(tfds_name):  # verifies, and restores recompressed archives
            return local_copies.prepare_from_local_copy(tfds_name, manual_dir, data_dir=builder.data_dir_root)
        builder.download_and_prepare(download_config=config)
        return builder
    if not download:
        reason = "download=False"
    elif not _can_download(archives, homepage):
        reason = f"its download host is unreachable (no TCP connection within {REACHABILITY_TIMEOUT_S:g} s)"
    else:
        builder.download_and_prepare(download_config=config)
        return builder
    local_dir = local_copies.find_local_copy(tfds_name)
    if local_dir is not None:
        logging.warning("%s is not prepared and %s: preparing it from the local copy in %s.", tfds_name, reason,
                        local_dir)
        return local_copies.prepare_from_local_copy(tfds_name, local_dir, data_dir=builder.data_dir_root)
    raise DatasetNotFoundError(_not_found_message(tfds_name, builder, archives, homepage, reason))
