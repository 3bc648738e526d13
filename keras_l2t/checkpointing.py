"""A run directory that survives being killed: atomic checkpoints, one run at a time, same flags.

`TrainingCheckpoint` saves, after every epoch, everything training depends on:
the model's variables (target, regressors, meta-networks, and both optimizers'
slots and iteration counts, hence the learning-rate schedule position), the
epoch counter and the callbacks' bookkeeping (best validation). The data
stream is keyed by epoch (`DatasetSplits.train_epochs`), so no random state
needs saving. A checkpoint is a directory `ckpt-EEEEE/` written in full and
then published by atomically replacing `checkpoint.json`: a kill at any moment
leaves the previous checkpoint loadable. A checkpoint is never written from
non-finite variables.

`RunDirectory` makes a model_dir belong to one run: an exclusive lock
(`filelock`: flock on Unix, msvcrt on Windows, so the OS releases it when the
process dies, even by SIGKILL; its file is removed when the run ends, and one
left by a killed run does not block the next) and a guard that refuses flags
differing from the saved `flags.json`.
"""

import contextlib
import json
import os
import shutil
import tempfile

import filelock
import keras
import numpy as np

from keras_l2t.errors import InputError

POINTER = "checkpoint.json"
FLAGS_FILE = "flags.json"
RESULTS_FILE = "results.json"
LOCK_FILE = ".lock"


class RunDirectoryError(InputError):
    """The model_dir cannot be used for this run (in use, other flags, not a run directory)."""


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, meta-gradient or variable."""


def write_json(path, payload):
    """Writes JSON atomically: a reader sees the old file or the new one, never a partial one."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def non_finite_variables(variables):
    """Paths of the variables holding NaN or infinity."""
    return [v.path for v in variables if not np.all(np.isfinite(np.asarray(v.numpy())))]


class RunDirectory:
    """One run's model_dir: its lock, its flags, and what it holds.

    Args:
        path: The model_dir.
        ignored_flags: Flag names that may differ between a run and its resumption
            (e.g. verbosity, where the data lives).
    """

    def __init__(self, path, ignored_flags=("verbose", "data_dir")):
        self.path = path
        self.ignored_flags = tuple(ignored_flags)
        self._lock = None

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def finished(self):
        return os.path.exists(self.file(RESULTS_FILE))

    def saved_flags(self):
        path = self.file(FLAGS_FILE)
        return read_json(path) if os.path.exists(path) else None

    def check_flags(self, flags, defaults=None, overwrite=False):
        """Raises RunDirectoryError if the directory is not a run directory, or holds another run's flags.

        Args:
            flags: This run's flags (a JSON-compatible dict).
            defaults: Values of flags that older flags.json files may lack.
            overwrite: Accept other flags (the run will start over); a directory
                that is not a run directory is still refused, never cleared.
        """
        if not os.path.isdir(self.path):
            return
        saved = self.saved_flags()
        if saved is None:
            # Runs nested in it (e.g. an auto-pretrained source/) are fine; anything else is not ours.
            leftovers = [
                n for n in os.listdir(self.path)
                if n != LOCK_FILE and not os.path.exists(os.path.join(self.path, n, FLAGS_FILE))
            ]
            if leftovers:
                raise RunDirectoryError(
                    f"--model_dir {self.path} is not empty and holds no flags.json, so it is not a "
                    "keras-l2t run directory: choose a new or empty --model_dir."
                )
            return
        if overwrite:
            return
        current = json.loads(json.dumps(flags))
        saved = {**(defaults or {}), **saved}
        differ = sorted(
            name
            for name in set(saved) | set(current)
            if name not in self.ignored_flags and saved.get(name) != current.get(name)
        )
        if differ:
            details = ", ".join(f"{n}: saved {saved.get(n)!r}, now {current.get(n)!r}" for n in differ[:4])
            more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
            raise RunDirectoryError(
                f"--model_dir {self.path} holds a run with other flags ({details}{more}): rerun with the "
                "same flags to resume it, choose another --model_dir, or pass --overwrite to start over."
            )

    def acquire(self):
        """Creates the directory and takes its exclusive lock (held until `release` or exit).

        Raises:
            RunDirectoryError: another process holds the lock (refused at once, no waiting).
        """
        os.makedirs(self.path, exist_ok=True)
        lock = filelock.FileLock(self.file(LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RunDirectoryError(
                f"--model_dir {self.path} is in use by a running training ({self._lock_owner()}): wait for "
                "it to finish or choose another --model_dir."
            ) from None
        # Who holds it, for the message above; best effort (Windows forbids writing a locked byte range).
        with contextlib.suppress(OSError), open(self.file(LOCK_FILE), "w", encoding="utf-8") as f:
            f.write(f"pid {os.getpid()}\n")
        self._lock = lock
        return self

    def _lock_owner(self):
        with contextlib.suppress(OSError), open(self.file(LOCK_FILE), encoding="utf-8") as f:
            return f.read().strip() or "another process"
        return "another process"

    def release(self):
        """Removes the lock file, then releases the lock (a no-op if not held)."""
        if self._lock is None:
            return
        # Unlinked while still held, so no other process can take a lock on a file about to vanish
        # (filelock discards a lock taken on an unlinked file). Windows cannot unlink an open file:
        # filelock removes it there after releasing.
        with contextlib.suppress(OSError):
            os.remove(self.file(LOCK_FILE))
        self._lock.release()
        self._lock = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()

    def clear(self):
        """Deletes everything in the directory but the lock (for --overwrite); needs the lock."""
        if self._lock is None:
            raise RuntimeError("clear() needs the directory's lock: call acquire() first.")
        for name in os.listdir(self.path):
            if name == LOCK_FILE:
                continue
            path = self.file(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


class TemporaryRunDirectory(RunDirectory):
    """A new run directory under the system's temporary directory, deleted when released.

    Where a worker other than the chief of a multi-worker run writes: every
    worker runs the same saves (TensorFlow reads some variables with collectives,
    which need all workers), and only the chief's files are kept.
    """

    def __init__(self):
        super().__init__(None)

    def acquire(self):
        self.path = tempfile.mkdtemp(prefix="keras_l2t_worker_")
        return super().acquire()

    def release(self):
        super().release()
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


def latest_checkpoint(model_dir):
    """(checkpoint directory, its state dict) of the last published checkpoint, or None."""
    pointer = os.path.join(model_dir, POINTER)
    if not os.path.exists(pointer):
        return None
    name = read_json(pointer)["checkpoint"]
    directory = os.path.join(model_dir, name)
    return directory, read_json(os.path.join(directory, "state.json"))


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the full training state after every epoch, atomically; `restore` loads it back.

    Args:
        model_dir: The run directory.
        stateful_callbacks: Callbacks with `get_state()` / `set_state(dict)` whose
            bookkeeping is saved with the model (e.g. `BestValidationTracker`).
        linked_files: Files of model_dir that belong to the state (e.g. the best
            network so far): hard-linked into each checkpoint and put back by
            `restore`, so they always match the restored bookkeeping.
        restore_dir: Where `restore` reads the last checkpoint from (default
            model_dir). A non-chief worker of a multi-worker run saves to a
            temporary model_dir and restores from the chief's.
    """

    def __init__(self, model_dir, stateful_callbacks=(), linked_files=(), restore_dir=None):
        super().__init__()
        self.model_dir = model_dir
        self.stateful_callbacks = list(stateful_callbacks)
        self.linked_files = list(linked_files)
        self.restore_dir = restore_dir or model_dir

    def on_epoch_end(self, epoch, logs=None):
        bad = non_finite_variables(self.model.variables)
        if bad:
            raise NonFiniteError(
                f"epoch {epoch + 1} ended with non-finite variables ({', '.join(bad[:3])}); no checkpoint "
                "was written from them."
            )
        self.save(epoch + 1)

    def save(self, epochs_completed):
        name = f"ckpt-{epochs_completed:05d}"
        final = os.path.join(self.model_dir, name)
        tmp = f"{final}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self.model.save_weights(os.path.join(tmp, "state.weights.h5"))
        for filename in self.linked_files:
            source = os.path.join(self.model_dir, filename)
            if os.path.exists(source):
                os.link(source, os.path.join(tmp, filename))
        state = {
            "epochs_completed": epochs_completed,
            "callbacks": {type(c).__name__: c.get_state() for c in self.stateful_callbacks},
        }
        write_json(os.path.join(tmp, "state.json"), state)
        _fsync_directory(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_json(os.path.join(self.model_dir, POINTER), {"checkpoint": name})
        _fsync_directory(self.model_dir)
        for other in os.listdir(self.model_dir):
            if other.startswith("ckpt-") and other != name:
                shutil.rmtree(os.path.join(self.model_dir, other), ignore_errors=True)

    def restore(self):
        """Loads the last checkpoint (of restore_dir) into the model and callbacks; returns its epochs (0: none)."""
        found = latest_checkpoint(self.restore_dir)
        if found is None:
            return 0
        directory, state = found
        self.model.load_weights(os.path.join(directory, "state.weights.h5"))
        for callback in self.stateful_callbacks:
            # A callback that a checkpoint of an earlier version did not save starts afresh.
            callback.set_state(state["callbacks"].get(type(callback).__name__, {}))
        for filename in self.linked_files:
            saved, live = os.path.join(directory, filename), os.path.join(self.model_dir, filename)
            if os.path.exists(saved):
                tmp = f"{live}.tmp{os.getpid()}"
                shutil.copyfile(saved, tmp)
                os.replace(tmp, live)
            elif os.path.exists(live):
                os.remove(live)  # written after the checkpoint, by epochs that will be rerun
        return state["epochs_completed"]


def _fsync_directory(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
