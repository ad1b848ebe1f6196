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


def did_you_mean(name: object, choices) -> str:
    """``" (did you mean 'mnist'?)"`` when ``name`` is a near miss of one of ``choices``, else ``""``:
    the tail of an "unknown name" message, as click gives for a mistyped flag."""
    import difflib

    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
