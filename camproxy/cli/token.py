"""``camproxy token ...``: API tokens from the shell (CONTRACT §5).

``add`` prints the new token alone on the last line of its output, and that is the
only time it is shown: the database keeps its hash. ``list`` shows each token's first
characters, never the token. The commands may run while the daemon runs: a revoked
token fails at its next use (and ``TokenStore.alive`` reports it gone).

The database, the options and the exit statuses are the scaffold's (``scaffold``): 0 on
success, 1 with one line on standard error when refused, 2 for a usage error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from camproxy.accounts.cameras import CameraStore
from camproxy.accounts.passwords import BcryptHasher
from camproxy.accounts.tokens import CONTROL, SCOPES, VIEW, ApiToken, TokenStore
from camproxy.accounts.users import UserStore
from camproxy.cli.scaffold import Call, CommandGroup, Commands, group_main
from camproxy.cli.user import format_table, format_time


def _declare(commands: Commands) -> None:
    add = commands.add("add", "create a token for a user and print it (it is shown only once)")
    add.add_argument("user", metavar="USER")
    add.add_argument("name", metavar="NAME", help="what the token is for, unique per user")
    add.add_argument(
        "--scope",
        choices=SCOPES,
        default=VIEW,
        help="view: stream, snapshot and status; control: also move the camera and switch "
        "its light, if the user may (default: view)",
    )
    add.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="CAMERA",
        help="limit the token to this camera (repeatable; default: every camera the user "
        "may access)",
    )
    listing = commands.add("list", "list the tokens, of one user or of all")
    listing.add_argument("user", metavar="USER", nargs="?")
    revoke = commands.add("revoke", "revoke (delete) a token of a user")
    revoke.add_argument("user", metavar="USER")
    revoke.add_argument("name", metavar="NAME")


def _table(tokens: Sequence[ApiToken], limits: dict[str, frozenset[str]]) -> str:
    rows = [("USER", "NAME", "SCOPE", "CAMERAS", "PREFIX", "CREATED", "LAST USED")]
    rows += [
        (
            t.username,
            t.name,
            t.scope,
            ",".join(sorted(limits[t.id])) if t.id in limits else "all",
            f"{t.prefix}...",
            format_time(t.created_at),
            format_time(t.last_used_at),
        )
        for t in tokens
    ]
    return format_table(rows)


async def _add(call: Call, tokens: TokenStore) -> str:
    args = call.args
    token, secret = await tokens.create(args.user, args.name, args.scope, args.camera)
    limited = f", cameras {', '.join(sorted(set(args.camera)))}" if args.camera else ""
    lines = [f"Token {token.name!r} for {token.username!r} ({token.scope}{limited})."]
    users = UserStore(await call.database(), BcryptHasher(call.reactor), call.reactor)
    user = await users.get(token.username)
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


async def _perform(call: Call) -> str:
    """Carry out one command; the text to print on success."""
    args = call.args
    tokens = TokenStore(await call.database(), call.reactor)
    if call.command == "add":
        return await _add(call, tokens)
    if call.command == "list":
        listed = await tokens.list(args.user)
        if listed:
            cameras = CameraStore(await call.database(), call.reactor)
            return _table(listed, await cameras.token_cameras(t.id for t in listed))
        whose = "" if args.user is None else f" for {args.user!r}"
        return f"no tokens{whose}; create one with: camproxy token add USER NAME"
    if call.command == "revoke":
        await tokens.revoke(args.user, args.name)
        return f"revoked the token {args.name!r} of {args.user!r}"
    raise AssertionError(f"unknown token command {call.command!r}")


GROUP = CommandGroup(
    name="token",
    summary="manage API tokens",
    description="Manage the API tokens of CamProxy's database (for /stream.mjpg, "
    "/snapshot.jpg and /api/).",
    declare=_declare,
    perform=_perform,
)


def main(argv: Sequence[str] | None = None) -> int:
    """``camproxy token ...`` alone."""
    return group_main(GROUP, argv)


if __name__ == "__main__":
    sys.exit(main())
