"""The ``camproxy`` console script: administration commands beside the daemon.

The daemon itself runs under twistd (``twistd -n camproxy``); these commands work on
the same database and settings.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from camproxy.cli.db import add_db_commands
    from camproxy.cli.token import add_token_commands
    from camproxy.cli.user import add_user_commands

    parser = argparse.ArgumentParser(
        prog="camproxy",
        description="Manage CamProxy. Run the daemon itself with: twistd -n camproxy [options]",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_user_commands(commands)
    add_token_commands(commands)
    add_db_commands(commands)
    commands.add_parser(
        "democam", help="run the emulated RoboCam camera alone (for testing any client)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["democam"]:
        # The demo camera parses its own options (see `camproxy democam --help`).
        from camproxy.democam.robocam import main as democam_main

        democam_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    if args.command == "user":
        from camproxy.cli.user import run_user_command

        return run_user_command(args)
    if args.command == "token":
        from camproxy.cli.token import run_token_command

        return run_token_command(args)
    if args.command == "db":
        from camproxy.cli.db import run_db_command

        return run_db_command(args)
    return 2
