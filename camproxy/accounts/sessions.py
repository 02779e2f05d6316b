"""Login sessions, stored in SQLite so that they survive a restart of the daemon.

A session id is ``secrets.token_urlsafe(32)`` (256 random bits) and goes into the
cookie; the database keeps only its SHA-256, so a copy of the database file yields no
usable cookie. A session is valid until ``expires_at`` while its user exists and is
active; ``UserStore`` deletes a user's sessions when the password changes or the user
is disabled or deleted, possibly from ``camproxy user`` in another process, and the
daemon learns of it by polling ``alive``.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Iterable
from typing import Final

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from camproxy.accounts.database import Database
from camproxy.accounts.users import UnknownUser

DEFAULT_LIFETIME: Final = 86400.0
# token_urlsafe(32) is 43 characters; anything far longer is not one of ours.
_MAX_ID_CHARS: Final = 128
# SQLite limits the number of ? in one statement (999 before 3.32).
_ALIVE_BATCH: Final = 500

_SELECT_SESSION: Final = (
    "SELECT s.user_id, s.created_at, s.expires_at,"
    " u.username, u.is_admin, u.can_control, u.active"
    " FROM sessions AS s JOIN users AS u ON u.id = s.user_id"
    " WHERE s.id_hash = ?"
)
_SELECT_ALIVE: Final = (
    "SELECT s.id_hash FROM sessions AS s JOIN users AS u ON u.id = s.user_id"
    " WHERE s.expires_at > ? AND u.active = 1"
)


@attrs.frozen
class Session:
    """A valid session and, joined from ``users`` at lookup time, its user's state."""

    id: str
    user_id: str
    created_at: float
    expires_at: float
    username: str
    is_admin: bool
    can_control: bool
    active: bool

    @property
    def may_control(self) -> bool:
        """Whether this session's user may move the camera: admins always may."""
        return self.is_admin or self.can_control


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def _plausible(session_id: object) -> bool:
    return isinstance(session_id, str) and 0 < len(session_id) <= _MAX_ID_CHARS


def _insert(cursor: sqlite3.Cursor, key: str, user_id: str, now: float, expires_at: float) -> None:
    row = cursor.execute("SELECT active FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None or not row["active"]:
        raise UnknownUser(f"no active user with id {user_id!r}")
    cursor.execute(
        "INSERT INTO sessions (id_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (key, user_id, now, expires_at),
    )


def _lookup(cursor: sqlite3.Cursor, session_id: str, now: float) -> Session | None:
    row = cursor.execute(_SELECT_SESSION, (_key(session_id),)).fetchone()
    if row is None or row["expires_at"] <= now or not row["active"]:
        return None
    return Session(
        id=session_id,
        user_id=row["user_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        username=row["username"],
        is_admin=bool(row["is_admin"]),
        can_control=bool(row["can_control"]),
        active=True,
    )


def _delete_one(cursor: sqlite3.Cursor, key: str) -> bool:
    return cursor.execute("DELETE FROM sessions WHERE id_hash = ?", (key,)).rowcount > 0


def _delete_for_user(cursor: sqlite3.Cursor, user_id: str) -> int:
    return cursor.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount


def _delete_expired(cursor: sqlite3.Cursor, now: float) -> int:
    return cursor.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,)).rowcount


def _alive_keys(cursor: sqlite3.Cursor, keys: list[str], now: float) -> set[str]:
    alive: set[str] = set()
    for start in range(0, len(keys), _ALIVE_BATCH):
        batch = keys[start : start + _ALIVE_BATCH]
        marks = ", ".join("?" * len(batch))
        query = f"{_SELECT_ALIVE} AND s.id_hash IN ({marks})"
        rows = cursor.execute(query, (now, *batch))
        alive.update(row[0] for row in rows)
    return alive


class SessionStore:
    """Sessions in a ``Database``; every method returns a ``Deferred``.

    :param db: the open database.
    :param clock: the only source of time (``IReactorTime``, or ``task.Clock`` in tests).
    :param lifetime: seconds from ``create`` until a session expires.
    """

    def __init__(
        self, db: Database, clock: IReactorTime, lifetime: float = DEFAULT_LIFETIME
    ) -> None:
        if lifetime <= 0:
            raise ValueError(f"session lifetime must be positive, not {lifetime}")
        self._db = db
        self._clock = clock
        self.lifetime = lifetime

    def create(self, user_id: str) -> Deferred[str]:
        """A new session for an active user; its id, for the cookie.

        Fails with ``accounts.UnknownUser`` if no active user has ``user_id``.
        """
        session_id = secrets.token_urlsafe(32)
        now = self._clock.seconds()
        d = self._db.write(_insert, _key(session_id), user_id, now, now + self.lifetime)
        return d.addCallback(lambda _: session_id)

    def lookup(self, session_id: str) -> Deferred[Session | None]:
        """The session if it exists, has not expired and its user is active; else None.

        Only reads: an unknown id never creates a session.
        """
        if not _plausible(session_id):
            return succeed(None)
        return self._db.read(_lookup, session_id, self._clock.seconds())

    def end(self, session_id: str) -> Deferred[bool]:
        """End one session (logout); True if it existed."""
        if not _plausible(session_id):
            return succeed(False)
        return self._db.write(_delete_one, _key(session_id))

    def end_all_for_user(self, user_id: str) -> Deferred[int]:
        """End every session of a user; how many there were."""
        return self._db.write(_delete_for_user, user_id)

    def alive(self, session_ids: Iterable[str]) -> Deferred[set[str]]:
        """Which of ``session_ids`` are still valid, as ``lookup`` would judge them.

        For the daemon's periodic check: it closes the sockets of sessions that were
        ended, expired, or whose user was disabled, deleted or given a new password.
        """
        by_key = {_key(sid): sid for sid in set(session_ids) if _plausible(sid)}
        if not by_key:
            return succeed(set())
        d = self._db.read(_alive_keys, list(by_key), self._clock.seconds())
        return d.addCallback(lambda keys: {by_key[key] for key in keys})

    def purge_expired(self) -> Deferred[int]:
        """Delete expired sessions; how many. Worth calling now and then (hourly, say)."""
        return self._db.write(_delete_expired, self._clock.seconds())
