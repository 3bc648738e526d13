"""How the entry points end on bad input or a numerical fault: one line, a non-zero exit, no traceback."""

import sys

BAD_INPUT_EXIT_CODE = 2
NUMERICAL_FAULT_EXIT_CODE = 3


def run_reporting_errors(function, show_traceback=False):
    """Calls `function()`; bad input exits 2 and a non-finite loss 3, each with an `error:` line.

    Bad input is what the library raises for wrong arguments, missing or
    unusable files and data, and busy or mismatched model_dirs (ValueError,
    TypeError, FileNotFoundError, SourceUnavailableError). With `show_traceback`
    the exception propagates instead.
    """
    # pylint: disable=import-outside-toplevel
    from keras_l2t.checkpointing import NonFiniteError
    from keras_l2t.source_models import SourceUnavailableError

    try:
        return function()
    except (ValueError, TypeError, FileNotFoundError, SourceUnavailableError, NonFiniteError) as error:
        if show_traceback:
            raise
        code = NUMERICAL_FAULT_EXIT_CODE if isinstance(error, NonFiniteError) else BAD_INPUT_EXIT_CODE
        message = " ".join(str(error).split())  # one line
        print(f"error: {message}\n(--show_traceback prints where it was raised)", file=sys.stderr)
        sys.exit(code)
