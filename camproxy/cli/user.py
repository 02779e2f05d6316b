"""``camproxy user ...``: account management from the shell (CONTRACT §4).

The commands use the daemon's own ``UserStore`` on the same database file, with SQLite
and bcrypt on threads, under ``twisted.internet.task.react``. They may run while the
daemon runs: ``disable``, ``delete`` and ``passwd`` delete the user's sessions, and the
daemon closes their sockets at its next ``SessionStore.alive`` check.

Exit status: 0 on success, 1 with one line on standard error when refused, 2 for a
usage error (from argparse).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sqlite3
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
from twisted.internet.task import react

from camproxy.accounts.database import Database, DatabaseError, locate_database
from camproxy.accounts.passwords import BadPassword, BcryptHasher, check_new_password
from camproxy.accounts.users import AccountError, User, UserStore

_DEST: str = "user_command"


class _RefusedError(Exception):
    """The command cannot go on; the message is the one line for standard error."""


@attrs.frozen
class _Streams:
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO


def database_option() -> argparse.ArgumentParser:
    """A parent parser with ``--database PATH``, for every command on the database.

    Give it to the command and to each subcommand, so the option goes either side of
    the subcommand's name; ``database_path`` reads it.
    """
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the SQLite file (default: DATABASE_URL from the environment or .env, "
        "else robocam.db)",
    )
    return database


def database_path(args: argparse.Namespace) -> str:
    """``--database``, else the file the daemon would use (``ValueError`` if unusable)."""
    path: str = getattr(args, "database", None) or locate_database(os.environ, Path.cwd())
    return path


def add_user_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``user`` command and its subcommands to a top-level ``subparsers``.

    Returns the ``user`` parser. Hand the parsed arguments to ``run_user_command``.
    """
    database = database_option()
    user = subparsers.add_parser(
        "user",
        parents=[database],
        help="manage user accounts",
        description="Manage the accounts of CamProxy's database.",
        allow_abbrev=False,
    )
    commands = user.add_subparsers(dest=_DEST, required=True, metavar="COMMAND")

    def command(name: str, summary: str, *, named: bool = True) -> argparse.ArgumentParser:
        parser = commands.add_parser(
            name, parents=[database], help=summary, description=summary, allow_abbrev=False
        )
        if named:
            parser.add_argument("name", metavar="NAME")
        return parser

    add = command("add", "create a user")
    add.add_argument("--admin", action="store_true", help="make the user an admin")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password as one line of stdin"
    )
    command("list", "list the users", named=False)
    passwd = command("passwd", "set a user's password and end the user's sessions")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password as one line of stdin"
    )
    command("disable", "stop a user from logging in and end the user's sessions")
    command("enable", "let a disabled user log in again")
    command("promote", "make a user an admin")
    command("demote", "make an admin an ordinary user")
    command("delete", "delete a user and end the user's sessions")
    command("control", "let a user move the camera and switch its light")
    command("nocontrol", "let a user only watch (admins can always control)")
    return user


def _read_password(args: argparse.Namespace, streams: _Streams) -> str:
    if args.password_stdin:
        line = streams.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    else:
        try:
            password = getpass.getpass(f"Password for {args.name}: ")
            again = getpass.getpass("Repeat the password: ")
        except (EOFError, KeyboardInterrupt):
            raise _RefusedError("no password given") from None
        if password != again:
            raise _RefusedError("the passwords do not match")
    check_new_password(password)
    return password


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_time(seconds: float | None) -> str:
    """A time for a listing: local ``YYYY-MM-DD HH:MM``, or ``never`` for None."""
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


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


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` (the header first) as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _perform(store: UserStore, args: argparse.Namespace, password: str | None) -> str:
    """Carry out one command; the line to print on success."""
    action: str = getattr(args, _DEST)
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


async def _main(
    reactor: Any,
    command: str,
    path: str,
    perform: Callable[[Any, Database], Awaitable[str]],
    streams: _Streams,
) -> None:
    code = 1
    try:
        db = await Database.open(reactor, path)
    except (DatabaseError, sqlite3.Error, OSError) as problem:
        print(f"camproxy {command}: cannot open {path}: {problem}", file=streams.stderr)
        raise SystemExit(code) from None
    try:
        done = await perform(reactor, db)
    except (AccountError, BadPassword, DatabaseError, sqlite3.Error) as problem:
        print(f"camproxy {command}: {problem}", file=streams.stderr)
    except Exception:
        # A bug, not a refusal: the traceback is what a report needs.
        traceback.print_exc(file=streams.stderr)
    else:
        print(done, file=streams.stdout)
        code = 0
    finally:
        db.close()
    raise SystemExit(code)


def run_on_database(
    command: str, path: str, perform: Callable[[Any, Database], Awaitable[str]]
) -> int:
    """Open the database at ``path``, run ``perform(reactor, db)``, print what it returns.

    The exit status: 0 on success; 1 with one line ``camproxy COMMAND: ...`` on
    standard error when the database cannot be opened or ``perform`` is refused
    (``AccountError``, ``BadPassword``, ``DatabaseError``, ``sqlite3.Error``); 1 with a
    traceback for anything else. Runs the reactor (``react``), so call it at most once
    per process, from a process whose reactor is not running.
    """
    streams = _Streams(sys.stdin, sys.stdout, sys.stderr)
    try:
        react(_main, (command, path, perform, streams))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


def run_user_command(args: argparse.Namespace) -> int:
    """Run a command parsed by the parser from ``add_user_commands``; the exit status.

    Runs the reactor (``react``), so call it at most once per process, from a process
    whose reactor is not running.
    """
    streams = _Streams(sys.stdin, sys.stdout, sys.stderr)
    try:
        path = database_path(args)
        action: str = getattr(args, _DEST)
        password = _read_password(args, streams) if action in ("add", "passwd") else None
    except (ValueError, _RefusedError) as problem:
        print(f"camproxy user: {problem}", file=streams.stderr)
        return 1

    def perform(reactor: Any, db: Database) -> Awaitable[str]:
        return _perform(UserStore(db, BcryptHasher(reactor), reactor), args, password)

    return run_on_database("user", path, perform)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m camproxy.usercli user ...``: the same commands without ``cli.py``."""
    parser = argparse.ArgumentParser(prog="camproxy", allow_abbrev=False)
    add_user_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_user_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
