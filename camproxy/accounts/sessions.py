"""Login sessions, stored in the database so that they survive a restart of the daemon.

A session id is ``secrets.token_urlsafe(32)`` (256 random bits) and goes into the
cookie; the database keeps only its SHA-256, so a copy of the database file yields no
usable cookie. A session is valid until ``expires_at`` while its user exists and is
active; ``UserStore`` deletes a user's sessions when the password changes or the user
is disabled or deleted, possibly from ``camproxy user`` in another process, and the
daemon learns of it by polling ``alive``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from camproxy.accounts.database import Database
from camproxy.accounts.hashedkeys import among, hashed, plausible, present
from camproxy.accounts.tables import sessions, users
from camproxy.accounts.users import UnknownUser

DEFAULT_LIFETIME: Final = 86400.0
# token_urlsafe(32) is 43 characters; anything far longer is not one of ours.
_MAX_ID_CHARS: Final = 128

_JOINED: Final = sessions.join(users, users.c.id == sessions.c.user_id)
_SELECT_SESSION: Final = sa.select(
    sessions.c.user_id,
    sessions.c.created_at,
    sessions.c.expires_at,
    users.c.username,
    users.c.is_admin,
    users.c.can_control,
    users.c.active,
).select_from(_JOINED)


# Built once with bind parameters, so that SQLAlchemy compiles each once: the daemon runs
# them for every request and every few seconds.
_LOOKUP: Final = _SELECT_SESSION.where(sessions.c.id_hash == sa.bindparam("key"))
_ALIVE: Final = (
    sa.select(sessions.c.id_hash)
    .select_from(_JOINED)
    .where(
        among(sessions.c.id_hash),
        sessions.c.expires_at > sa.bindparam("now"),
        users.c.active == sa.true(),
    )
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


def _plausible(session_id: object) -> bool:
    return plausible(session_id, max_chars=_MAX_ID_CHARS)


def _insert(connection: Connection, key: str, user_id: str, now: float, expires_at: float) -> None:
    active = connection.scalar(sa.select(users.c.active).where(users.c.id == user_id))
    if not active:
        raise UnknownUser(f"no active user with id {user_id!r}")
    connection.execute(
        sa.insert(sessions).values(
            id_hash=key, user_id=user_id, created_at=now, expires_at=expires_at
        )
    )


def _lookup(connection: Connection, session_id: str, now: float) -> Session | None:
    row = connection.execute(_LOOKUP, {"key": hashed(session_id)}).first()
    if row is None or row.expires_at <= now or not row.active:
        return None
    return Session(
        id=session_id,
        user_id=row.user_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        username=row.username,
        is_admin=bool(row.is_admin),
        can_control=bool(row.can_control),
        active=True,
    )


def _delete(connection: Connection, condition: sa.ColumnElement[bool]) -> int:
    return connection.execute(sa.delete(sessions).where(condition)).rowcount


def _alive_keys(connection: Connection, keys: list[str], now: float) -> set[str]:
    return present(connection, _ALIVE, keys, now=now)


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
        d = self._db.write(_insert, hashed(session_id), user_id, now, now + self.lifetime)
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
        d = self._db.write(_delete, sessions.c.id_hash == hashed(session_id))
        return d.addCallback(lambda deleted: deleted > 0)

    def end_all_for_user(self, user_id: str) -> Deferred[int]:
        """End every session of a user; how many there were."""
        return self._db.write(_delete, sessions.c.user_id == user_id)

    def alive(self, session_ids: Iterable[str]) -> Deferred[set[str]]:
        """Which of ``session_ids`` are still valid, as ``lookup`` would judge them.

        For the daemon's periodic check: it closes the sockets of sessions that were
        ended, expired, or whose user was disabled, deleted or given a new password.
        """
        by_key = {hashed(sid): sid for sid in set(session_ids) if _plausible(sid)}
        if not by_key:
            return succeed(set())
        d = self._db.read(_alive_keys, list(by_key), self._clock.seconds())
        return d.addCallback(lambda keys: {by_key[key] for key in keys})

    def purge_expired(self) -> Deferred[int]:
        """Delete expired sessions; how many. Worth calling now and then (hourly, say)."""
        return self._db.write(_delete, sessions.c.expires_at <= self._clock.seconds())
