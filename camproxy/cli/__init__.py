"""The ``camproxy`` console script: administration commands beside the daemon.

The daemon itself runs under twistd (``twistd -n camproxy``); these commands work on
the same database and settings. Each group of commands is a ``scaffold.CommandGroup``
listed in :data:`GROUPS` (see ``scaffold`` for how to add one).
"""

from __future__ import annotations

import argparse
import sys

from camproxy.cli import camera, cluster, db, token, user
from camproxy.cli.scaffold import CommandGroup, run

#: The command groups, in the order ``camproxy --help`` lists them.
GROUPS: tuple[CommandGroup, ...] = (
    user.GROUP,
    camera.GROUP,
    token.GROUP,
    db.GROUP,
    cluster.GROUP,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camproxy",
        description="Manage CamProxy. Run the daemon itself with: twistd -n camproxy [options]",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.add_to(commands)
    commands.add_parser(
        "democam",
        help="run an emulated camera alone (--kind robocam|esp32|esp32-cam-webserver|mjpeg|jpeg)",
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
    for group in GROUPS:
        if args.command == group.name:
            return run(group, args)
    return 2
