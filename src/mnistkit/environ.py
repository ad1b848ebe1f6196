"""Settings read from environment variables (timeouts), checked like command-line values.

A dependency-free module, so that low layers (data downloads, the distributed process group)
can read their settings without importing the training configuration.
"""

from __future__ import annotations

import os

from mnistkit.errors import ConfigError


def seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds from environment variable ``name`` (unset or empty: ``default``)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{name}={raw!r}: expected a positive number of seconds")
    return value
