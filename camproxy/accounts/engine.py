"""SQLAlchemy engines for the accounts, and transactions that serialize writers.

Every write transaction holds the database's one write lock from its first statement to
its commit, across processes (the daemon, ``camproxy user ...``, other daemons on the
same PostgreSQL), so that what a write reads stays true until it commits: the last-admin
guard, names unique ignoring case, a login racing a password change.

- SQLite: ``BEGIN IMMEDIATE``. The driver's own transaction handling is off
  (``isolation_level = None``, SQLAlchemy's pysqlite recipe) and this module emits
  ``BEGIN`` or ``BEGIN IMMEDIATE`` itself; a busy timeout lets processes take turns.
- PostgreSQL: ``pg_advisory_xact_lock`` on one fixed key as the first statement of every
  write transaction (released at commit or rollback). Writers wait for each other, as on
  SQLite, instead of failing and retrying as under SERIALIZABLE; readers never wait.
  ``lock_timeout`` bounds the wait as SQLite's busy timeout does. Reads run without a
  transaction (READ COMMITTED gives each statement its own snapshot either way), one round
  trip each.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import StaticPool

from camproxy.accounts.location import DatabaseLocation

BUSY_TIMEOUT_MS: Final = 10_000
#: Seconds to wait for a PostgreSQL server to accept a connection.
CONNECT_TIMEOUT: Final = 10
#: Query threads (and pooled connections) per process on PostgreSQL; SQLite has one.
POSTGRESQL_THREADS: Final = 4
#: The advisory lock key of CamProxy's write lock (the bytes "CamProxy" as an int64).
WRITE_LOCK_KEY: Final = int.from_bytes(b"CamProxy", "big", signed=True)

_BEGIN: Final = "camproxy_begin"
_LOCK: Final = sa.select(sa.func.pg_advisory_xact_lock(sa.literal(WRITE_LOCK_KEY, sa.BigInteger)))


class DatabaseError(Exception):
    """The database cannot be used; the message is one line, fit for a user."""


class DatabaseInUse(DatabaseError):
    """Another CamProxy daemon holds the SQLite file (see ``Database.claim``)."""


class CannotOpen(DatabaseError):
    """The driver could not open the database; ``reason`` is its one-line account."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DatabaseUnavailable(DatabaseError):
    """The database could not be reached or read (server down, file locked, I/O error)."""


def one_line(text: str) -> str:
    """``text`` with its runs of whitespace (newlines included) as single spaces."""
    return re.sub(r"\s+", " ", text).strip()


def describe(problem: BaseException, location: DatabaseLocation) -> str:
    """A driver error as one line, without SQL, parameters or password."""
    original = problem.orig if isinstance(problem, DBAPIError) else problem
    # psycopg's text adds the statement ("LINE 1: SELECT ..."); its primary message does not.
    primary = getattr(getattr(original, "diag", None), "message_primary", None)
    reason = one_line(str(primary or original)) or type(original).__name__
    password = location.password
    if password:
        reason = reason.replace(password, "***")
    return reason


def database_error(problem: DBAPIError, location: DatabaseLocation) -> DatabaseError:
    """The ``DatabaseError`` (or ``DatabaseUnavailable``) to raise for a driver error."""
    reason = describe(problem, location)
    if isinstance(problem, OperationalError | InterfaceError) or problem.connection_invalidated:
        return DatabaseUnavailable(f"{location.display}: {reason}")
    return DatabaseError(f"{location.display}: {reason}")


def make_engine(location: DatabaseLocation, *, pool_size: int | None = None) -> Engine:
    """An engine for ``location``; it connects only when first used.

    SQLite connections get the busy timeout, foreign keys on, and BEGIN under this
    module's control; ``":memory:"`` is one connection shared by every thread (there is
    nothing else to share). PostgreSQL connections are checked before use, so that
    after a server restart the next query reconnects instead of failing.
    """
    if location.is_sqlite:
        assert location.path is not None
        options: dict[str, Any] = {
            "connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        }
        if location.is_memory:
            options["poolclass"] = StaticPool
        else:
            options.update(pool_size=pool_size or 1, max_overflow=1)
        engine = sa.create_engine(sa.URL.create("sqlite", database=location.path), **options)
        event.listen(engine, "connect", _sqlite_connected)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    assert location.url is not None
    size = pool_size or POSTGRESQL_THREADS
    query = location.url.query
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    if "application_name" not in query:
        connect_args["application_name"] = "camproxy"
    if "options" not in query:
        connect_args["options"] = f"-c lock_timeout={BUSY_TIMEOUT_MS}"
    return sa.create_engine(
        location.url,
        pool_size=size,
        max_overflow=1,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _sqlite_connected(connection: sqlite3.Connection, record: Any) -> None:
    # pysqlite would BEGIN on its own before some statements; _sqlite_begin does it.
    connection.isolation_level = None
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    connection.execute("PRAGMA foreign_keys = ON")


def _sqlite_begin(connection: Connection) -> None:
    # Straight to the driver: a statement through SQLAlchemy costs more than the query.
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.execute(connection.get_execution_options().get(_BEGIN, "BEGIN"))


def use_wal(connection: Connection) -> None:
    """Put a SQLite file in write-ahead-log mode (persistent; readers never wait).

    Not allowed inside a transaction, so it goes to the driver's connection directly.
    """
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA journal_mode = WAL").fetchone()


@contextmanager
def transaction(connection: Connection, *, write: bool) -> Iterator[Connection]:
    """One transaction on ``connection``; with ``write``, holding the write lock first.

    Commits when the block ends, rolls back if it raises.
    """
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.execution_options(**{_BEGIN: "BEGIN IMMEDIATE" if write else "BEGIN"})
    elif not write:
        # Under READ COMMITTED each statement sees its own snapshot, in a transaction or
        # not: without one, a read is one round trip instead of three (BEGIN, it, COMMIT).
        connection.execution_options(isolation_level="AUTOCOMMIT")
    with connection.begin():
        if write and not sqlite:
            connection.execute(_LOCK)
        yield connection
