"""CamProxy's SQLite database: one connection on its own thread, a versioned schema.

Every query runs in the thread of an ``adbapi.ConnectionPool`` that holds exactly one
connection, so this process never has two writers of its own and the reactor thread
never waits on SQLite. Other processes (``camproxy user ...``) may write the same file
at the same time: WAL mode and a busy timeout let them take turns, and every write is
one ``BEGIN IMMEDIATE`` transaction so that check-then-change logic (the last-admin
guard, for one) holds across processes.

The schema version is ``PRAGMA user_version``; ``camproxy/schema/NNN_name.sql`` upgrades
version NNN-1 to NNN, each in one transaction. A database made by the Flask version of
CamProxy (table ``users`` with a ``password`` column, user_version 0) is converted in
place on first open.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from collections.abc import Callable, Coroutine, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from dotenv import dotenv_values
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.lockfile import FilesystemLock

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_DATABASE: Final = "robocam.db"
MEMORY: Final = ":memory:"
BUSY_TIMEOUT_MS: Final = 10_000

_SCRIPT_NAME: Final = re.compile(r"(\d{3})_\w+\.sql")
_FLASK_IMPORT: Final = "flask_import.sql"


class DatabaseError(Exception):
    """The database file cannot be used; the message is one line, fit for a user."""


class DatabaseInUse(DatabaseError):
    """Another CamProxy daemon holds the database (see ``Database.open(exclusive=True)``)."""


def database_path_from_url(url: str) -> str:
    """The file path named by a ``DATABASE_URL``, as the Flask version understood it.

    ``sqlite:///relative.db`` is relative to the working directory (returned as is),
    ``sqlite:////absolute/path.db`` is absolute, ``sqlite://`` and ``sqlite:///:memory:``
    are an in-memory database. Anything else raises ``ValueError``.
    """
    prefix = "sqlite:///"
    if url.strip() in ("sqlite://", "sqlite:///:memory:"):
        return MEMORY
    if not url.startswith(prefix):
        raise ValueError(
            f"DATABASE_URL {url!r} is not supported: use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = url[len(prefix) :]
    if not path or "?" in path:
        raise ValueError(
            f"DATABASE_URL {url!r} must name a file, e.g. sqlite:///robocam.db "
            "(query parameters are not supported)"
        )
    return path


def locate_database(environ: Mapping[str, str], cwd: Path) -> str:
    """The database path the daemon uses when no ``--database`` option is given.

    ``DATABASE_URL`` from ``environ`` (the process environment), else from ``.env`` in
    ``cwd``, else ``robocam.db``. Raises ``ValueError`` for an unusable ``DATABASE_URL``.
    """
    url = environ.get("DATABASE_URL") or dotenv_values(cwd / ".env").get("DATABASE_URL")
    if not url:
        return DEFAULT_DATABASE
    return database_path_from_url(url)


def as_deferred(
    function: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Deferred[T]]:
    """Decorate an ``async def`` so that calling it returns a ``Deferred``."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(function(*args, **kwargs))

    return wrapper


def schema_scripts() -> list[str]:
    """The upgrade scripts in order: item ``i`` upgrades version ``i`` to ``i + 1``."""
    found: dict[int, str] = {}
    for entry in resources.files("camproxy.accounts").joinpath("schema").iterdir():
        match = _SCRIPT_NAME.fullmatch(entry.name)
        if match:
            found[int(match.group(1))] = entry.read_text(encoding="utf-8")
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(
            f"schema scripts must be numbered 001, 002, ... without gaps: {versions}"
        )
    return [found[version] for version in versions]


def _flask_import_script() -> str:
    return (
        resources.files("camproxy.accounts")
        .joinpath("schema")
        .joinpath(_FLASK_IMPORT)
        .read_text("utf-8")
    )


def _statements(script: str) -> Iterator[str]:
    """Split ``script`` into statements, as ``sqlite3.complete_statement`` sees them."""
    pending: list[str] = []
    for line in script.splitlines(keepends=True):
        pending.append(line)
        text = "".join(pending)
        if sqlite3.complete_statement(text):
            yield text
            pending.clear()
    rest = [line for line in pending if line.strip() and not line.strip().startswith("--")]
    if rest:
        raise RuntimeError(f"schema script ends inside a statement: {''.join(rest)!r}")


def _run_script(cursor: sqlite3.Cursor, script: str) -> None:
    # Not executescript(): it would commit the transaction this script must run in.
    for statement in _statements(script):
        cursor.execute(statement)


def _prepare_connection(connection: sqlite3.Connection) -> None:
    """Per-connection settings; ``adbapi`` calls this in the pool's thread."""
    try:
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA journal_mode = WAL").fetchone()
    except BaseException:
        # adbapi only keeps connections that opened fully; close this one ourselves.
        connection.close()
        raise


def _user_version(cursor: sqlite3.Cursor) -> int:
    version = cursor.execute("PRAGMA user_version").fetchone()[0]
    return int(version)


def _user_tables(cursor: sqlite3.Cursor) -> set[str]:
    rows = cursor.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
    )
    return {str(row[0]).lower() for row in rows}


def _columns(cursor: sqlite3.Cursor, table: str) -> set[str]:
    return {str(row[1]).lower() for row in cursor.execute(f"PRAGMA table_info({table})")}


def _is_flask_database(cursor: sqlite3.Cursor) -> bool:
    return "users" in _user_tables(cursor) and "password" in _columns(cursor, "users")


def _import_flask_users(cursor: sqlite3.Cursor, path: str, initial: str) -> list[str]:
    """Turn a Flask-version database into schema version 1; return notes for the log."""
    clashes = cursor.execute(
        "SELECT group_concat(username, ', ') FROM users "
        "GROUP BY username COLLATE NOCASE HAVING count(*) > 1"
    ).fetchall()
    if clashes:
        names = "; ".join(str(row[0]) for row in clashes)
        raise DatabaseError(
            f"cannot upgrade the Flask database {path}: user names now ignore case, and these "
            f"differ only in case: {names}; rename or delete all but one of each with sqlite3 first"
        )
    legacy_columns = _columns(cursor, "users")
    cursor.execute("ALTER TABLE users RENAME TO flask_users")
    if "is_admin" not in legacy_columns:
        cursor.execute("ALTER TABLE flask_users ADD COLUMN is_admin BOOLEAN")
    cursor.execute("DROP TABLE IF EXISTS alembic_version")
    _run_script(cursor, initial)
    try:
        _run_script(cursor, _flask_import_script())
    except sqlite3.Error as problem:
        raise DatabaseError(f"cannot upgrade the Flask database {path}: {problem}") from problem
    users, admins = cursor.execute(
        "SELECT count(*), coalesce(sum(is_admin), 0) FROM users"
    ).fetchone()
    notes = [f"upgraded the Flask database {path}: {users} users kept, {admins} of them admins"]
    if users and not admins:
        notes.append(
            "no user is an admin now (the Flask version never stored the admin flag); "
            "make one with: camproxy user promote NAME"
        )
    return notes


def _upgrade(connection: adbapi.Connection, path: str, scripts: list[str]) -> list[str]:
    """Bring the schema to ``len(scripts)``, one transaction per step; return log notes."""
    latest = len(scripts)
    notes: list[str] = []
    cursor = connection.cursor()
    try:
        if _user_version(cursor) == latest:
            return notes
        while True:
            # IMMEDIATE: a second process opening the same file waits here, then sees
            # the version this one wrote instead of upgrading twice.
            cursor.execute("BEGIN IMMEDIATE")
            try:
                version = _user_version(cursor)
                if version > latest:
                    raise DatabaseError(
                        f"{path} has schema version {version}, newer than this CamProxy "
                        f"knows ({latest}); upgrade CamProxy"
                    )
                if version == latest:
                    cursor.execute("COMMIT")
                    return notes
                if version == 0 and _user_tables(cursor):
                    if not _is_flask_database(cursor):
                        raise DatabaseError(
                            f"{path} is not a CamProxy database: it has tables "
                            f"({', '.join(sorted(_user_tables(cursor)))}) but no schema version"
                        )
                    notes += _import_flask_users(cursor, path, scripts[0])
                else:
                    _run_script(cursor, scripts[version])
                cursor.execute(f"PRAGMA user_version = {version + 1:d}")
                cursor.execute("COMMIT")
            except BaseException:
                if cursor.connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
    finally:
        cursor.close()


def _transaction(
    connection: adbapi.Connection,
    begin: str,
    function: Callable[Concatenate[sqlite3.Cursor, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    cursor = connection.cursor()
    try:
        cursor.execute(begin)
        try:
            result = function(cursor, *args, **kwargs)
        except BaseException:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
        return result
    finally:
        cursor.close()


def check_not_in_use(path: str) -> None:
    """Fail with ``DatabaseInUse`` if a live daemon holds ``path``'s lock right now.

    A probe only: the daemon takes the lock itself when it starts (after twistd has
    daemonized, so the lock names the process that keeps running).
    """
    if path == MEMORY:
        return
    _claim(path).unlock()


def _claim(path: str) -> FilesystemLock:
    lock_path = os.path.realpath(path) + ".lock"
    lock = FilesystemLock(lock_path)
    if not lock.lock():
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

    ``read`` and ``write`` run a function with a ``sqlite3.Cursor`` in the database
    thread, inside one transaction, and return a ``Deferred`` of its result. Rows are
    ``sqlite3.Row``.
    """

    log = Logger()

    def __init__(self, pool: adbapi.ConnectionPool, path: str, lock: FilesystemLock | None) -> None:
        """Use ``Database.open`` instead: this skips the schema upgrade."""
        self._pool = pool
        self._path = path
        self._lock = lock
        self._closed = False

    @classmethod
    def open(cls, reactor: Any, path: str, *, exclusive: bool = False) -> Deferred[Database]:
        """Open (creating or upgrading as needed) the database file at ``path``.

        ``reactor`` runs the pool's thread; ``":memory:"`` gives a private in-memory
        database. With ``exclusive`` a lock file beside the database (``PATH.lock``,
        holding this process id) makes a second daemon fail with ``DatabaseInUse``
        instead of sharing the file; the user command-line tools do not take it.
        Fails with ``DatabaseError`` for a file that is not ours or is too new.
        """
        return Deferred.fromCoroutine(cls._open(reactor, path, exclusive))

    @classmethod
    async def _open(cls, reactor: Any, path: str, exclusive: bool) -> Database:
        scripts = schema_scripts()
        lock = _claim(path) if exclusive and path != MEMORY else None
        pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            # Autocommit at the driver level: this module issues BEGIN and COMMIT itself.
            isolation_level=None,
            cp_min=1,
            cp_max=1,
            cp_openfun=_prepare_connection,
            cp_reactor=reactor,
        )
        try:
            notes = await pool.runWithConnection(_upgrade, path, scripts)
        except BaseException:
            pool.close()
            if lock is not None:
                lock.unlock()
            raise
        for note in notes:
            cls.log.warn("{note}", note=note)
        return cls(pool, path, lock)

    @property
    def path(self) -> str:
        """The file this database was opened from."""
        return self._path

    def read(
        self,
        function: Callable[Concatenate[sqlite3.Cursor, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """Run ``function(cursor, *args, **kwargs)`` in one read transaction."""
        return self._run("BEGIN", function, *args, **kwargs)

    def write(
        self,
        function: Callable[Concatenate[sqlite3.Cursor, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """Run ``function(cursor, *args, **kwargs)`` in one write transaction.

        The write lock is taken at the start, so what ``function`` reads stays true
        until it commits; an exception rolls everything back and fails the Deferred.
        """
        return self._run("BEGIN IMMEDIATE", function, *args, **kwargs)

    def _run(
        self,
        begin: str,
        function: Callable[Concatenate[sqlite3.Cursor, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        if self._closed:
            return fail(DatabaseError(f"the database {self._path} is closed"))
        result: Deferred[T] = self._pool.runWithConnection(
            _transaction, begin, function, *args, **kwargs
        )
        return result

    def schema_version(self) -> Deferred[int]:
        """The database's ``PRAGMA user_version``."""
        return self.read(_user_version)

    def close(self) -> None:
        """Wait for running queries, close the connection and stop the thread.

        Safe to call twice; queries issued afterwards fail with ``DatabaseError``.
        """
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        if self._lock is not None:
            self._lock.unlock()
