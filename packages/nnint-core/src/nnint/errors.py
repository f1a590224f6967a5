"""The one exception hierarchy of nnint.

Every error a user can cause derives from :class:`NnintError`. Messages say what was wrong *and*
what to do about it. Errors that correspond to a bad argument also derive from ``ValueError`` so
that generic callers catching ``ValueError`` keep working.

Whenever one of these is raised by a :class:`~nnint.session.Session` method, the session is left
exactly as it was before the call.
"""

from __future__ import annotations


class NnintError(Exception):
    """Base class of every error nnint raises on purpose."""


# --- images and masks -------------------------------------------------------------------------


class InvalidImageError(NnintError, ValueError):
    """The image cannot be segmented: wrong ndim or dtype, NaN/inf voxels, constant values, ..."""


class InvalidMaskError(NnintError, ValueError):
    """A mask has the wrong shape or dtype, or holds values other than 0 and 1."""


class ImageIOError(NnintError, OSError):
    """A file could not be read or written as an image (missing, unreadable, unknown format)."""


# --- prompts ----------------------------------------------------------------------------------


class InvalidPromptError(NnintError, ValueError):
    """A prompt is malformed (wrong number of coordinates, bad thickness, ...)."""


class EmptyPromptError(InvalidPromptError):
    """A prompt covers no voxel: an empty scribble or lasso, or a box of zero size."""


class PromptOutOfBoundsError(InvalidPromptError):
    """A prompt lies (partly) outside the image."""


class UnsupportedPromptError(InvalidPromptError):
    """The active model cannot take this kind of prompt (for example a 3D box)."""


# --- sessions ---------------------------------------------------------------------------------


class SessionError(NnintError):
    """An operation does not fit the session's current state."""


class UnknownObjectError(SessionError, KeyError):
    """No object with this id exists in the session."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class ObjectLockedError(SessionError):
    """The object is confirmed (locked); unlock it before changing it."""


class SessionFileError(NnintError, ValueError):
    """A saved session file is missing, truncated, corrupt or of an unknown version."""


# --- plugins, models, backends ----------------------------------------------------------------


class PluginError(NnintError):
    """A plugin failed to load or registered something invalid."""


class UnknownBackendError(PluginError, LookupError):
    """No backend with this name is registered."""


class UnknownModelError(PluginError, LookupError):
    """No model with this name is registered and no model folder exists at this path."""


class CheckpointError(NnintError, ValueError):
    """A model folder is missing a file or a key, or its files contradict each other.

    ``file`` and ``key`` name the culprit when known.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.key = key


class IncompatibleModelError(CheckpointError):
    """The model needs a newer nnint, or a capability this backend does not have."""


class DeviceError(NnintError, RuntimeError):
    """The requested compute device is unavailable (for example CUDA on a machine without it)."""
