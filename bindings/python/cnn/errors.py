"""Exceptions: every non-zero status of libcnn.so raises a CNNError carrying its message."""


class CNNError(Exception):
    """A call into libcnn.so failed; ``status`` is the C status code, ``str()`` the message."""

    status = None

    def __init__(self, message, status=None):
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidArgumentError(CNNError, ValueError):
    status = 1


class ParseError(CNNError, ValueError):
    """An architecture text that does not parse (the message names the token, line and column)."""
    status = 2


class CNNIOError(CNNError, OSError):
    status = 3


class BadFormatError(CNNError, ValueError):
    """A file whose bytes are not what its format requires."""
    status = 4


class ShapeMismatchError(CNNError, ValueError):
    status = 5


class CNNMemoryError(CNNError, MemoryError):
    status = 6


class DivergedError(CNNError, ArithmeticError):
    """Training stopped: the loss became NaN or infinite (the model keeps its last good weights)."""
    status = 7


class CancelledError(CNNError):
    status = 8


class BusyError(CNNError):
    """The model is being trained by another call."""
    status = 9


class InternalError(CNNError):
    status = 10


_BY_STATUS = {c.status: c for c in (InvalidArgumentError, ParseError, CNNIOError, BadFormatError,
                                    ShapeMismatchError, CNNMemoryError, DivergedError, CancelledError,
                                    BusyError, InternalError)}


def for_status(status, message):
    cls = _BY_STATUS.get(status, CNNError)
    return cls(message, status)
