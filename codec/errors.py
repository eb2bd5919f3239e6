"""Error types. Each carries a one-line message that names the problem; the CLI prints it
without a traceback and exits non-zero."""

from __future__ import annotations


class FeatcodecError(Exception):
    """Base class of every error the project reports to a user."""


class BitstreamError(FeatcodecError, ValueError):
    """A `.fcb` stream is malformed, truncated, foreign, or was written by another model."""


class InputError(FeatcodecError, ValueError):
    """An input (image, tensor, file) cannot be coded by this model."""


class CheckpointError(FeatcodecError):
    """A checkpoint is missing, unreadable, foreign, or does not fit what it is used for."""
