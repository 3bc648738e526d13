"""This process's resident memory (Linux), for the benchmarks on either framework: imports neither."""

import resource


def current_rss_mib():
    """Resident memory now (MiB), or None where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mib():
    """The process's peak resident memory so far (MiB; `ru_maxrss` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
