"""Helpers shared by test modules: running the CLI in process, child processes and their
environment, free ports, waiting for events, acting as an unprivileged user, and the skip rule
for missing system packages. Test modules import from here (never from each other)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

#: The uid and gid of ``nobody``: an account without privileges, present on every Linux.
NOBODY = 65534


def run_cli(args, capsys, monkeypatch=None, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run the real entry point (``mnistkit.cli.main``) in-process on ``args`` (made strings):
    returns (exit code, stdout, stderr). ``stdin`` is fed as standard input when ``monkeypatch`` is given."""
    import io
    import sys

    import pytest

    from mnistkit.cli import main

    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at the moment (free once this returns)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.01) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def child_env(**extra) -> dict:
    """Environment for a child mnistkit: one thread per process, short distributed timeout (``extra`` wins)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update({"OMP_NUM_THREADS": "1", "MNISTKIT_DIST_TIMEOUT": "30", "PYTHONUNBUFFERED": "1", **extra})
    return env


def stop_process(proc) -> None:
    """Stop a server started for a test: SIGTERM, then SIGKILL if it has not gone within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def as_nobody() -> Iterator[None]:
    """Root ignores file permissions: act as ``nobody`` (effective ids only) for the block.
    Only for root; files the block reads must be reachable by others (see :func:`open_to_all`)."""
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def unprivileged() -> contextlib.AbstractContextManager:
    """:func:`as_nobody` when root (who ignores permissions), else nothing to change."""
    return as_nobody() if os.geteuid() == 0 else contextlib.nullcontext()


def open_to_all(root: Path, owner: int | None = None) -> Path:
    """Make ``root`` and everything under it readable (folders traversable) by everyone, owned by
    ``owner`` when given: so a block run :func:`as_nobody` reaches it."""
    for path in (root, *root.rglob("*")):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if owner is not None:
            os.chown(path, owner, owner)
    return root


def system_deps_promised() -> bool:
    """True in CI (``$CI`` set) as root on Debian: there ``make system-deps`` installs Chromium,
    Fashion-MNIST and PostgreSQL or fails, so a test missing one of them points at a broken set-up."""
    return bool(os.environ.get("CI")) and os.geteuid() == 0 and Path("/etc/debian_version").is_file()


def require_or_skip(reason: str) -> NoReturn:
    """Skip saying ``reason`` (a system package or tool is missing) -- or fail where
    :func:`system_deps_promised`, so a broken install cannot turn a CI run green by skipping."""
    import pytest

    if system_deps_promised():
        pytest.fail(f"{reason}; CI as root on Debian must have it (make system-deps)", pytrace=False)
    pytest.skip(reason)
