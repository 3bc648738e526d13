"""The exception a user's input causes, as distinct from a bug.

Entry points (`train/`) print an `InputError` as one line and exit with code 2;
any other exception keeps its traceback, so that a real bug never looks like a
user mistake. It subclasses `ValueError` so that code catching `ValueError`
around the library keeps working.
"""


class InputError(ValueError):
    """Bad input: a wrong argument or flag, a missing or unusable file or dataset, a busy or mismatched model_dir.

    The message says what is wrong and what to do, in one or two sentences.
    """


class SourceUnavailableError(InputError, RuntimeError):
    """The source network cannot be loaded (missing/corrupt file, weights not downloadable)."""
