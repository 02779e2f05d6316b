"""``camproxy token ...``: API tokens from the shell (CONTRACT §5).

``add`` prints the new token alone on the last line of its output, and that is the
only time it is shown: the database keeps its hash. ``list`` shows each token's first
characters, never the token. The commands may run while the daemon runs: a revoked
token fails at its next use (and ``TokenStore.alive`` reports it gone).

The database plumbing and the exit statuses are those of ``camproxy user``
(``usercli``): 0 on success, 1 with one line on standard error when refused, 2 for a
usage error (from argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from camproxy.accounts.database import Database
from camproxy.accounts.passwords import BcryptHasher
from camproxy.accounts.tokens import CONTROL, SCOPES, VIEW, ApiToken, TokenStore
from camproxy.accounts.users import UserStore
from camproxy.cli.user import (
    database_option,
    database_path,
    format_table,
    format_time,
    run_on_database,
)

_DEST: str = "token_command"


def add_token_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``token`` command and its subcommands to a top-level ``subparsers``.

    Returns the ``token`` parser. Hand the parsed arguments to ``run_token_command``.
    """
    database = database_option()
    token = subparsers.add_parser(
        "token",
        parents=[database],
        help="manage API tokens",
        description="Manage the API tokens of CamProxy's database (for /stream.mjpg, "
        "/snapshot.jpg and /api/).",
        allow_abbrev=False,
    )
    commands = token.add_subparsers(dest=_DEST, required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=[database], help=summary, description=summary, allow_abbrev=False
        )

    add = command("add", "create a token for a user and print it (it is shown only once)")
    add.add_argument("user", metavar="USER")
    add.add_argument("name", metavar="NAME", help="what the token is for, unique per user")
    add.add_argument(
        "--scope",
        choices=SCOPES,
        default=VIEW,
        help="view: stream, snapshot and status; control: also move the camera and switch "
        "its light, if the user may (default: view)",
    )
    listing = command("list", "list the tokens, of one user or of all")
    listing.add_argument("user", metavar="USER", nargs="?")
    revoke = command("revoke", "revoke (delete) a token of a user")
    revoke.add_argument("user", metavar="USER")
    revoke.add_argument("name", metavar="NAME")
    return token


def _table(tokens: Sequence[ApiToken]) -> str:
    rows = [("USER", "NAME", "SCOPE", "PREFIX", "CREATED", "LAST USED")]
    rows += [
        (
            t.username,
            t.name,
            t.scope,
            f"{t.prefix}...",
            format_time(t.created_at),
            format_time(t.last_used_at),
        )
        for t in tokens
    ]
    return format_table(rows)


async def _add(reactor: Any, db: Database, args: argparse.Namespace) -> str:
    token, secret = await TokenStore(db, reactor).create(args.user, args.name, args.scope)
    lines = [f"Token {token.name!r} for {token.username!r} ({token.scope})."]
    user = await UserStore(db, BcryptHasher(reactor), reactor).get(token.username)
    if user is not None and not user.active:
        lines.append(f"{user.username!r} is disabled: the token works once the user is enabled.")
    if token.scope == CONTROL and user is not None and not user.may_control:
        lines.append(
            f"{user.username!r} may not control the camera: the token only views until "
            f"allowed (camproxy user control {user.username})."
        )
    lines.append("Copy it now; it is not shown again:")
    # The one place a token is ever printed: alone, on the last line.
    lines.append(secret)
    return "\n".join(lines)


async def _perform(reactor: Any, db: Database, args: argparse.Namespace) -> str:
    """Carry out one command; the text to print on success."""
    action: str = getattr(args, _DEST)
    store = TokenStore(db, reactor)
    if action == "add":
        return await _add(reactor, db, args)
    if action == "list":
        tokens = await store.list(args.user)
        if tokens:
            return _table(tokens)
        whose = "" if args.user is None else f" for {args.user!r}"
        return f"no tokens{whose}; create one with: camproxy token add USER NAME"
    if action == "revoke":
        await store.revoke(args.user, args.name)
        return f"revoked the token {args.name!r} of {args.user!r}"
    raise AssertionError(f"unknown token command {action!r}")


def run_token_command(args: argparse.Namespace) -> int:
    """Run a command parsed by the parser from ``add_token_commands``; the exit status.

    Runs the reactor (``react``), so call it at most once per process, from a process
    whose reactor is not running.
    """
    try:
        path = database_path(args)
    except ValueError as problem:
        print(f"camproxy token: {problem}", file=sys.stderr)
        return 1
    return run_on_database("token", path, lambda reactor, db: _perform(reactor, db, args))
