"""``camproxy camera ...``: cameras and who may use them, from the shell (CONTRACT §6, §7).

The commands change the database; a running daemon applies every change within a few
seconds (a new camera can be watched, a removed one closes its viewers, a new URL or
kind reconnects, a changed grant or access closes the sockets it no longer allows).
``probe`` connects to a camera once, as the daemon would, and says what it found.

A password in a camera's URL is never printed: lists show ``***`` in its place. Exit
status: 0 on success, 1 with one line on standard error when refused (an invalid name,
an unknown camera or user, a duplicate, a URL that does not fit the kind, a camera that
cannot be probed), 2 for a usage error (a LEVEL, MODE or KIND outside the lists).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from camproxy.accounts.access import LEVEL_NAMES, Level
from camproxy.accounts.cameras import (
    CAMERA_KINDS,
    CONTROL_MODES,
    CameraChanges,
    CameraError,
    CameraRecord,
    CameraStore,
    check_camera_name,
)
from camproxy.cli.scaffold import Call, CommandGroup, Commands, group_main
from camproxy.cli.user import format_table
from camproxy.sources.kinds import default_kind, url_problem
from camproxy.sources.probe import probe
from camproxy.sources.robocam.link import CameraSettings, RoboCamSource
from camproxy.urls import redacted_url


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


#: ``camera set --max-fps default``: back to the daemon's option.
DAEMON_DEFAULT = "default"


def _number_or_default(text: str) -> float | str:
    if text.strip().lower() == DAEMON_DEFAULT:
        return DAEMON_DEFAULT
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'default': {text!r}") from None


def _settings(parser: argparse.ArgumentParser, *, adding: bool) -> None:
    if not adding:
        parser.add_argument("--url", metavar="URL", help="a new URL (the kind follows it)")
    parser.add_argument("--kind", choices=CAMERA_KINDS, help="robocam, esp32, mjpeg or jpeg")
    parser.add_argument("--title", metavar="TEXT", help="shown to people (default: the name)")
    number = _number if adding else _number_or_default
    back = "" if adding else "; 'default' goes back to the daemon's"
    parser.add_argument(
        "--max-fps",
        type=number,
        metavar="N",
        help=f"frames a second at most (default: daemon's{back})",
    )
    parser.add_argument(
        "--idle-close",
        type=number,
        metavar="S",
        help=f"seconds without viewers before the link closes; 0 keeps it (default: "
        f"daemon's{back})",
    )
    parser.add_argument(
        "--access",
        choices=LEVEL_NAMES,
        help="what users without a grant may do: none, view or control (default: control)",
    )
    parser.add_argument(
        "--control",
        choices=CONTROL_MODES,
        help="shared (anyone with control) or exclusive (one holder at a time)",
    )


def _declare(commands: Commands) -> None:
    add = commands.add("add", "add a camera")
    add.add_argument("name", metavar="NAME", help="1-32 of a-z, 0-9 and - (it is in URLs)")
    add.add_argument("url", metavar="URL", help="ws(s):// for RoboCam, http(s):// for others")
    _settings(add, adding=True)
    change = commands.add("set", "change a camera's settings")
    change.add_argument("name", metavar="NAME")
    _settings(change, adding=False)
    listing = commands.add("list", "list the cameras")
    listing.add_argument("--json", action="store_true", help="a JSON array, for scripts")
    remove = commands.add("remove", "remove a camera (its viewers are closed)")
    remove.add_argument("name", metavar="NAME")
    grant = commands.add("grant", "give a user an access level on a camera")
    grant.add_argument("name", metavar="NAME")
    grant.add_argument("user", metavar="USER")
    grant.add_argument("level", metavar="LEVEL", choices=LEVEL_NAMES, help="none, view or control")
    revoke = commands.add("revoke", "take a user's grant back (the camera's default applies)")
    revoke.add_argument("name", metavar="NAME")
    revoke.add_argument("user", metavar="USER")
    probing = commands.add(
        "probe", "connect to a camera URL once and say what it is, or why it cannot be used"
    )
    probing.add_argument("url", metavar="URL")
    probing.add_argument("--kind", choices=CAMERA_KINDS)
    probing.add_argument(
        "--seconds", type=_number, default=3.0, metavar="S", help="how long to measure"
    )
    probing.add_argument("--json", action="store_true", help="the result as JSON")


def shown_kind(record: CameraRecord) -> str | None:
    """The kind as stored, or the one the URL implies; None: told by the first answer."""
    if record.kind is not None:
        return record.kind
    try:
        return default_kind(record.url)
    except ValueError:
        return None


def camera_json(record: CameraRecord, grants: dict[str, str]) -> dict[str, Any]:
    return {
        "name": record.name,
        "title": record.title,
        "kind": shown_kind(record),
        "url": redacted_url(record.url),
        "access": record.access.text,
        "control": record.control,
        "max_fps": record.max_fps,
        "idle_close": record.idle_close,
        "grants": grants,
    }


def _table(records: Sequence[CameraRecord]) -> str:
    rows = [("NAME", "TITLE", "KIND", "ACCESS", "CONTROL", "MAX FPS", "IDLE CLOSE", "URL")]
    rows += [
        (
            r.name,
            r.title,
            shown_kind(r) or "detect",
            r.access.text,
            r.control,
            "daemon's" if r.max_fps is None else f"{r.max_fps:g}",
            "daemon's" if r.idle_close is None else f"{r.idle_close:g}s",
            redacted_url(r.url),
        )
        for r in records
    ]
    return format_table(rows)


def _check_url(call: Call, url: str, kind: str | None) -> None:
    problem = url_problem(url, kind)
    if problem is not None:
        call.refuse(problem)


async def _add(call: Call, cameras: CameraStore) -> str:
    args = call.args
    check_camera_name(args.name)
    _check_url(call, args.url, args.kind)
    record = await cameras.add(
        args.name,
        args.url,
        args.kind,
        title=args.title,
        max_fps=args.max_fps,
        idle_close=args.idle_close,
        access=Level.CONTROL if args.access is None else Level.parse(args.access),
        control=args.control or "shared",
    )
    return f"added the camera {record.name!r} ({shown_kind(record) or 'kind detected'})"


async def _set(call: Call, cameras: CameraStore) -> str:
    args = call.args
    current = await cameras.get(args.name)
    if current is None:
        call.refuse(f"no camera named {args.name!r}")
    url = args.url if args.url is not None else current.url
    # A new URL without a kind is of the kind that URL implies (or detected).
    kind = args.kind if args.kind is not None else (None if args.url else current.kind)
    if args.url is not None or args.kind is not None:
        _check_url(call, url, kind)
    changes = CameraChanges(
        url=args.url,
        kind=args.kind,
        title=args.title,
        max_fps=None if args.max_fps == DAEMON_DEFAULT else args.max_fps,
        idle_close=None if args.idle_close == DAEMON_DEFAULT else args.idle_close,
        access=None if args.access is None else Level.parse(args.access),
        control=args.control,
        detect_kind=args.url is not None and args.kind is None,
        daemon_defaults=frozenset(
            setting
            for setting, value in (("max_fps", args.max_fps), ("idle_close", args.idle_close))
            if value == DAEMON_DEFAULT
        ),
    )
    record = await cameras.set(args.name, changes)
    return f"changed the camera {record.name!r}"


async def _list(call: Call, cameras: CameraStore) -> str:
    records = await cameras.list()
    if call.args.json:
        grants = await cameras.all_grants()
        by_camera: dict[str, dict[str, str]] = {}
        for user, levels in grants.items():
            for camera, level in levels.items():
                by_camera.setdefault(camera, {})[user] = level.text
        return json.dumps([camera_json(r, by_camera.get(r.name, {})) for r in records], indent=2)
    if not records:
        return "no cameras yet; add one with: camproxy camera add NAME URL"
    return _table(records)


async def _probe(call: Call) -> str:
    args = call.args
    problem = url_problem(args.url, args.kind)
    if problem is not None:
        call.refuse(problem)

    def robocam(listener: Any, retry_policy: Any) -> Any:
        settings = CameraSettings(url=args.url)
        return RoboCamSource(call.reactor, listener, settings, retry_policy=retry_policy)

    result = await probe(call.reactor, args.url, args.kind, args.seconds, robocam=robocam)
    if args.json:
        return json.dumps(result.as_json(), indent=2)
    if not result.ok:
        call.refuse(f"{redacted_url(args.url)}: {result.error}")
    return str(result.summary())


async def _perform(call: Call) -> str:
    """Carry out one command; the text to print on success."""
    if call.command == "probe":
        return await _probe(call)
    args = call.args
    cameras = CameraStore(await call.database(), call.reactor)
    if call.command == "add":
        return await _add(call, cameras)
    if call.command == "set":
        return await _set(call, cameras)
    if call.command == "list":
        return await _list(call, cameras)
    if call.command == "remove":
        await cameras.remove(args.name)
        return f"removed the camera {args.name!r}"
    if call.command == "grant":
        user = await cameras.grant(args.name, args.user, Level.parse(args.level))
        return f"{user!r} has {args.level} access to the camera {args.name!r}"
    if call.command == "revoke":
        user = await cameras.revoke(args.name, args.user)
        return f"{user!r} has the camera {args.name!r}'s default access again"
    raise AssertionError(f"unknown camera command {call.command!r}")


GROUP = CommandGroup(
    name="camera",
    summary="manage cameras and who may use them",
    description="Manage the cameras of CamProxy's database; a running daemon applies "
    "every change within seconds.",
    declare=_declare,
    perform=_perform,
    refusals=(CameraError,),
)


def main(argv: Sequence[str] | None = None) -> int:
    """``camproxy camera ...`` alone."""
    return group_main(GROUP, argv)


if __name__ == "__main__":
    sys.exit(main())
