"""``camproxy db ...``: back up and check the database file, also while the daemon runs.

``backup`` uses SQLite's online backup API: it copies one consistent snapshot of the live
database (WAL mode lets the daemon keep reading and writing meanwhile) into a temporary
file beside the destination, checks the copy with ``PRAGMA integrity_check`` and only
then renames it into place, so the destination is always either the old file or a
complete, checked copy. ``check`` runs the same integrity check on the database itself
and reports its schema version.

Both work with plain ``sqlite3`` in this process and never through ``Database.open``:
that upgrades the schema, and a backup must copy the file exactly as it is.

Exit status: 0 on success, 1 with one line on standard error on failure, 2 for a usage
error (from argparse).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing, suppress
from pathlib import Path
from urllib.parse import quote

import attrs

from camproxy.accounts.database import BUSY_TIMEOUT_MS, MEMORY, DatabaseError, schema_scripts
from camproxy.cli.user import database_option, database_path

_DEST: str = "db_command"
_SIDE_FILES = ("-journal", "-wal", "-shm")


@attrs.frozen
class DatabaseReport:
    """What a check found in one database file."""

    path: str
    size: int
    schema_version: int
    users: int | None
    problems: tuple[str, ...]

    @property
    def intact(self) -> bool:
        """Whether ``PRAGMA integrity_check`` said ``ok``."""
        return not self.problems

    def summary(self) -> str:
        """One line: size, schema version, users, integrity."""
        latest = len(schema_scripts())
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
        integrity = "integrity ok" if self.intact else f"INTEGRITY FAILED: {self.problems[0]}"
        return f"{self.size} bytes, {version}, {users}, {integrity}"


def _connect(path: str) -> sqlite3.Connection:
    """Open an existing file (never create one), waiting for the daemon's write locks."""
    uri = f"file:{quote(os.path.abspath(path))}?mode=rw"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)


def inspect_database(path: str) -> DatabaseReport:
    """Run ``PRAGMA integrity_check`` on ``path``; read its schema version and users.

    Raises ``DatabaseError`` if the file does not exist, ``sqlite3.Error`` if SQLite
    cannot read it at all (e.g. it is not a database).
    """
    if not os.path.isfile(path):
        raise DatabaseError(f"{path} does not exist")
    with closing(_connect(path)) as connection:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
        problems = tuple(str(row[0]) for row in rows if row[0] != "ok")
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        has_users = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'users'"
        ).fetchone()
        users = None
        if has_users and not problems:
            users = int(connection.execute("SELECT count(*) FROM users").fetchone()[0])
    return DatabaseReport(path, os.path.getsize(path), version, users, problems)


def backup_target(destination: Path, source: str, now: float | None = None) -> Path:
    """``destination``, or for an existing directory ``SOURCE-STEM-YYYYmmdd-HHMMSS.db`` in it."""
    if destination.is_dir():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        return destination / f"{Path(source).stem}-{stamp}.db"
    return destination


def _fsync(path: Path, *, directory: bool = False) -> None:
    descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_with_side_files(path: Path) -> None:
    for suffix in ("", *_SIDE_FILES):
        with suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def backup_database(source: str, destination: Path, now: float | None = None) -> DatabaseReport:
    """Copy the database ``source`` to ``destination`` (see ``backup_target``), atomically.

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
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(descriptor)
    copy = Path(temporary)
    try:
        with closing(_connect(source)) as live, closing(_connect(temporary)) as backup:
            live.backup(backup)
            # The snapshot carries the live file's WAL flag; a backup is better as one file.
            backup.execute("PRAGMA journal_mode = DELETE").fetchone()
        report = inspect_database(temporary)
        if not report.intact:
            raise DatabaseError(
                f"the copy of {source} failed its integrity check ({report.problems[0]}); "
                f"{target} was not written"
            )
        _fsync(copy)
        os.replace(copy, target)
        _fsync(target.parent, directory=True)
    except BaseException:
        _remove_with_side_files(copy)
        raise
    return attrs.evolve(report, path=str(target))


def add_db_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``db`` command and its subcommands to a top-level ``subparsers``.

    Returns the ``db`` parser. Hand the parsed arguments to ``run_db_command``.
    """
    database = database_option()
    db = subparsers.add_parser(
        "db",
        parents=[database],
        help="back up or check the database",
        description="Back up or check CamProxy's SQLite database; safe while the daemon runs.",
        allow_abbrev=False,
    )
    commands = db.add_subparsers(dest=_DEST, required=True, metavar="COMMAND")
    backup = commands.add_parser(
        "backup",
        parents=[database],
        help="copy the database to PATH, consistently and atomically",
        description="Copy a consistent snapshot of the database to PATH (via a temporary "
        "file renamed into place) and check the copy's integrity.",
        allow_abbrev=False,
    )
    backup.add_argument(
        "path",
        metavar="PATH",
        type=Path,
        help="the file to write (replaced if it exists), or an existing directory to "
        "write NAME-YYYYmmdd-HHMMSS.db into",
    )
    commands.add_parser(
        "check",
        parents=[database],
        help="check the database's integrity and show its schema version",
        description="Run SQLite's integrity check on the database and show its schema "
        "version and number of users.",
        allow_abbrev=False,
    )
    return db


def run_db_command(args: argparse.Namespace) -> int:
    """Run a command parsed by the parser from ``add_db_commands``; the exit status."""
    action: str = getattr(args, _DEST)
    source = "the database"
    try:
        source = database_path(args)
        if action == "backup":
            report = backup_database(source, args.path)
            print(f"backed up {source} to {report.path}: {report.summary()}")
            return 0
        report = inspect_database(source)
    except (DatabaseError, ValueError) as problem:
        print(f"camproxy db {action}: {problem}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as problem:
        print(f"camproxy db {action}: {source}: {problem}", file=sys.stderr)
        return 1
    if not report.intact:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        print(
            f"camproxy db {action}: {source} failed its integrity check: "
            f"{report.problems[0]}{more}",
            file=sys.stderr,
        )
        return 1
    print(f"{source}: {report.summary()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m camproxy.dbcli db ...``: the same commands without ``cli.py``."""
    parser = argparse.ArgumentParser(prog="camproxy", allow_abbrev=False)
    add_db_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_db_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
