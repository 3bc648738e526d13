"""How the entry points end on bad input or a numerical fault: one line and a non-zero exit, no traceback.

Only the exceptions that say the user must change something are shortened:
`keras_l2t.errors.InputError` (bad flags, files, data or model_dir) and
`checkpointing.NonFiniteError` (training diverged). Anything else, including a
ValueError or TypeError raised inside TensorFlow or Keras, is a bug and keeps
its traceback.
"""

import sys

BAD_INPUT_EXIT_CODE = 2
NUMERICAL_FAULT_EXIT_CODE = 3


def run_reporting_errors(function, show_traceback=False):
    """Calls `function()`; an InputError exits 2 and a NonFiniteError 3, each with one `error:` line.

    With `show_traceback` they propagate instead, like every other exception.
    """
    # pylint: disable=import-outside-toplevel
    from keras_l2t.checkpointing import NonFiniteError
    from keras_l2t.errors import InputError

    try:
        return function()
    except (InputError, NonFiniteError) as error:
        if show_traceback:
            raise
        code = NUMERICAL_FAULT_EXIT_CODE if isinstance(error, NonFiniteError) else BAD_INPUT_EXIT_CODE
        message = " ".join(str(error).split())  # one line
        print(f"error: {message}\n(--show_traceback prints where it was raised)", file=sys.stderr)
        sys.exit(code)
