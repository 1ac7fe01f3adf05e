"""Exceptions of the inversion pipeline; every message is a sentence a user can read."""


class InversionError(Exception):
    """Base class: something about the request cannot be done (message says what and why)."""


class PhotoError(InversionError, ValueError):
    """The photo cannot be read: not an image, truncated, too large, empty, or an unsupported mode."""


class Cancelled(InversionError):
    """The caller asked to stop (``cancel`` was set); raised between optimization steps."""
