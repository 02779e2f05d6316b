"""The one scaffold of the ``camproxy`` command groups (``user``, ``token``, ``db``, ...).

A group is ``camproxy GROUP COMMAND [arguments]``. The scaffold gives every group the
same behaviour, so that no group writes it again:

- ``--database PATH|URL`` on the group and on each command (either side of the command's
  name); without it, the database the daemon would use (``DATABASE_URL`` from the
  environment or ``.env``, else ``robocam.db``), read by ``config.database_setting``;
- the command runs as a coroutine under ``twisted.internet.task.react``, with the
  accounts database opened (and its schema upgraded) on first use and closed at the end;
- exit status 0 and the command's text on standard output on success; 1 and one line
  ``camproxy GROUP: message`` on standard error when refused (``Refused``, any
  ``AccountError``, ``BadPassword``, ``DatabaseError``, a bad database setting, and the
  group's own ``refusals``); 1 and a traceback for anything else (a bug); 2 and argparse's
  usage message for a usage error.

Adding a group, e.g. ``camproxy camera ...``:

1. write ``camproxy/cli/camera.py``::

       def declare(commands: Commands) -> None:
           add = commands.add("add", "add a camera")
           add.add_argument("name", metavar="NAME")
           commands.add("list", "list the cameras")

       async def perform(call: Call) -> str:
           cameras = CameraStore(await call.database(), call.reactor)
           if call.command == "add":
               await cameras.add(call.args.name)
               return f"added the camera {call.args.name!r}"
           ...

       GROUP = CommandGroup(
           "camera", "manage cameras", "Manage the cameras of CamProxy's database.",
           declare, perform, refusals=(CameraError,),
       )

2. add ``camera.GROUP`` to ``GROUPS`` in ``camproxy/cli/__init__.py``.

``Call.refuse("...")`` (or raising ``Refused``) ends a command with exit status 1 and that
line; ``Call.usage_error("...")`` with exit status 2 and that line (a setting that is
missing altogether, which argparse cannot tell); ``Call.streams`` are the standard streams
(for reading a password, say).

A group that never touches the accounts database (``cluster``, which reads Redis) says
``database=False``: it gets no ``--database``, and a bad ``DATABASE_URL`` cannot stop it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TextIO

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import react

from camproxy.accounts.database import CannotOpen, Database, DatabaseError, locate
from camproxy.accounts.location import DatabaseLocation
from camproxy.accounts.passwords import BadPassword
from camproxy.accounts.users import AccountError
from camproxy.config import ConfigError, database_setting, read_environment

#: What every group treats as a refusal (one line, exit status 1) rather than a bug.
REFUSALS: tuple[type[BaseException], ...] = (AccountError, BadPassword, DatabaseError)


class Refused(Exception):
    """The command cannot go on; the message is the one line for standard error."""


class UsageError(Exception):
    """The command was called wrongly; one line on standard error, exit status 2."""


@attrs.frozen
class Streams:
    """The standard streams a command reads and writes."""

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO

    @classmethod
    def standard(cls) -> Streams:
        return cls(sys.stdin, sys.stdout, sys.stderr)


@attrs.define
class Call:
    """One run of one command: its arguments, the reactor, the database."""

    reactor: Any
    args: argparse.Namespace
    #: The command's name within its group (``add``, ``list``, ...).
    command: str
    _location: DatabaseLocation | None
    streams: Streams
    _database: Database | None = None

    @property
    def location(self) -> DatabaseLocation:
        """The accounts database's location (only in a group with ``database=True``)."""
        assert self._location is not None, "this command group declared database=False"
        return self._location

    async def database(self) -> Database:
        """The accounts database, opened (and upgraded) on first use; closed at the end."""
        if self._database is None:
            shown = self.location.display
            try:
                database = Database.open(self.reactor, self.location)
            except CannotOpen as problem:
                self.refuse(f"cannot open {shown}: {problem.reason}")
            except DatabaseError as problem:
                self.refuse(f"cannot open {shown}: {problem}")
            database.start()
            self._database = database
        return self._database

    def refuse(self, message: str) -> NoReturn:
        """End the command: exit status 1, ``message`` on standard error."""
        raise Refused(message)

    def usage_error(self, message: str) -> NoReturn:
        """End the command: exit status 2, ``message`` on standard error."""
        raise UsageError(message)

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None


class Commands:
    """Declares a group's commands; each gets ``--database`` (unless the group has no
    database) and ``allow_abbrev=False``."""

    def __init__(
        self,
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
        database: argparse.ArgumentParser | None,
    ) -> None:
        self._subparsers = subparsers
        self._database = database

    def add(
        self, name: str, summary: str, *, description: str | None = None
    ) -> argparse.ArgumentParser:
        """A new command; add its arguments to the parser returned."""
        return self._subparsers.add_parser(
            name,
            parents=[self._database] if self._database is not None else [],
            help=summary,
            description=description or summary,
            allow_abbrev=False,
        )


@attrs.frozen
class CommandGroup:
    """``camproxy NAME COMMAND ...``: what it declares and how it runs.

    :ivar declare: adds the commands, given a :class:`Commands`.
    :ivar perform: carries out the parsed command, given a :class:`Call`; returns the
        text for standard output (nothing is printed for an empty string).
    :ivar refusals: more exception types that mean "refused" for this group.
    :ivar command_in_errors: name the command in error lines (``camproxy db backup: ...``).
    :ivar database: whether the group uses the accounts database (and takes ``--database``).
    """

    name: str
    summary: str
    description: str
    declare: Callable[[Commands], None]
    perform: Callable[[Call], Awaitable[str]]
    refusals: tuple[type[BaseException], ...] = ()
    command_in_errors: bool = False
    database: bool = True

    @property
    def dest(self) -> str:
        return f"{self.name}_command"

    def add_to(
        self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> argparse.ArgumentParser:
        """Add this group and its commands to the top level's ``subparsers``."""
        database = database_option() if self.database else None
        parser = subparsers.add_parser(
            self.name,
            parents=[database] if database is not None else [],
            help=self.summary,
            description=self.description,
            allow_abbrev=False,
        )
        commands = parser.add_subparsers(dest=self.dest, required=True, metavar="COMMAND")
        self.declare(Commands(commands, database))
        return parser

    def error_prefix(self, args: argparse.Namespace) -> str:
        if self.command_in_errors:
            return f"camproxy {self.name} {getattr(args, self.dest)}"
        return f"camproxy {self.name}"


def database_option() -> argparse.ArgumentParser:
    """A parent parser with ``--database``, for a group and each of its commands."""
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the SQLite file or a postgresql://user:password@host:port/dbname URL "
        "(default: DATABASE_URL from the environment or .env, else robocam.db)",
    )
    return database


def database_location(args: argparse.Namespace) -> DatabaseLocation:
    """``--database``, else the database the daemon would use; ``ConfigError`` if bad."""
    return locate(database_setting(getattr(args, "database", None), read_environment()))


def run(group: CommandGroup, args: argparse.Namespace, streams: Streams | None = None) -> int:
    """Run a parsed command of ``group``; the exit status.

    Runs the reactor (``react``), so call it at most once per process, from a process
    whose reactor is not running.
    """
    streams = streams or Streams.standard()
    prefix = group.error_prefix(args)
    location = None
    try:
        if group.database:
            location = database_location(args)
    except ConfigError as problem:
        print(f"{prefix}: {problem}", file=streams.stderr)
        return 1
    call_args = (group, args, location, streams, prefix)
    try:
        react(lambda reactor: Deferred.fromCoroutine(_main(reactor, *call_args)))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


async def _main(
    reactor: Any,
    group: CommandGroup,
    args: argparse.Namespace,
    location: DatabaseLocation | None,
    streams: Streams,
    prefix: str,
) -> None:
    call = Call(reactor, args, getattr(args, group.dest), location, streams)
    code = 1
    refusals: tuple[type[BaseException], ...] = (Refused, *REFUSALS, *group.refusals)
    try:
        done = await group.perform(call)
    except refusals as problem:
        print(f"{prefix}: {problem}", file=streams.stderr)
    except UsageError as problem:
        print(f"{prefix}: error: {problem}", file=streams.stderr)
        code = 2
    except Exception:
        # A bug, not a refusal: the traceback is what a report needs.
        traceback.print_exc(file=streams.stderr)
    else:
        if done:
            print(done, file=streams.stdout)
        code = 0
    finally:
        call.close()
    raise SystemExit(code)


def group_main(group: CommandGroup, argv: Sequence[str] | None = None) -> int:
    """``camproxy GROUP ...`` with only this group: for scripts and tests."""
    parser = argparse.ArgumentParser(prog="camproxy", allow_abbrev=False)
    group.add_to(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run(group, parser.parse_args(argv))
