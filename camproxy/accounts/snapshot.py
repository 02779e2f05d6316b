"""Consistent copies of a live SQLite database file, made with SQLite's online backup API.

The backup API reads the database through SQLite, write-ahead log included, as one
consistent snapshot while other processes go on reading and writing. The copy is written
to a temporary file beside the target, switched to rollback-journal mode (one
self-contained file, readable by its owner only), optionally checked with ``PRAGMA
integrity_check``, flushed to disk and only then renamed into place: the target is
always either what it was or a complete copy.

Used for the copy taken before every schema upgrade and by ``camproxy db backup``.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing, suppress
from pathlib import Path
from typing import Final
from urllib.parse import quote

from camproxy.accounts.engine import BUSY_TIMEOUT_MS, DatabaseError

_SIDE_FILES: Final = ("-journal", "-wal", "-shm")


def connect_existing(path: str | Path) -> sqlite3.Connection:
    """Open an existing file (never create one), waiting for other processes' locks.

    Autocommit at the driver level; raises ``sqlite3.Error`` if it cannot be opened.
    """
    uri = f"file:{quote(os.path.abspath(path))}?mode=rw"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)


def integrity_problems(connection: sqlite3.Connection) -> tuple[str, ...]:
    """What ``PRAGMA integrity_check`` found; empty when it said ``ok``."""
    rows = connection.execute("PRAGMA integrity_check").fetchall()
    return tuple(str(row[0]) for row in rows if row[0] != "ok")


def fsync(path: Path, *, directory: bool = False) -> None:
    """Flush a file (or a directory's entries) to disk."""
    descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_with_side_files(path: Path) -> None:
    """Delete a database file and its journal, WAL and shared-memory files, if any."""
    for suffix in ("", *_SIDE_FILES):
        with suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def snapshot(source: str | Path, target: Path, *, check: bool = True) -> None:
    """Copy the SQLite database ``source`` to ``target`` (replaced if it exists).

    With ``check``, a copy that fails its integrity check raises ``DatabaseError`` and
    ``target`` is left as it was. Raises ``sqlite3.Error`` or ``OSError`` too.
    """
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(descriptor)
    copy = Path(temporary)
    try:
        with closing(connect_existing(source)) as live, closing(connect_existing(copy)) as out:
            live.backup(out)
            # The snapshot carries the live file's WAL flag; a copy is better as one file.
            out.execute("PRAGMA journal_mode = DELETE").fetchone()
            problems = integrity_problems(out) if check else ()
        if problems:
            raise DatabaseError(
                f"the copy of {source} failed its integrity check ({problems[0]}); "
                f"{target} was not written"
            )
        fsync(copy)
        os.replace(copy, target)
        fsync(target.parent, directory=True)
    except BaseException:
        remove_with_side_files(copy)
        raise
