"""CamProxy's accounts database: SQLite or PostgreSQL, one code path, queries off the reactor.

``Database.open`` connects, creates or upgrades the schema (``migrate``) and returns,
blocking: the daemon does it while it is being built, before its port is bound and
before twistd forks, and leaves no connection open behind it. Queries then run, through
SQLAlchemy Core, in a Twisted ``ThreadPool`` of the database's own, started by
:meth:`Database.start`: exactly one thread on SQLite (so this process never has two
writers of its own), a few on PostgreSQL. ``read`` and ``write`` return Deferreds.

Other processes may use the same database at the same time (``camproxy user ...``,
other daemons on one PostgreSQL); every write is one transaction that holds the write
lock from its start (``engine.transaction``), so check-then-change logic holds across
processes. A SQLite file has a lock file too (``PATH.lock``, :meth:`Database.claim`):
it keeps a second daemon off the file, which a PostgreSQL database does not need.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.lockfile import FilesystemLock
from twisted.python.threadpool import ThreadPool

from camproxy.accounts import migrate
from camproxy.accounts.engine import (
    BUSY_TIMEOUT_MS,
    POSTGRESQL_THREADS,
    CannotOpen,
    DatabaseError,
    DatabaseInUse,
    DatabaseUnavailable,
    database_error,
    describe,
    make_engine,
    transaction,
)
from camproxy.accounts.location import (
    DEFAULT_DATABASE,
    MEMORY,
    DatabaseLocation,
    parse_location,
)

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DEFAULT_DATABASE",
    "MEMORY",
    "CannotOpen",
    "Database",
    "DatabaseError",
    "DatabaseInUse",
    "DatabaseUnavailable",
    "as_deferred",
    "check_not_in_use",
    "locate",
]

P = ParamSpec("P")
T = TypeVar("T")

_THREAD_NAME: Final = "camproxy-db"


def as_deferred(
    function: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Deferred[T]]:
    """Decorate an ``async def`` so that calling it returns a ``Deferred``."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(function(*args, **kwargs))

    return wrapper


def locate(setting: str | DatabaseLocation) -> DatabaseLocation:
    """A ``Config.database`` value (a path or a URL) as a location."""
    if isinstance(setting, DatabaseLocation):
        return setting
    return parse_location(setting, source="--database")


def check_not_in_use(setting: str | DatabaseLocation) -> None:
    """Fail with ``DatabaseInUse`` if a live daemon holds this SQLite file's lock now.

    A probe only: the daemon takes the lock itself when it starts (after twistd has
    daemonized, so the lock names the process that keeps running). PostgreSQL
    databases and memory have no lock: several daemons share one PostgreSQL.
    """
    path = locate(setting).path
    # A missing directory is Database.open's to report, with the rest of what it finds.
    if path is not None and path != MEMORY and os.path.isdir(os.path.dirname(path) or "."):
        _claim(path).unlock()


def _claim(path: str) -> FilesystemLock:
    lock_path = os.path.realpath(path) + ".lock"
    lock = FilesystemLock(lock_path)
    try:
        locked = lock.lock()
    except OSError as problem:
        raise DatabaseError(f"cannot lock {path} ({lock_path}): {problem.strerror}") from None
    if not locked:
        try:
            owner = f"pid {os.readlink(lock_path)}"
        except OSError:
            owner = "another process"
        raise DatabaseInUse(
            f"{path} is in use by another CamProxy daemon ({owner}, lock {lock_path})"
        )
    return lock


class Database:
    """An open CamProxy database. Make one with ``Database.open``; ``close`` it at the end.

    ``read`` and ``write`` run a function with a SQLAlchemy ``Connection`` in the query
    thread pool, inside one transaction, and return a ``Deferred`` of its result; driver
    errors become ``DatabaseError`` (``DatabaseUnavailable`` when the database cannot
    be reached), with one-line messages that never show a password.
    """

    log = Logger()

    def __init__(self, reactor: Any, engine: Engine, location: DatabaseLocation) -> None:
        """Use ``Database.open`` instead: this skips the schema upgrade."""
        self._reactor = reactor
        self._engine = engine
        self._location = location
        threads = 1 if location.is_sqlite else POSTGRESQL_THREADS
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name=_THREAD_NAME)
        self._lock: FilesystemLock | None = None
        self._shutdown: Any = None
        self._closed = False

    @classmethod
    def open(cls, reactor: Any, setting: str | DatabaseLocation) -> Database:
        """Open the database, creating it or upgrading its schema as needed. Blocks.

        ``setting`` is a SQLite path (``":memory:"`` for a private in-memory database)
        or a ``postgresql://`` URL, or a parsed ``DatabaseLocation``; ``reactor`` will
        run the results of queries. No thread is started and, but for ``":memory:"``, no
        connection is left open: call :meth:`start` once the reactor runs (or is about
        to) for queries to run. Fails with ``DatabaseError``: a file that is not
        ours or is newer than this CamProxy, a failed upgrade, a server that cannot be
        reached, a wrong password.
        """
        location = locate(setting)
        engine = make_engine(location)
        try:
            notes = migrate.upgrade(engine, location)
        except DBAPIError as problem:
            engine.dispose()
            reason = describe(problem, location)
            raise CannotOpen(
                f"cannot open the database {location.display}: {reason}", reason
            ) from None
        except BaseException:
            engine.dispose()
            raise
        if not location.is_memory:
            # Nothing open may cross twistd's fork; the pool reconnects when first used.
            engine.dispose()
        for note in notes:
            cls.log.warn("{note}", note=note)
        return cls(reactor, engine, location)

    @property
    def location(self) -> DatabaseLocation:
        """Where this database is."""
        return self._location

    @property
    def path(self) -> str:
        """The SQLite file (or ``":memory:"``), or the URL without its password."""
        return self._location.display

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and tools; the stores use ``read``/``write``)."""
        return self._engine

    def start(self) -> None:
        """Start the query threads; queries issued earlier wait for them. Idempotent."""
        if self._pool.started or self._closed:
            return
        self._pool.start()
        # A process that never calls close (a test, a command) still stops its threads.
        self._shutdown = self._reactor.addSystemEventTrigger("after", "shutdown", self._at_shutdown)

    def _at_shutdown(self) -> None:
        self._shutdown = None  # fired: nothing to remove
        self.close()

    def claim(self) -> None:
        """Take the SQLite file's lock for this process, for as long as it stays open.

        ``DatabaseInUse`` if a live daemon holds it; a lock left by a dead process is
        taken over. Nothing to do for memory or PostgreSQL.
        """
        if self._lock is None and self._location.is_file:
            assert self._location.path is not None
            self._lock = _claim(self._location.path)

    def read(
        self,
        function: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """Run ``function(connection, *args, **kwargs)`` in one read transaction."""
        return self._run(False, function, *args, **kwargs)

    def write(
        self,
        function: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """Run ``function(connection, *args, **kwargs)`` in one write transaction.

        The write lock is taken at the start, so what ``function`` reads stays true
        until it commits; an exception rolls everything back and fails the Deferred.
        """
        return self._run(True, function, *args, **kwargs)

    def read_now(
        self,
        function: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``read``, blocking the calling thread: for the start, before the reactor runs."""
        return self._transaction(False, function, *args, **kwargs)

    def write_now(
        self,
        function: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``write``, blocking the calling thread: for the start, before the reactor runs."""
        return self._transaction(True, function, *args, **kwargs)

    def release_connections(self) -> None:
        """Close pooled connections (not ``":memory:"``'s); new ones open when needed.

        For the daemon after its start-up work, before twistd forks.
        """
        if not self._location.is_memory:
            self._engine.dispose()

    def _run(
        self,
        write: bool,
        function: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        if self._closed:
            return fail(DatabaseError(f"the database {self.path} is closed"))

        def work() -> T:
            return self._transaction(write, function, *args, **kwargs)

        result: Deferred[T] = deferToThreadPool(self._reactor, self._pool, work)
        return result

    def _transaction(
        self,
        write: bool,
        function: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        try:
            with self._engine.connect() as connection, transaction(connection, write=write):
                return function(connection, *args, **kwargs)
        except DBAPIError as problem:
            raise database_error(problem, self._location) from problem

    def schema_version(self) -> Deferred[int]:
        """The schema version the database is at."""
        return self.read(lambda connection: migrate.schema_version(migrate.read_state(connection)))

    def close(self) -> None:
        """Wait for running queries, stop the threads, close the connections, unlock.

        Safe to call twice; queries issued afterwards fail with ``DatabaseError``.
        """
        if self._closed:
            return
        self._closed = True
        if self._shutdown is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown)
            self._shutdown = None
        if self._pool.started:
            self._pool.stop()
        self._engine.dispose()
        if self._lock is not None:
            self._lock.unlock()
            self._lock = None
