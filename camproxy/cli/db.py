"""``camproxy db ...``: back up and check the database, also while the daemon runs.

``backup`` (SQLite) uses SQLite's online backup API (``accounts.snapshot``): one
consistent snapshot of the live database (WAL mode lets the daemon keep reading and
writing meanwhile) goes to a temporary file beside the destination, is checked with
``PRAGMA integrity_check`` and only then renamed into place, so the destination is
always either the old file or a complete, checked copy. A PostgreSQL database is backed
up with PostgreSQL's own ``pg_dump``; ``backup`` says so and exits 1.

``check`` shows the schema version and the number of users; on SQLite it first runs the
integrity check on the file itself, on PostgreSQL it shows the server's version.

Neither ever opens the database through ``Database.open``: that upgrades the schema,
and a backup must copy the database exactly as it is.

Exit status: 0 on success, 1 with one line on standard error on failure, 2 for a usage
error (from argparse).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from camproxy.accounts.engine import DatabaseError, describe, make_engine
from camproxy.accounts.location import MEMORY, DatabaseLocation
from camproxy.accounts.migrate import SchemaState, latest_version, read_state, schema_version
from camproxy.accounts.snapshot import connect_existing, integrity_problems, snapshot
from camproxy.cli.scaffold import Call, CommandGroup, Commands, group_main


@attrs.frozen
class DatabaseReport:
    """What a check found in one database."""

    path: str
    #: The file's size in bytes; None for PostgreSQL.
    size: int | None
    schema_version: int
    users: int | None
    problems: tuple[str, ...]
    #: The server, e.g. ``PostgreSQL 15.14``; None for SQLite.
    server: str | None = None

    @property
    def intact(self) -> bool:
        """Whether ``PRAGMA integrity_check`` said ``ok`` (always, for PostgreSQL)."""
        return not self.problems

    def summary(self) -> str:
        """One line: size (or server), schema version, users, integrity."""
        latest = latest_version()
        if self.schema_version == latest:
            version = f"schema version {self.schema_version}"
        elif self.schema_version < latest:
            version = (
                f"schema version {self.schema_version} (the daemon upgrades it to {latest} "
                "at start)"
            )
        else:
            version = f"schema version {self.schema_version} (newer than this CamProxy, {latest})"
        if self.users is None:
            users = "no users table"
        else:
            users = f"{self.users} user{'' if self.users == 1 else 's'}"
        if self.server is not None:
            return f"{self.server}, {version}, {users}"
        integrity = "integrity ok" if self.intact else f"INTEGRITY FAILED: {self.problems[0]}"
        return f"{self.size} bytes, {version}, {users}, {integrity}"


def _users(connection: sa.Connection, state: SchemaState) -> int | None:
    if "users" not in state.tables:
        return None
    return int(connection.execute(sa.text("SELECT count(*) FROM users")).scalar_one())


def inspect_database(path: str) -> DatabaseReport:
    """Run ``PRAGMA integrity_check`` on the SQLite file ``path``; read its schema version
    and users.

    Raises ``DatabaseError`` if the file does not exist, ``sqlite3.Error`` if SQLite
    cannot read it at all (e.g. it is not a database).
    """
    if not os.path.isfile(path):
        raise DatabaseError(f"{path} does not exist")
    with closing(connect_existing(path)) as connection:
        problems = integrity_problems(connection)
        user_version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    engine = sa.create_engine(
        "sqlite://", creator=lambda: connect_existing(path), poolclass=NullPool
    )
    try:
        with engine.connect() as connection:
            state = read_state(connection)
            version = schema_version(state)
            users = None if problems else _users(connection, state)
    except DBAPIError:
        if not problems:
            raise
        version, users = user_version, None
    finally:
        engine.dispose()
    return DatabaseReport(path, os.path.getsize(path), version, users, problems)


def inspect_postgresql(location: DatabaseLocation) -> DatabaseReport:
    """Read a PostgreSQL database's schema version and users (and the server's version)."""
    engine = make_engine(location, pool_size=1)
    try:
        with engine.connect() as connection:
            state = read_state(connection)
            server = connection.execute(sa.text("SHOW server_version")).scalar_one()
            users = _users(connection, state)
    except DBAPIError as problem:
        raise DatabaseError(f"{location.display}: {describe(problem, location)}") from None
    finally:
        engine.dispose()
    release = str(server).split()[0]
    return DatabaseReport(
        location.display, None, schema_version(state), users, (), f"PostgreSQL {release}"
    )


def backup_target(destination: Path, source: str, now: float | None = None) -> Path:
    """``destination``, or for an existing directory ``SOURCE-STEM-YYYYmmdd-HHMMSS.db`` in it."""
    if destination.is_dir():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        return destination / f"{Path(source).stem}-{stamp}.db"
    return destination


def backup_database(source: str, destination: Path, now: float | None = None) -> DatabaseReport:
    """Copy the SQLite database ``source`` to ``destination`` (see ``backup_target``).

    The copy is one consistent snapshot, taken while other processes may be writing, in
    rollback-journal mode (one self-contained file, mode 0600); it replaces
    ``destination`` only after its integrity check passed. Returns the copy's report.
    Raises ``DatabaseError`` (with a one-line message), ``sqlite3.Error`` or ``OSError``.
    """
    if source == MEMORY:
        raise DatabaseError("the database is in memory: there is no file to back up")
    if not os.path.isfile(source):
        raise DatabaseError(f"{source} does not exist")
    target = backup_target(destination, source, now)
    if not target.parent.is_dir():
        raise DatabaseError(f"the directory {target.parent} does not exist")
    if target.exists() and os.path.samefile(target, source):
        raise DatabaseError(f"{target} is the database itself")
    snapshot(source, target)
    return attrs.evolve(inspect_database(str(target)), path=str(target))


def _declare(commands: Commands) -> None:
    backup = commands.add(
        "backup",
        "copy the database to PATH, consistently and atomically",
        description="Copy a consistent snapshot of the SQLite database to PATH (via a "
        "temporary file renamed into place) and check the copy's integrity. For "
        "PostgreSQL use pg_dump.",
    )
    backup.add_argument(
        "path",
        metavar="PATH",
        type=Path,
        help="the file to write (replaced if it exists), or an existing directory to "
        "write NAME-YYYYmmdd-HHMMSS.db into",
    )
    commands.add(
        "check",
        "check the database's integrity and show its schema version",
        description="Run SQLite's integrity check on the database and show its schema "
        "version and number of users (on PostgreSQL: the server's version, the schema "
        "version and the number of users).",
    )


async def _perform(call: Call) -> str:
    """Carry out one command; the line to print on success."""
    location = call.location
    source = location.display
    if location.is_postgresql:
        if call.command == "backup":
            call.refuse(
                f"{source} is a PostgreSQL database: back it up with PostgreSQL's pg_dump "
                "(e.g. pg_dump --format=custom --file=camproxy.dump DBNAME); "
                "camproxy db backup copies SQLite files"
            )
        return f"{source}: {inspect_postgresql(location).summary()}"
    assert location.path is not None
    try:
        if call.command == "backup":
            report = backup_database(location.path, call.args.path)
            return f"backed up {source} to {report.path}: {report.summary()}"
        report = inspect_database(location.path)
    except (sqlite3.Error, OSError) as problem:
        call.refuse(f"{source}: {problem}")
    if not report.intact:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        call.refuse(f"{source} failed its integrity check: {report.problems[0]}{more}")
    return f"{source}: {report.summary()}"


GROUP = CommandGroup(
    name="db",
    summary="back up or check the database",
    description="Back up or check CamProxy's database; safe while the daemon runs.",
    declare=_declare,
    perform=_perform,
    command_in_errors=True,
)


def main(argv: Sequence[str] | None = None) -> int:
    """``camproxy db ...`` alone (``scripts/backup_db.py`` uses it)."""
    return group_main(GROUP, argv)


if __name__ == "__main__":
    sys.exit(main())
