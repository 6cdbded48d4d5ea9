"""User-facing errors: one line that names the file, record or argument, and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class UserError(Exception):
    """Bad input from the user. The CLI prints ``error: <message>`` and exits with code 2."""

    exit_code = 2


class ParityError(UserError):
    """The ONNX model does not reproduce TensorFlow's outputs within tolerance."""

    exit_code = 3


class ProviderError(UserError):
    """An execution provider was requested but ONNX Runtime did not give it."""

    exit_code = 4


class RegressionError(UserError):
    """``bench compare``: a chosen figure got worse than the allowed threshold."""

    exit_code = 5


class MissingStackError(UserError):
    """The command needs the training stack, which a serving install (``pip install rnnforge``) lacks."""

    exit_code = 6


class EngineCrashed(UserError):
    """An engine's timing process died without a result (a crash inside ONNX Runtime or TensorFlow)."""

    exit_code = 7


class TrainingFailed(UserError):
    """Ray Train gave up on a run (a worker's error, beyond ``--max-failures``)."""

    exit_code = 1


class Interrupted(UserError):
    """Ctrl-C (SIGINT): the work stopped; the message says what can be resumed."""

    exit_code = 130


def first_line(error: BaseException | str) -> str:
    """The first non-blank line of an error's message, or its type's name when it has none: a
    library's many-line error quoted inside rnnforge's one-line refusals."""
    text = str(error)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line or (type(error).__name__ if isinstance(error, BaseException) else "")


@contextlib.contextmanager
def on_ctrl_c(message: str) -> Iterator[None]:
    """Ctrl-C inside the block ends as ``Interrupted(message)``: exit 130 and one line, which
    says what is kept and how to resume (``message``), instead of a traceback or a bare line."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(message) from None
