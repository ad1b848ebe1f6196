"""A real PostgreSQL server for the tests of ``mnistkit tune`` on a database.

:func:`running_postgres` starts Debian's PostgreSQL itself: ``initdb`` in a temporary folder as
an unprivileged user (the ``postgres`` account when run as root), listening on 127.0.0.1 on a
free port, then stops it. The superuser ``postgres`` logs in without a password (``trust``);
the role :data:`PASSWORD_ROLE` needs its password (``scram-sha-256``), so tests can check
authentication failures and ``PGPASSWORD``. Where the server binaries are missing it skips,
saying why (or fails where CI promises them: ``make system-deps`` installs them on Debian as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import free_port, require_or_skip

#: A role that must give its password (the others log in with ``trust``).
PASSWORD_ROLE = "alice"
PASSWORD = "S3cret-Pw-4-alice"


@dataclass
class PostgresServer:
    port: int

    def url(self, database: str = "optuna", user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str, database: str = "postgres") -> None:
        """Run statements as the superuser (autocommit: ``CREATE DATABASE`` needs it)."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname={database}", autocommit=True
        ) as conn:
            for statement in statements:
                conn.execute(statement)

    def create_database(self, name: str, owner: str = "postgres") -> str:
        """A new empty database; returns the superuser's URL of it."""
        self.sql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.url(name)


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _as_user(user: str | None) -> list[str]:
    """Command prefix running a program as ``user`` (root only); setpriv execs, so signals reach it."""
    if user is None:
        return []
    info = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={info.pw_uid}", f"--regid={info.pw_gid}", "--clear-groups", "--"]


def _server_user() -> str | None:
    """The account to run the server as: None (this one) unless root, which initdb refuses."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot start PostgreSQL as an unprivileged user")
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        return "nobody"


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A fresh server with an empty database ``optuna`` and the role :data:`PASSWORD_ROLE`."""
    pg = _pg_bin()
    if pg is None:
        require_or_skip("PostgreSQL server binaries not found (apt-get install postgresql; make system-deps does it)")
    user = _server_user()
    tmp = Path(tempfile.mkdtemp(prefix="mnistkit-pg-"))
    data = tmp / "data"
    if user is not None:
        info = pwd.getpwnam(user)
        os.chown(tmp, info.pw_uid, info.pw_gid)
    subprocess.run(
        _as_user(user)
        + [str(pg / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    (data / "pg_hba.conf").write_text(
        f"local all all trust\nhost all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"
    )
    port = free_port()
    server = subprocess.Popen(
        _as_user(user)
        + [
            str(pg / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={tmp}",
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        import psycopg

        found = PostgresServer(port)
        deadline = time.monotonic() + 30
        while True:
            try:
                found.sql("CREATE DATABASE optuna")
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {server.stderr.read().decode()[-500:]}") from None
                time.sleep(0.2)
        found.sql(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        yield found
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
