"""Back up CamProxy's database, as the Flask version's scripts/backup_db.py promised.

``python scripts/backup_db.py [DEST] [--database PATH]`` copies the database the daemon
uses (or ``--database PATH``) to DEST, by default ``backups/NAME-YYYYmmdd-HHMMSS.db``
(``backups/robocam-...db`` for the default ``robocam.db``; ``backups/`` is created). It
is the same as ``camproxy db backup``, whose code it runs: safe while the daemon runs,
atomic, integrity-checked. Exit status as for that command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from camproxy.cli import db as dbcli

DEFAULT_DIRECTORY = Path("backups")


def main(argv: Sequence[str] | None = None) -> int:
    """Back up the database to DEST or into ``backups/``. The exit status."""
    parser = argparse.ArgumentParser(description="Back up CamProxy's SQLite database.")
    parser.add_argument(
        "destination",
        metavar="DEST",
        nargs="?",
        help="file or existing directory to write the copy to (default: backups/)",
    )
    parser.add_argument("--database", metavar="PATH", help="the SQLite file to back up")
    args = parser.parse_args(argv)
    destination = args.destination
    if destination is None:
        DEFAULT_DIRECTORY.mkdir(mode=0o700, exist_ok=True)
        destination = str(DEFAULT_DIRECTORY)
    command = ["db", "backup"]
    if args.database:
        command += ["--database", args.database]
    return dbcli.main([*command, "--", destination])


if __name__ == "__main__":
    sys.exit(main())
