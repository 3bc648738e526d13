"""TensorFlow start-up for the entry points: without the C++ start-up notices, unless asked for.

TensorFlow ≥ 2.20 writes its start-up lines (oneDNN notice, "could not find
cuda drivers", cuInit errors on CPU-only machines, cuDNN/cuBLAS factory
registration, absl's "before InitializeLog" warning) from C++ before its log
level is read, so `TF_CPP_MIN_LOG_LEVEL` cannot hide them, and each appears
twice (once per TF shared library). `start_tensorflow` imports TensorFlow and
lists its devices (where cuInit runs) with file descriptor 2 captured, then
writes back every captured line that is not one of those notices: errors and
warnings of any other kind still show. `TF_CPP_MIN_LOG_LEVEL=0` shows them all.
"""

import contextlib
import os
import re
import sys
import tempfile

# The C++ notices of a normal start, matched per line.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc:\d+\]"
    r"|cudart_stub\.cc:\d+\]"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cuda_(?:dnn|blas|fft)\.cc:\d+\] Unable to register cu\w+ factory"
    r"|computation_placer\.cc:\d+\] computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)


def _set_defaults():
    # oneDNN halves CPU step time where TF leaves it off (docs/internals.md); it must be set before the import.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


@contextlib.contextmanager
def filtered_stderr(noise=STARTUP_NOISE):
    """Captures file descriptor 2 (C++ and Python writes alike); writes back the lines `noise` does not match."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line for line in captured.read().decode("utf-8", errors="replace").splitlines(keepends=True)
                if not noise.search(line)
            ]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def start_tensorflow():
    """Imports TensorFlow and finds its devices, quietly (call before anything imports TensorFlow)."""
    _set_defaults()
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    with filtered_stderr():
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        tf.config.list_physical_devices()  # runs cuInit (before any strategy or op: allowed for every strategy)
