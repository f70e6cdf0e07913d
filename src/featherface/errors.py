"""Exceptions for problems with user input.

The CLI prints these as one line (no traceback unless ``--debug``) and exits non-zero; everything else is a bug.
"""

__all__ = ["FeatherFaceError", "InputError", "CheckpointError", "ModelNameError", "describe_os_error"]


class FeatherFaceError(Exception):
    """Base class: a problem the user can fix (bad file, bad name, bad value)."""


class InputError(FeatherFaceError):
    """An input image, video, folder or annotation file cannot be used."""


class CheckpointError(FeatherFaceError):
    """A checkpoint is missing, truncated, corrupt or does not match the model."""


class ModelNameError(FeatherFaceError, KeyError):
    """An unknown model name was requested."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def describe_os_error(exc: OSError) -> str:
    """``path: reason`` for an ``OSError`` (``out/a.jpg: No space left on device``), naming both paths of a rename."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    name = str(exc.filename)
    if getattr(exc, "filename2", None) is not None:
        name += f" -> {exc.filename2}"
    return f"{name}: {reason}"
