"""Where a study lives: the ``--storage`` URL, its masking, and the set-up that workers share.

Storage is an Optuna journal file (the default, ``OUT/study.journal``) or a database URL
(PostgreSQL, MySQL, SQLite) that workers on many machines share. Workers are often started
together (a job array, ``parallel``), and Optuna's first run on an empty database is not safe
against that (optuna/optuna#1092: two ``CREATE TYPE``/``CREATE TABLE`` at once, one fails with a
duplicate-key error). :func:`set_up_storage` therefore runs the whole set-up (tables, the
study, its stored settings) under one lock per storage (a PostgreSQL advisory lock, MySQL's
``GET_LOCK``, ``flock`` on a journal or SQLite file) and retries a few times should a duplicate
error get through anyway.

A password never leaves the URL: :func:`mask_url` is the one place that hides it, for every
message and file that shows a storage. Errors name their cause: the server is unreachable,
authentication failed, the database is missing, the user may not create tables, or the
tables are from another Optuna version.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, unquote_plus

from mnistkit.errors import ConfigError

JOURNAL_FILE = "study.journal"
#: Retries of a trial whose worker died (stale heartbeat, or a local worker killed).
MAX_RETRY = 3
#: Retries of the set-up after a duplicate-object error from a concurrent first run.
SETUP_ATTEMPTS = 5
#: Seconds a worker waits for another worker's set-up before giving up (it takes about a second).
SETUP_LOCK_TIMEOUT = 120
#: Key of the PostgreSQL advisory lock / name of the MySQL lock held during set-up (per database).
SETUP_LOCK_KEY = 0x6D6E6973_74756E65  # "mnistune"
SETUP_LOCK_NAME = "mnistkit-optuna-setup"
#: Set by tests only, to a file path: a worker announces it is ready to set up (``PATH.PID``)
#: and waits until the file exists, so workers whose imports took different times meet at
#: the lock within milliseconds.
SETUP_GATE_ENV = "MNISTKIT_TEST_SETUP_GATE"

MASK = "***"
#: A URL query key holding a secret, once decoded and lower-cased, contains one of these
#: (libpq's ``password``/``sslpassword``, MySQL drivers' ``passwd``, ``pwd``, tokens).
#: ``passfile`` and ``sslkey`` name files, not secrets, and stay visible.
_SECRET_KEYS = ("password", "passwd", "pwd", "secret", "token")
_SCHEME = re.compile(r"^[A-Za-z][\w+.-]*://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"<>]+")
#: ``key=value`` settings in free text (a libpq conninfo string, an error quoting one).
_KEYWORD_IN_TEXT = re.compile(
    r"(?i)\b(\w*(?:password|passwd|pwd|secret|token)\w*\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;,)]+)"
)

T = TypeVar("T")


# ----------------------------------------------------------------------------- masking


def mask_url(text: str, url: str | None = None) -> str:
    """``text`` with every password replaced by ``***``: the one mask for storage URLs.

    ``text`` is a storage URL, or a message that may quote one (a driver's error). Masked:
    the userinfo password (``user:PASS@``, up to the last ``@``, since an unencoded ``@`` in a
    password is common), query values whose key names a secret (``?password=``,
    ``sslpassword=``, ``passwd=``), and ``password=...`` settings in free text. ``url``, when
    given, is the storage the message is about: its secrets are masked wherever they appear,
    even where a driver quoted them out of context.
    """
    if _SCHEME.match(text):
        masked = _mask_one_url(text)
    else:
        masked = _URL_IN_TEXT.sub(lambda m: _mask_one_url(m.group()), text)
        masked = _KEYWORD_IN_TEXT.sub(lambda m: m.group(1) + MASK, masked)
    for secret in _secrets_of(url) if url else ():
        masked = masked.replace(secret, MASK)
    return masked


def _mask_one_url(url: str) -> str:
    head = _SCHEME.match(url)
    assert head is not None
    scheme, rest = head.group(), url[head.end() :]
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        user = rest[:at].split(":", 1)[0]
        rest = f"{user}:{MASK}{rest[at:]}"
    start = rest.find("@") + 1  # the query starts after the userinfo
    q = rest.find("?", start)
    if q >= 0:
        rest = rest[: q + 1] + "&".join(_mask_pair(p) for p in rest[q + 1 :].split("&"))
    return scheme + rest


def _mask_pair(pair: str) -> str:
    key, sep, _ = pair.partition("=")
    return f"{key}={MASK}" if sep and _is_secret_key(key) else pair


def _is_secret_key(key: str) -> bool:
    name = unquote_plus(key).lower()
    return any(word in name for word in _SECRET_KEYS)


def _secrets_of(url: str) -> list[str]:
    """The password-like values in ``url``, raw and decoded, longest first (3+ characters)."""
    found: list[str] = []
    head = _SCHEME.match(url)
    rest = url[head.end() :] if head else url
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        found.append(rest[:at].split(":", 1)[1])
    q = rest.find("?", rest.find("@") + 1)
    for pair in rest[q + 1 :].split("&") if q >= 0 else ():
        key, sep, value = pair.partition("=")
        if sep and _is_secret_key(key):
            found.append(value)
    found += [unquote(s) for s in found] + [unquote_plus(s) for s in found]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


# ----------------------------------------------------------------------------- what --storage names


def storage_url(url: str | None, out: Path) -> str:
    """The storage as a string: a database URL, or the journal file's path."""
    return url if url is not None else str(out / JOURNAL_FILE)


def is_database(url: str | None) -> bool:
    """A database URL (``scheme://``), as opposed to a journal file path."""
    return url is not None and "://" in url and not url.endswith((".journal", ".log"))


def check_database_url(url: str) -> str:
    """The URL's scheme (``postgresql``, ``mysql``, ``sqlite``) once the URL parses; a one-line error if not."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("postgresql", "mysql", "sqlite"):
        raise ConfigError(
            f"--storage {mask_url(url)}: unknown scheme {scheme!r}; use postgresql://, mysql://, "
            "sqlite:/// or a journal file path"
        )
    if _host_part(url).count("[") != _host_part(url).count("]"):
        raise ConfigError(
            f"--storage {mask_url(url)}: malformed host: an IPv6 address needs both brackets "
            "(postgresql://USER@[::1]:5432/DATABASE)"
        )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"--storage {mask_url(url)}: not a valid database URL ({mask_url(_first_line(exc), url)}); "
            "expected SCHEME://USER@HOST[:PORT]/DATABASE"
        ) from None
    host = parsed.host or ""
    if "@" in host:
        raise ConfigError(
            f"--storage {mask_url(url)}: the host part holds an '@': percent-encode it in the user name "
            "or password, or leave the password out and set PGPASSWORD or ~/.pgpass"
        )
    return scheme


def _host_part(url: str) -> str:
    """HOST[:PORT] of a URL: after the userinfo's last ``@``, up to the path or the query."""
    rest = url.split("://", 1)[-1]
    rest = rest[rest.rfind("@") + 1 :]
    return re.split(r"[/?]", rest, maxsplit=1)[0]


def open_storage(url: str | None, out: Path, heartbeat: int):
    """Optuna storage for ``--storage``: None = ``OUT/study.journal``; a database URL gets heartbeats.

    On a database each running trial beats every ``heartbeat`` seconds; a trial silent for twice
    that is failed by the next worker to look and queued again with the same parameters
    (:func:`stale_trial_retry`). Opening a database creates Optuna's tables when they are
    missing: call it inside :func:`set_up_storage`.
    """
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if not is_database(url):
        path = Path(storage_url(url, out))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ConfigError(f"--storage {path}: cannot open the journal file ({exc.strerror or exc})") from None
    assert url is not None
    check_database_url(url)
    with storage_errors(url):
        return RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=stale_trial_retry(),
        )


def stale_trial_retry():
    """Optuna's callback that queues a dead worker's trial again, up to :data:`MAX_RETRY` times
    (``RetryHeartbeatStaleTrialCallback``, formerly ``RetryFailedTrialCallback``)."""
    import optuna

    retry = (
        getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    )
    return retry(max_retry=MAX_RETRY)


# ----------------------------------------------------------------------------- one lock per storage


class ConcurrentSetup(Exception):
    """A duplicate-object error from another worker's first run: the set-up is tried again."""


def set_up_storage(url: str | None, out: Path, set_up: Callable[[], T]) -> T:
    """Run ``set_up()`` (open the storage, create or load the study, store its settings) while
    holding this storage's set-up lock, so workers started together take turns; return its result.

    The lock makes the first run's schema creation and the study's creation happen once. Should
    a duplicate-object error get through anyway (a database without the lock, an older worker
    version alongside), the set-up is retried, up to :data:`SETUP_ATTEMPTS` times.
    """
    _wait_for_test_gate()
    for attempt in range(1, SETUP_ATTEMPTS + 1):
        try:
            with storage_lock(url, out), storage_errors(url):
                return set_up()
        except ConcurrentSetup as exc:
            if attempt == SETUP_ATTEMPTS:
                raise ConfigError(
                    f"--storage {mask_url(storage_url(url, out))}: another worker kept creating the same "
                    f"tables ({exc}); start this worker again"
                ) from None
            time.sleep(random.uniform(0.2, 1.0) * attempt)
    raise AssertionError("unreachable")


def _wait_for_test_gate() -> None:
    """Under a test that sets :data:`SETUP_GATE_ENV`: say this worker is ready, wait for the gate."""
    gate = os.environ.get(SETUP_GATE_ENV)
    if gate:
        Path(f"{gate}.{os.getpid()}").touch()
        deadline = time.monotonic() + 300
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.002)


@contextmanager
def storage_lock(url: str | None, out: Path) -> Iterator[None]:
    """This storage's lock among workers: one at a time creates tables and studies, and one at a
    time checks the study's trial count and starts a trial (:func:`mnistkit.tuning.study.run_worker`)."""
    if not is_database(url):
        with _file_lock(Path(storage_url(url, out))):
            yield
        return
    assert url is not None
    scheme = check_database_url(url)
    if scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        with _file_lock(Path(path)) if path and path != ":memory:" else _no_lock():
            yield
        return
    with storage_errors(url), _database_lock(url, scheme):
        yield


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """``flock`` on the journal (or SQLite) file itself, created if missing; Optuna's own locks
    on the journal are of another kind and do not interfere."""
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(f"--storage {path}: cannot open the storage file ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def _database_lock(url: str, scheme: str) -> Iterator[None]:
    """A lock held by a connection of its own for the set-up. Both locks belong to the session:
    closing the connection (no pool keeps it) releases them, as the server does if the worker dies."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if scheme == "postgresql":
                conn.execute(sqlalchemy.text(f"SET lock_timeout = '{SETUP_LOCK_TIMEOUT}s'"))
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": SETUP_LOCK_KEY})
            else:  # mysql
                got = conn.execute(
                    sqlalchemy.text("SELECT GET_LOCK(:n, :t)"), {"n": SETUP_LOCK_NAME, "t": SETUP_LOCK_TIMEOUT}
                ).scalar()
                if got != 1:
                    raise ConfigError(
                        f"--storage {mask_url(url)}: another worker held the set-up lock for "
                        f"{SETUP_LOCK_TIMEOUT} s; is one stuck?"
                    )
            conn.commit()
            yield
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- errors by cause


@contextmanager
def storage_errors(url: str | None) -> Iterator[None]:
    """Turn a driver's or Optuna's exception into a one-line :class:`ConfigError` naming its cause.

    Duplicate-object errors of a concurrent first run become :class:`ConcurrentSetup` (retried);
    mnistkit's own errors pass through.
    """
    try:
        yield
    except (ConfigError, ConcurrentSetup):
        raise
    except ImportError as exc:
        raise ConfigError(
            f"--storage {mask_url(url or '')}: the database driver is missing ({mask_url(_first_line(exc), url)}); "
            "install mnistkit[tune] (PostgreSQL) or a MySQL driver"
        ) from None
    except Exception as exc:
        if url is None or not is_database(url):
            raise
        if _is_duplicate(exc):
            raise ConcurrentSetup(mask_url(_first_line(exc), url)[:120]) from None
        cause = storage_error_cause(exc, url)
        if cause is None:
            raise
        raise ConfigError(f"--storage {mask_url(url)}: {cause}") from None


def storage_error_cause(exc: BaseException, url: str) -> str | None:
    """What went wrong, in words, with the driver's own message (masked); None when not a storage error."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    detail = mask_url(_first_line(exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc), url)
    text = str(exc).lower()
    code = _sqlstate(exc)
    user = _url_part(url, "username") or "the user"
    database = _url_part(url, "database") or "the database"
    if isinstance(exc, (NoSuchModuleError, ArgumentError)):
        return f"not a usable database URL ({detail})"
    if isinstance(exc, RuntimeError) and "storage upgrade" in text:
        return (
            f"the tables were made by another Optuna version ({detail.split('. Please')[0]}); "
            "upgrade them with: optuna storage upgrade --storage URL"
        )
    if code in ("28P01", "28000") or code in (1044, 1045) or any(s in text for s in _AUTH_FAILED):
        return (
            f"authentication failed for {user} ({detail}); give the password with PGPASSWORD or "
            "~/.pgpass, not on the command line"
        )
    if code in ("3D000", 1049) or ("database" in text and "does not exist" in text) or "unknown database" in text:
        return f"database {database!r} does not exist on the server ({detail}); create it first: createdb {database}"
    if code == "42501" or code in (1142, 1227) or "permission denied" in text or "command denied" in text:
        return (
            f"permission denied: {user} may not create or change Optuna's tables in {database!r} ({detail}); "
            "grant it CREATE on the schema, or have the owner run the first worker"
        )
    if code == "55P03" or "lock timeout" in text:
        return f"another worker held the set-up lock for {SETUP_LOCK_TIMEOUT} s ({detail}); is one stuck?"
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or _is_connection_error(text)):
        return f"cannot connect to the database server ({detail})"
    if isinstance(exc, DBAPIError):
        return f"the database refused Optuna's set-up ({detail})"
    return None


_AUTH_FAILED = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "no pg_hba.conf entry",
    "access denied for user",
)
_CONNECTION_FAILED = (
    "connection refused",
    "could not connect",
    "could not translate host name",
    "connection timed out",
    "timeout expired",
    "no route to host",
    "name or service not known",
    "server closed the connection",
    "can't connect to mysql",
    "unknown mysql server host",
    "connection failed",
)


def _is_connection_error(text: str) -> bool:
    return any(s in text for s in _CONNECTION_FAILED)


def _is_duplicate(exc: BaseException) -> bool:
    """A unique violation or an object created twice: what two first runs at once produce."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    code = _sqlstate(exc)
    if code in ("23505", "42P07", "42710", 1050, 1062):
        return True
    text = str(exc).lower()
    return isinstance(exc, (IntegrityError, ProgrammingError)) and ("already exists" in text or "duplicate" in text)


def _sqlstate(exc: BaseException) -> str | int | None:
    """PostgreSQL's SQLSTATE (psycopg) or MySQL's error number (its drivers' first argument)."""
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state:
        return str(state)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _url_part(url: str, part: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return getattr(make_url(url), part)
    except Exception:  # a URL that does not parse has been refused earlier
        return None


def _first_line(exc: BaseException) -> str:
    """The exception's text on one line, without SQLAlchemy's trailing SQL and background links."""
    text = " ".join(str(exc).split())
    for cut in (" [SQL:", " (Background on this error"):
        text = text.split(cut, 1)[0]
    return text[:300]
