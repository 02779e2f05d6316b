"""``camproxy user ...``: account management from the shell (CONTRACT §4).

The commands use the daemon's own ``UserStore`` on the same database (a SQLite file or
PostgreSQL), with queries and bcrypt on threads, under ``twisted.internet.task.react``
(see ``scaffold``). They may run while the daemon runs: ``disable``, ``delete`` and
``passwd`` delete the user's sessions, and the daemon closes their sockets at its next
``SessionStore.alive`` check.

Exit status: 0 on success, 1 with one line on standard error when refused, 2 for a
usage error (from argparse).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Sequence

from camproxy.accounts.passwords import BcryptHasher, check_new_password
from camproxy.accounts.users import User, UserStore
from camproxy.cli.scaffold import Call, CommandGroup, Commands, group_main


def _declare(commands: Commands) -> None:
    def named(name: str, summary: str) -> argparse.ArgumentParser:
        parser = commands.add(name, summary)
        parser.add_argument("name", metavar="NAME")
        return parser

    def password_stdin(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--password-stdin", action="store_true", help="read the password as one line of stdin"
        )

    add = named("add", "create a user")
    add.add_argument("--admin", action="store_true", help="make the user an admin")
    password_stdin(add)
    commands.add("list", "list the users")
    password_stdin(named("passwd", "set a user's password and end the user's sessions"))
    named("disable", "stop a user from logging in and end the user's sessions")
    named("enable", "let a disabled user log in again")
    named("promote", "make a user an admin")
    named("demote", "make an admin an ordinary user")
    named("delete", "delete a user and end the user's sessions")
    named("control", "let a user move the camera and switch its light")
    named("nocontrol", "let a user only watch (admins can always control)")


def _read_password(call: Call) -> str:
    if call.args.password_stdin:
        line = call.streams.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    else:
        try:
            password = getpass.getpass(f"Password for {call.args.name}: ")
            again = getpass.getpass("Repeat the password: ")
        except (EOFError, KeyboardInterrupt):
            call.refuse("no password given")
        if password != again:
            call.refuse("the passwords do not match")
    check_new_password(password)
    return password


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_time(seconds: float | None) -> str:
    """A time for a listing: local ``YYYY-MM-DD HH:MM``, or ``never`` for None."""
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` (the header first) as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _table(users: Sequence[User]) -> str:
    rows = [("NAME", "ADMIN", "ACTIVE", "CONTROL", "LAST LOGIN")]
    rows += [
        (
            u.username,
            _yes(u.is_admin),
            _yes(u.active),
            _yes(u.can_control),
            format_time(u.last_login),
        )
        for u in users
    ]
    return format_table(rows)


async def _perform(call: Call) -> str:
    """Carry out one command; the line to print on success."""
    action, args = call.command, call.args
    # Asked for before the database is opened, as the prompt comes first.
    password = _read_password(call) if action in ("add", "passwd") else None
    store = UserStore(await call.database(), BcryptHasher(call.reactor), call.reactor)
    if action == "list":
        users = await store.list()
        if not users:
            return "no users yet; create one with: camproxy user add NAME --admin"
        return _table(users)
    name: str = args.name
    if action == "add":
        assert password is not None
        user = await store.add(name, password, admin=args.admin)
        return f"created {'admin' if user.is_admin else 'user'} {user.username!r}"
    if action == "passwd":
        assert password is not None
        user = await store.set_password(name, password)
        return f"changed the password of {user.username!r} and ended the user's sessions"
    if action in ("disable", "enable"):
        user = await store.set_active(name, action == "enable")
        if user.active:
            return f"enabled {user.username!r}"
        return f"disabled {user.username!r} and ended the user's sessions"
    if action in ("promote", "demote"):
        user = await store.set_admin(name, action == "promote")
        return f"{user.username!r} is {'now' if user.is_admin else 'no longer'} an admin"
    if action in ("control", "nocontrol"):
        user = await store.set_can_control(name, action == "control")
        done = f"{user.username!r} {'may' if user.can_control else 'may not'} control the camera"
        if user.is_admin and not user.can_control:
            done += " once no longer an admin (admins always may)"
        return done
    if action == "delete":
        existing = await store.get(name)
        await store.delete(name)
        shown = existing.username if existing is not None else name
        return f"deleted {shown!r} and the user's sessions"
    raise AssertionError(f"unknown user command {action!r}")


GROUP = CommandGroup(
    name="user",
    summary="manage user accounts",
    description="Manage the accounts of CamProxy's database.",
    declare=_declare,
    perform=_perform,
)


def main(argv: Sequence[str] | None = None) -> int:
    """``camproxy user ...`` alone (``scripts/create_admin.py`` uses it)."""
    return group_main(GROUP, argv)


if __name__ == "__main__":
    sys.exit(main())
