"""Error types that reach users.

Every error a user can cause (bad argument, missing or corrupt file, unknown
name) is a :class:`MnistkitError`. The CLI prints ``str(error)`` as one line on
stderr and exits with code 2; the HTTP server turns it into a 4xx JSON error.
Anything else escaping is a bug in mnistkit, not in the user's input.
"""

from __future__ import annotations


class MnistkitError(Exception):
    """Base class for every error caused by user input or the environment."""


class ConfigError(MnistkitError, ValueError):
    """An option has a bad value; the message names it and what is allowed."""


class DataFormatError(MnistkitError, ValueError):
    """A data file (IDX, CSV, image folder) is malformed; names the file and the fault."""


class DatasetNotFoundError(MnistkitError, FileNotFoundError):
    """A dataset's files are neither found locally nor downloadable."""


class DownloadError(MnistkitError):
    """Every mirror failed (unreachable, wrong checksum, truncated)."""


class CheckpointError(MnistkitError, ValueError):
    """A checkpoint is missing, corrupt, tampered with, or not an mnistkit checkpoint."""


class InputImageError(MnistkitError, ValueError):
    """An image given for prediction cannot be decoded or is too large."""
