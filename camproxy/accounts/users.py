"""User accounts: who may log in, who is an admin, who may move the camera.

``UserStore`` is the one place that changes the ``users`` table. Changing a password,
disabling or deleting a user also deletes that user's rows in ``sessions`` in the same
transaction, so a running daemon sees them gone at its next ``SessionStore.alive``.
The last active admin can be neither demoted, disabled nor deleted.
"""

from __future__ import annotations

import builtins
import re
import secrets
import sqlite3
import uuid
from typing import Final

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from camproxy.accounts.database import Database, as_deferred
from camproxy.accounts.passwords import IPasswordHasher, check_new_password

MAX_USERNAME_CHARS: Final = 50
_USERNAME: Final = re.compile(r"[A-Za-z0-9._@][A-Za-z0-9._@-]{0,49}")

_USER_COLUMNS: Final = (
    "SELECT id, username, is_admin, active, can_control, created_at, updated_at, last_login"
)
_SELECT_BY_NAME: Final = _USER_COLUMNS + " FROM users WHERE username = ?"
_SELECT_BY_ID: Final = _USER_COLUMNS + " FROM users WHERE id = ?"
_SELECT_ALL: Final = _USER_COLUMNS + " FROM users ORDER BY username COLLATE NOCASE"


class AccountError(Exception):
    """An account operation was refused; the message is one line, fit for a user."""


class UnknownUser(AccountError):
    """No user has that name (or id)."""


class UserExists(AccountError):
    """A user of that name exists already (names ignore case)."""


class LastAdmin(AccountError):
    """The change would leave no active admin."""


class InvalidUsername(AccountError, ValueError):
    """A new user name breaks the rules (see ``check_username``)."""


def check_username(username: str) -> None:
    """Raise ``InvalidUsername`` unless ``username`` may name a new user.

    1 to 50 ASCII letters, digits and ``. _ - @``, not starting with ``-`` (it would
    read as an option on the command line). Names are unique ignoring case. Names
    kept from the Flask version need not follow these rules.
    """
    if not _USERNAME.fullmatch(username):
        raise InvalidUsername(
            f"invalid user name {username!r}: use 1 to {MAX_USERNAME_CHARS} letters, digits "
            "and . _ - @ (not starting with -)"
        )


@attrs.frozen
class User:
    """One account, as stored. Times are POSIX seconds; ``last_login`` is None before any."""

    id: str
    username: str
    is_admin: bool
    active: bool
    can_control: bool
    created_at: float
    updated_at: float
    last_login: float | None

    @property
    def may_control(self) -> bool:
        """Whether this user may move the camera and switch its light: admins always may."""
        return self.is_admin or self.can_control


def _user(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        is_admin=bool(row["is_admin"]),
        active=bool(row["active"]),
        can_control=bool(row["can_control"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_login=row["last_login"],
    )


def _by_name(cursor: sqlite3.Cursor, username: str) -> User | None:
    row = cursor.execute(_SELECT_BY_NAME, (username,)).fetchone()
    return None if row is None else _user(row)


def _by_id(cursor: sqlite3.Cursor, user_id: str) -> User | None:
    row = cursor.execute(_SELECT_BY_ID, (user_id,)).fetchone()
    return None if row is None else _user(row)


def _existing(cursor: sqlite3.Cursor, username: str) -> User:
    user = _by_name(cursor, username)
    if user is None:
        raise UnknownUser(f"no user named {username!r}")
    return user


def _credentials(cursor: sqlite3.Cursor, username: str) -> tuple[User, str] | None:
    user = _by_name(cursor, username)
    if user is None:
        return None
    row = cursor.execute("SELECT password_hash FROM users WHERE id = ?", (user.id,)).fetchone()
    return user, row["password_hash"]


def _all(cursor: sqlite3.Cursor) -> list[User]:
    return [_user(row) for row in cursor.execute(_SELECT_ALL)]


def _count_active_admins(cursor: sqlite3.Cursor) -> int:
    row = cursor.execute("SELECT count(*) FROM users WHERE is_admin = 1 AND active = 1").fetchone()
    return int(row[0])


def _end_sessions(cursor: sqlite3.Cursor, user_id: str) -> None:
    cursor.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))


def _guard_last_admin(cursor: sqlite3.Cursor, user: User, action: str) -> None:
    if user.is_admin and user.active and _count_active_admins(cursor) <= 1:
        raise LastAdmin(
            f"cannot {action} {user.username!r}: it is the last active admin "
            "(promote another user first)"
        )


def _insert(cursor: sqlite3.Cursor, user: User, password_hash: str) -> None:
    existing = _by_name(cursor, user.username)
    if existing is not None:
        raise UserExists(f"a user named {existing.username!r} exists already")
    cursor.execute(
        "INSERT INTO users (id, username, password_hash, is_admin, active, can_control,"
        " created_at, updated_at, last_login) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            user.id,
            user.username,
            password_hash,
            int(user.is_admin),
            int(user.active),
            int(user.can_control),
            user.created_at,
            user.updated_at,
            user.last_login,
        ),
    )


def _record_login(
    cursor: sqlite3.Cursor, user_id: str, password_hash: str, now: float
) -> User | None:
    # Only if nothing changed since the password was checked (no new password, not
    # disabled): otherwise a login racing a password change could use the old one.
    changed = cursor.execute(
        "UPDATE users SET last_login = ? WHERE id = ? AND password_hash = ? AND active = 1",
        (now, user_id, password_hash),
    ).rowcount
    return _by_id(cursor, user_id) if changed == 1 else None


def _set_password(cursor: sqlite3.Cursor, username: str, password_hash: str, now: float) -> User:
    user = _existing(cursor, username)
    cursor.execute(
        "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?",
        (password_hash, now, user.id),
    )
    _end_sessions(cursor, user.id)
    return attrs.evolve(user, updated_at=now)


def _set_active(cursor: sqlite3.Cursor, username: str, active: bool, now: float) -> User:
    user = _existing(cursor, username)
    if not active:
        _guard_last_admin(cursor, user, "disable")
        _end_sessions(cursor, user.id)
    cursor.execute(
        "UPDATE users SET active = ?, updated_at = ? WHERE id = ?", (int(active), now, user.id)
    )
    return attrs.evolve(user, active=active, updated_at=now)


def _set_admin(cursor: sqlite3.Cursor, username: str, admin: bool, now: float) -> User:
    user = _existing(cursor, username)
    if not admin:
        _guard_last_admin(cursor, user, "demote")
    cursor.execute(
        "UPDATE users SET is_admin = ?, updated_at = ? WHERE id = ?", (int(admin), now, user.id)
    )
    return attrs.evolve(user, is_admin=admin, updated_at=now)


def _set_can_control(cursor: sqlite3.Cursor, username: str, allowed: bool, now: float) -> User:
    user = _existing(cursor, username)
    cursor.execute(
        "UPDATE users SET can_control = ?, updated_at = ? WHERE id = ?",
        (int(allowed), now, user.id),
    )
    return attrs.evolve(user, can_control=allowed, updated_at=now)


def _delete(cursor: sqlite3.Cursor, username: str) -> None:
    user = _existing(cursor, username)
    _guard_last_admin(cursor, user, "delete")
    _end_sessions(cursor, user.id)
    cursor.execute("DELETE FROM users WHERE id = ?", (user.id,))


class UserStore:
    """Accounts in a ``Database``; every method returns a ``Deferred``.

    :param db: the open database.
    :param hasher: hashes and checks passwords off the reactor thread.
    :param clock: gives the time for ``created_at``, ``updated_at``, ``last_login``.

    User names are matched ignoring case everywhere. Methods that name a user who does
    not exist fail with ``UnknownUser``; ``LastAdmin``, ``UserExists``,
    ``InvalidUsername`` and ``passwords.BadPassword`` are the other refusals.
    """

    def __init__(self, db: Database, hasher: IPasswordHasher, clock: IReactorTime) -> None:
        self._db = db
        self._hasher = hasher
        self._clock = clock
        self._dummy_hash: str | None = None

    async def _dummy(self) -> str:
        # Checked against when the user is unknown, so that the answer takes as long;
        # made by this hasher so that it costs what a real hash costs.
        if self._dummy_hash is None:
            self._dummy_hash = await self._hasher.hash(secrets.token_urlsafe(18))
        return self._dummy_hash

    @as_deferred
    async def authenticate(self, username: str, password: str) -> User | None:
        """The user if ``password`` is right and the account active, else None.

        An unknown name costs a password check too (against a dummy hash), so the time
        taken does not tell unknown names from wrong passwords. Records ``last_login``.
        """
        if not password:
            return None
        found = await self._db.read(_credentials, username)
        password_hash = found[1] if found is not None else await self._dummy()
        matches = await self._hasher.verify(password, password_hash)
        if found is None or not matches or not found[0].active:
            return None
        return await self._db.write(
            _record_login, found[0].id, password_hash, self._clock.seconds()
        )

    @as_deferred
    async def add(
        self, username: str, password: str, *, admin: bool = False, can_control: bool = True
    ) -> User:
        """Create a user; fails with ``UserExists``, ``InvalidUsername`` or ``BadPassword``."""
        check_username(username)
        check_new_password(password)
        existing = await self._db.read(_by_name, username)
        if existing is not None:
            raise UserExists(f"a user named {existing.username!r} exists already")
        password_hash = await self._hasher.hash(password)
        now = self._clock.seconds()
        user = User(
            id=str(uuid.uuid4()),
            username=username,
            is_admin=admin,
            active=True,
            can_control=can_control,
            created_at=now,
            updated_at=now,
            last_login=None,
        )
        await self._db.write(_insert, user, password_hash)
        return user

    def get(self, username: str) -> Deferred[User | None]:
        """The user of that name (ignoring case), or None."""
        return self._db.read(_by_name, username)

    def get_by_id(self, user_id: str) -> Deferred[User | None]:
        """The user with that id, or None."""
        return self._db.read(_by_id, user_id)

    @as_deferred
    async def set_password(self, username: str, password: str) -> User:
        """Set a new password (``BadPassword`` if it breaks the rules); ends all sessions."""
        check_new_password(password)
        await self._db.read(_existing, username)
        password_hash = await self._hasher.hash(password)
        return await self._db.write(_set_password, username, password_hash, self._clock.seconds())

    def set_active(self, username: str, active: bool) -> Deferred[User]:
        """Enable or disable a user; disabling ends all the user's sessions."""
        return self._db.write(_set_active, username, active, self._clock.seconds())

    def set_admin(self, username: str, admin: bool) -> Deferred[User]:
        """Promote or demote a user."""
        return self._db.write(_set_admin, username, admin, self._clock.seconds())

    def set_can_control(self, username: str, allowed: bool) -> Deferred[User]:
        """Allow or forbid moving the camera (admins may regardless: ``User.may_control``)."""
        return self._db.write(_set_can_control, username, allowed, self._clock.seconds())

    def delete(self, username: str) -> Deferred[None]:
        """Delete a user and all the user's sessions."""
        return self._db.write(_delete, username)

    @as_deferred
    async def ensure_admin(self, username: str, password: str) -> bool:
        """Create ``username`` as an admin unless a user of that name exists.

        For ``ADMIN_USERNAME``/``ADMIN_PASSWORD`` at start: True if it was created. An
        existing user is left exactly as it is, whatever its password or role.
        """
        if await self._db.read(_by_name, username) is not None:
            return False
        try:
            await self.add(username, password, admin=True)
        except UserExists:
            return False
        return True

    def count_active_admins(self) -> Deferred[int]:
        """How many users are both admin and active."""
        return self._db.read(_count_active_admins)

    def list(self) -> Deferred[builtins.list[User]]:
        """All users, by name ignoring case."""
        return self._db.read(_all)
