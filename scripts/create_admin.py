"""Create an admin account interactively, as the Flask version's scripts/create_admin.py did.

Asks for the name, then for the password twice (without echo), and creates the user as
an admin in the database the daemon uses (or ``--database PATH``). It is the same as
``camproxy user add NAME --admin``, whose code it runs. Exit status as for that command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from camproxy.cli import user as usercli


def main(argv: Sequence[str] | None = None) -> int:
    """Prompt for a name and password; create that admin. The exit status."""
    parser = argparse.ArgumentParser(description="Create a CamProxy admin account.")
    parser.add_argument(
        "--database", metavar="PATH", help="the SQLite file or postgresql:// URL to use"
    )
    args = parser.parse_args(argv)
    try:
        name = input("Admin user name: ").strip()
    except (EOFError, KeyboardInterrupt):
        print("\ncreate_admin: cancelled", file=sys.stderr)
        return 1
    command = ["user", "add", "--admin"]
    if args.database:
        command += ["--database", args.database]
    return usercli.main([*command, "--", name])


if __name__ == "__main__":
    sys.exit(main())
