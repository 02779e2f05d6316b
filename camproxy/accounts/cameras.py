"""Cameras as data: their settings, users' grants on them, tokens limited to them.

``CameraStore`` is the one place that changes the camera tables. Every change also counts
up ``camera_changes.version`` in the same transaction, so a running daemon notices any
change (from the shell, the admin page or another daemon) with one cheap query and
applies it (CONTRACT §6: within 10 s).
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Iterable
from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from camproxy.accounts.access import Level
from camproxy.accounts.database import Database
from camproxy.accounts.tables import (
    api_token_cameras,
    camera_changes,
    camera_grants,
    cameras,
    name_order,
    same_name,
    users,
)
from camproxy.accounts.users import AccountError, UnknownUser

#: CONTRACT §6: 1-32 characters of a-z, 0-9 and -, starting with a letter or digit.
CAMERA_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
#: CONTRACT §7 (``camproxy.sources.kinds`` knows how to reach each).
CAMERA_KINDS: Final = ("robocam", "esp32", "mjpeg", "jpeg")
CONTROL_MODES: Final = ("shared", "exclusive")
DEFAULT_CAMERA: Final = "default"
#: A v1 daemon's camera when nothing says otherwise (CONTRACT §4).
V1_CAMERA_URL: Final = "ws://192.168.1.100:80/ws"
MAX_TITLE_CHARS: Final = 200
MAX_URL_CHARS: Final = 2000


class CameraError(AccountError):
    """A camera operation was refused; the message is one line, fit for a user."""


class UnknownCamera(CameraError):
    """No camera has that name."""


class CameraExists(CameraError):
    """A camera of that name exists already."""


class InvalidCamera(CameraError, ValueError):
    """A name, title, URL, frame rate or delay breaks the rules."""


def check_camera_name(name: str) -> None:
    if not CAMERA_NAME.fullmatch(name):
        raise InvalidCamera(
            f"invalid camera name {name!r}: use 1 to 32 of a-z, 0-9 and -, "
            "starting with a letter or digit"
        )


@attrs.frozen
class CameraRecord:
    """One camera as stored. ``kind`` None: detect; ``max_fps``/``idle_close`` None: the
    daemon's options."""

    id: str
    name: str
    title: str
    url: str
    kind: str | None
    max_fps: float | None
    idle_close: float | None
    access: Level
    control: str
    created_at: float
    updated_at: float


#: The camera settings that may be left to the daemon's options.
DAEMON_DEFAULTS = frozenset({"max_fps", "idle_close"})


@attrs.frozen
class CameraChanges:
    """What ``camera set`` changes; ``None`` leaves a setting as it is."""

    url: str | None = None
    kind: str | None = None
    title: str | None = None
    max_fps: float | None = None
    idle_close: float | None = None
    access: Level | None = None
    control: str | None = None
    #: Set the kind back to "detect from the URL".
    detect_kind: bool = False
    #: Settings going back to the daemon's own (``"max_fps"``, ``"idle_close"``).
    daemon_defaults: frozenset[str] = frozenset()


def check_settings(
    *,
    title: str | None = None,
    url: str | None = None,
    kind: str | None = None,
    max_fps: float | None = None,
    idle_close: float | None = None,
    control: str | None = None,
) -> None:
    """Raise ``InvalidCamera`` for a value no camera may have (URLs are checked for their
    kind by the caller, which knows the kinds' rules)."""
    if title is not None and not 0 < len(title) <= MAX_TITLE_CHARS:
        raise InvalidCamera(f"a camera's title is 1 to {MAX_TITLE_CHARS} characters")
    if url is not None and not 0 < len(url) <= MAX_URL_CHARS:
        raise InvalidCamera(f"a camera's URL is 1 to {MAX_URL_CHARS} characters")
    if kind is not None and kind not in CAMERA_KINDS:
        raise InvalidCamera(f"invalid camera kind {kind!r}: use {', '.join(CAMERA_KINDS)}")
    if max_fps is not None and not 0.1 <= max_fps <= 120:
        raise InvalidCamera(f"max-fps must be between 0.1 and 120, not {max_fps:g}")
    if idle_close is not None and not 0 <= idle_close <= 86400 * 365:
        raise InvalidCamera(f"idle-close must be between 0 and 31536000, not {idle_close:g}")
    if control is not None and control not in CONTROL_MODES:
        raise InvalidCamera(f"invalid control mode {control!r}: use shared or exclusive")


def _record(row: Any) -> CameraRecord:
    return CameraRecord(
        id=row.id,
        name=row.name,
        title=row.title,
        url=row.url,
        kind=row.kind,
        max_fps=row.max_fps,
        idle_close=row.idle_close,
        access=Level.parse(row.access),
        control=row.control,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _changed(connection: Connection) -> None:
    connection.execute(
        camera_changes.update()
        .where(camera_changes.c.id == 1)
        .values(version=camera_changes.c.version + 1)
    )


def _by_name(connection: Connection, name: str) -> CameraRecord | None:
    row = connection.execute(sa.select(cameras).where(cameras.c.name == name)).first()
    return None if row is None else _record(row)


def _existing(connection: Connection, name: str) -> CameraRecord:
    found = _by_name(connection, name)
    if found is None:
        raise UnknownCamera(f"no camera named {name!r}")
    return found


def _all(connection: Connection) -> list[CameraRecord]:
    return [_record(row) for row in connection.execute(sa.select(cameras).order_by(cameras.c.name))]


def _insert(connection: Connection, record: CameraRecord) -> CameraRecord:
    if _by_name(connection, record.name) is not None:
        raise CameraExists(f"a camera named {record.name!r} exists already")
    values = attrs.asdict(record)
    values["access"] = record.access.text
    connection.execute(cameras.insert().values(**values))
    _changed(connection)
    return record


def _update(connection: Connection, name: str, changes: CameraChanges, now: float) -> CameraRecord:
    current = _existing(connection, name)
    values: dict[str, Any] = {
        key: value
        for key, value in (
            ("url", changes.url),
            ("kind", changes.kind),
            ("title", changes.title),
            ("max_fps", changes.max_fps),
            ("idle_close", changes.idle_close),
            ("control", changes.control),
        )
        if value is not None
    }
    if changes.detect_kind:
        values["kind"] = None
    for setting in changes.daemon_defaults:
        values[setting] = None
    if changes.access is not None:
        values["access"] = changes.access.text
    if values:
        values["updated_at"] = now
        connection.execute(cameras.update().where(cameras.c.id == current.id).values(**values))
        _changed(connection)
    return _existing(connection, name)


def _delete(connection: Connection, name: str) -> None:
    current = _existing(connection, name)
    connection.execute(cameras.delete().where(cameras.c.id == current.id))
    _changed(connection)


def _user_id(connection: Connection, username: str) -> tuple[str, str]:
    row = connection.execute(
        sa.select(users.c.id, users.c.username).where(same_name(users.c.username, username))
    ).first()
    if row is None:
        raise UnknownUser(f"no user named {username!r}")
    return row.id, row.username


def _set_grants(
    connection: Connection, camera: str, wanted: dict[str, Level | None]
) -> builtins.list[str]:
    """Every change of one form in one transaction: all of them, or none (an unknown user
    fails the whole)."""
    return [_grant(connection, camera, user, level) for user, level in sorted(wanted.items())]


def _grant(connection: Connection, camera: str, username: str, level: Level | None) -> str:
    record = _existing(connection, camera)
    user_id, stored = _user_id(connection, username)
    where = (camera_grants.c.camera_id == record.id) & (camera_grants.c.user_id == user_id)
    connection.execute(camera_grants.delete().where(where))
    if level is not None:
        connection.execute(
            camera_grants.insert().values(camera_id=record.id, user_id=user_id, level=level.text)
        )
    _changed(connection)
    return stored


def _grants_of(connection: Connection, user_ids: list[str]) -> dict[str, dict[str, Level]]:
    found: dict[str, dict[str, Level]] = {user_id: {} for user_id in user_ids}
    if not user_ids:
        return found
    rows = connection.execute(
        sa.select(camera_grants.c.user_id, cameras.c.name, camera_grants.c.level)
        .select_from(camera_grants.join(cameras, cameras.c.id == camera_grants.c.camera_id))
        .where(camera_grants.c.user_id.in_(user_ids))
    )
    for row in rows:
        found[row.user_id][row.name] = Level.parse(row.level)
    return found


def _grants_on(connection: Connection, camera: str) -> list[tuple[str, Level]]:
    record = _existing(connection, camera)
    rows = connection.execute(
        sa.select(users.c.username, camera_grants.c.level)
        .select_from(camera_grants.join(users, users.c.id == camera_grants.c.user_id))
        .where(camera_grants.c.camera_id == record.id)
        .order_by(name_order(users.c.username))
    )
    return [(row.username, Level.parse(row.level)) for row in rows]


def _all_grants(connection: Connection) -> dict[str, dict[str, Level]]:
    """Every grant: user name -> camera name -> level."""
    rows = connection.execute(
        sa.select(users.c.username, cameras.c.name, camera_grants.c.level).select_from(
            camera_grants.join(users, users.c.id == camera_grants.c.user_id).join(
                cameras, cameras.c.id == camera_grants.c.camera_id
            )
        )
    )
    found: dict[str, dict[str, Level]] = {}
    for row in rows:
        found.setdefault(row.username, {})[row.name] = Level.parse(row.level)
    return found


def _token_cameras(connection: Connection, token_ids: list[str]) -> dict[str, frozenset[str]]:
    """The cameras each token is limited to; tokens without a limit are absent."""
    if not token_ids:
        return {}
    rows = connection.execute(
        sa.select(api_token_cameras.c.token_id, cameras.c.name)
        .select_from(api_token_cameras.join(cameras, cameras.c.id == api_token_cameras.c.camera_id))
        .where(api_token_cameras.c.token_id.in_(token_ids))
    )
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row.token_id, set()).add(row.name)
    return {token_id: frozenset(names) for token_id, names in found.items()}


def limit_token(connection: Connection, token_id: str, camera_names: Iterable[str]) -> None:
    """Limit a token to these cameras (in the transaction that creates it)."""
    for name in sorted(set(camera_names)):
        record = _existing(connection, name)
        connection.execute(
            api_token_cameras.insert().values(token_id=token_id, camera_id=record.id)
        )
    _changed(connection)


def version(connection: Connection) -> int:
    """The change counter of cameras and grants (in a read transaction)."""
    return int(
        connection.execute(
            sa.select(camera_changes.c.version).where(camera_changes.c.id == 1)
        ).scalar_one()
    )


@attrs.frozen
class CameraSeed:
    """A camera the daemon's start-up makes sure of (``--camera``, the demo's cameras)."""

    name: str
    url: str
    kind: str | None = None
    title: str | None = None


def _ensure(connection: Connection, seeds: tuple[CameraSeed, ...], now: float) -> list[str]:
    """CONTRACT §6 at start: each seed is created, or re-pointed at its URL and kind; with
    no seed, a database with no camera gets ``default`` at the v1 address. Returns what
    it did, for the log."""
    notes = []
    if not seeds and not _all(connection):
        seeds = (CameraSeed(DEFAULT_CAMERA, V1_CAMERA_URL),)
    for seed in seeds:
        current = _by_name(connection, seed.name)
        if current is None:
            _insert(connection, _new_record(seed.name, seed.url, seed.kind, now, title=seed.title))
            notes.append(f"created the camera {seed.name!r}")
        elif (current.url, current.kind) != (seed.url, seed.kind):
            changes = CameraChanges(url=seed.url, kind=seed.kind, detect_kind=seed.kind is None)
            _update(connection, seed.name, changes, now)
            notes.append(f"the camera {seed.name!r} now uses the URL given at start")
    return notes


def _new_record(
    name: str,
    url: str,
    kind: str | None,
    now: float,
    *,
    title: str | None = None,
    max_fps: float | None = None,
    idle_close: float | None = None,
    access: Level = Level.CONTROL,
    control: str = "shared",
) -> CameraRecord:
    return CameraRecord(
        id=str(uuid.uuid4()),
        name=name,
        title=title or name,
        url=url,
        kind=kind,
        max_fps=max_fps,
        idle_close=idle_close,
        access=access,
        control=control,
        created_at=now,
        updated_at=now,
    )


class CameraStore:
    """Cameras and grants in a ``Database``; every method returns a ``Deferred``.

    Refusals: ``UnknownCamera``, ``CameraExists``, ``InvalidCamera`` (all ``CameraError``,
    an ``AccountError``) and ``accounts.users.UnknownUser``.
    """

    def __init__(self, db: Database, clock: IReactorTime) -> None:
        self._db = db
        self._clock = clock

    def list(self) -> Deferred[builtins.list[CameraRecord]]:
        """Every camera, by name."""
        return self._db.read(_all)

    def get(self, name: str) -> Deferred[CameraRecord | None]:
        return self._db.read(_by_name, name)

    def add(
        self,
        name: str,
        url: str,
        kind: str | None = None,
        *,
        title: str | None = None,
        max_fps: float | None = None,
        idle_close: float | None = None,
        access: Level = Level.CONTROL,
        control: str = "shared",
    ) -> Deferred[CameraRecord]:
        """A new camera (titled with its name unless ``title`` is given)."""
        check_camera_name(name)
        check_settings(
            title=title,
            url=url,
            kind=kind,
            max_fps=max_fps,
            idle_close=idle_close,
            control=control,
        )
        record = _new_record(
            name,
            url,
            kind,
            self._clock.seconds(),
            title=title,
            max_fps=max_fps,
            idle_close=idle_close,
            access=access,
            control=control,
        )
        return self._db.write(_insert, record)

    def set(self, name: str, changes: CameraChanges) -> Deferred[CameraRecord]:
        unknown = changes.daemon_defaults - DAEMON_DEFAULTS
        if unknown:
            raise InvalidCamera(f"no daemon default for {', '.join(sorted(unknown))}")
        check_settings(
            title=changes.title,
            url=changes.url,
            kind=changes.kind,
            max_fps=changes.max_fps,
            idle_close=changes.idle_close,
            control=changes.control,
        )
        return self._db.write(_update, name, changes, self._clock.seconds())

    def remove(self, name: str) -> Deferred[None]:
        """Remove a camera with its grants and token limits (viewers are closed by the
        running daemons)."""
        return self._db.write(_delete, name)

    def grant(self, camera: str, username: str, level: Level) -> Deferred[str]:
        """Give a user ``level`` on a camera; the user's stored name."""
        return self._db.write(_grant, camera, username, level)

    def revoke(self, camera: str, username: str) -> Deferred[str]:
        """Back to the camera's default access for that user; the user's stored name."""
        return self._db.write(_grant, camera, username, None)

    def set_grants(
        self, camera: str, wanted: dict[str, Level | None]
    ) -> Deferred[builtins.list[str]]:
        """Several users' grants at once (None: back to the camera's default access), all
        or none; the users' stored names."""
        return self._db.write(_set_grants, camera, wanted)

    def grants_on(self, camera: str) -> Deferred[builtins.list[tuple[str, Level]]]:
        """The grants on one camera: (user name, level), by user name."""
        return self._db.read(_grants_on, camera)

    def all_grants(self) -> Deferred[dict[str, dict[str, Level]]]:
        """Every grant: user name -> camera name -> level."""
        return self._db.read(_all_grants)

    def grants_of(self, user_ids: Iterable[str]) -> Deferred[dict[str, dict[str, Level]]]:
        """Each user's grants, by camera name (users without grants map to ``{}``)."""
        return self._db.read(_grants_of, sorted(set(user_ids)))

    def token_cameras(self, token_ids: Iterable[str]) -> Deferred[dict[str, frozenset[str]]]:
        """The cameras each of these tokens is limited to (unlimited tokens are absent)."""
        return self._db.read(_token_cameras, sorted(set(token_ids)))

    def version(self) -> Deferred[int]:
        """A number that changes with every change to cameras, grants or token limits."""
        return self._db.read(version)

    def list_now(self) -> builtins.list[CameraRecord]:
        """``list``, blocking: for the daemon's start, before the reactor runs."""
        return self._db.read_now(_all)

    def ensure_now(self, seeds: tuple[CameraSeed, ...]) -> builtins.list[str]:
        """The cameras the start-up makes sure of (see :class:`CameraSeed`), blocking;
        notes for the log."""
        return self._db.write_now(_ensure, seeds, self._clock.seconds())
