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
import uuid
from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from camproxy.accounts.database import Database, as_deferred
from camproxy.accounts.passwords import IPasswordHasher, check_new_password
from camproxy.accounts.tables import name_order, same_name, sessions, users

MAX_USERNAME_CHARS: Final = 50
_USERNAME: Final = re.compile(r"[A-Za-z0-9._@][A-Za-z0-9._@-]{0,49}")

_USER_COLUMNS: Final = (
    users.c.id,
    users.c.username,
    users.c.is_admin,
    users.c.active,
    users.c.can_control,
    users.c.created_at,
    users.c.updated_at,
    users.c.last_login,
)
# Built once with bind parameters, so that SQLAlchemy compiles each once.
_BY_NAME: Final = sa.select(*_USER_COLUMNS).where(same_name(users.c.username, sa.bindparam("name")))
_BY_ID: Final = sa.select(*_USER_COLUMNS).where(users.c.id == sa.bindparam("id"))
_CREDENTIALS: Final = sa.select(*_USER_COLUMNS, users.c.password_hash).where(
    same_name(users.c.username, sa.bindparam("name"))
)


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


def _user(row: Any) -> User:
    return User(
        id=row.id,
        username=row.username,
        is_admin=bool(row.is_admin),
        active=bool(row.active),
        can_control=bool(row.can_control),
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_login=row.last_login,
    )


def _by_name(connection: Connection, username: str) -> User | None:
    row = connection.execute(_BY_NAME, {"name": username}).first()
    return None if row is None else _user(row)


def _by_id(connection: Connection, user_id: str) -> User | None:
    row = connection.execute(_BY_ID, {"id": user_id}).first()
    return None if row is None else _user(row)


def _existing(connection: Connection, username: str) -> User:
    user = _by_name(connection, username)
    if user is None:
        raise UnknownUser(f"no user named {username!r}")
    return user


def _credentials(connection: Connection, username: str) -> tuple[User, str] | None:
    row = connection.execute(_CREDENTIALS, {"name": username}).first()
    return None if row is None else (_user(row), row.password_hash)


def _all(connection: Connection) -> list[User]:
    query = sa.select(*_USER_COLUMNS).order_by(name_order(users.c.username))
    return [_user(row) for row in connection.execute(query)]


def _count_active_admins(connection: Connection) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(users)
        .where(users.c.is_admin == sa.true(), users.c.active == sa.true())
    )
    return int(connection.execute(query).scalar_one())


def _end_sessions(connection: Connection, user_id: str) -> None:
    connection.execute(sa.delete(sessions).where(sessions.c.user_id == user_id))


def _guard_last_admin(connection: Connection, user: User, action: str) -> None:
    if user.is_admin and user.active and _count_active_admins(connection) <= 1:
        raise LastAdmin(
            f"cannot {action} {user.username!r}: it is the last active admin "
            "(promote another user first)"
        )


def _insert(connection: Connection, user: User, password_hash: str) -> None:
    existing = _by_name(connection, user.username)
    if existing is not None:
        raise UserExists(f"a user named {existing.username!r} exists already")
    connection.execute(
        sa.insert(users).values(
            id=user.id,
            username=user.username,
            password_hash=password_hash,
            is_admin=user.is_admin,
            active=user.active,
            can_control=user.can_control,
            created_at=user.created_at,
            updated_at=user.updated_at,
            last_login=user.last_login,
        )
    )


def _update(connection: Connection, user_id: str, **values: object) -> int:
    result = connection.execute(sa.update(users).where(users.c.id == user_id).values(**values))
    return result.rowcount


def _record_login(
    connection: Connection, user_id: str, password_hash: str, now: float
) -> User | None:
    # Only if nothing changed since the password was checked (no new password, not
    # disabled): otherwise a login racing a password change could use the old one.
    changed = connection.execute(
        sa.update(users)
        .where(
            users.c.id == user_id,
            users.c.password_hash == password_hash,
            users.c.active == sa.true(),
        )
        .values(last_login=now)
    ).rowcount
    return _by_id(connection, user_id) if changed == 1 else None


def _set_password(connection: Connection, username: str, password_hash: str, now: float) -> User:
    user = _existing(connection, username)
    _update(connection, user.id, password_hash=password_hash, updated_at=now)
    _end_sessions(connection, user.id)
    return attrs.evolve(user, updated_at=now)


def _set_active(connection: Connection, username: str, active: bool, now: float) -> User:
    user = _existing(connection, username)
    if not active:
        _guard_last_admin(connection, user, "disable")
        _end_sessions(connection, user.id)
    _update(connection, user.id, active=active, updated_at=now)
    return attrs.evolve(user, active=active, updated_at=now)


def _set_admin(connection: Connection, username: str, admin: bool, now: float) -> User:
    user = _existing(connection, username)
    if not admin:
        _guard_last_admin(connection, user, "demote")
    _update(connection, user.id, is_admin=admin, updated_at=now)
    return attrs.evolve(user, is_admin=admin, updated_at=now)


def _set_can_control(connection: Connection, username: str, allowed: bool, now: float) -> User:
    user = _existing(connection, username)
    _update(connection, user.id, can_control=allowed, updated_at=now)
    return attrs.evolve(user, can_control=allowed, updated_at=now)


def _reset_admin(connection: Connection, username: str, password_hash: str, now: float) -> User:
    """Make ``username`` an active admin with this password, creating it if need be."""
    user = _by_name(connection, username)
    if user is None:
        new = User(str(uuid.uuid4()), username, True, True, True, now, now, None)
        _insert(connection, new, password_hash)
        return new
    _set_password(connection, username, password_hash, now)
    _update(connection, user.id, active=True, is_admin=True)
    return attrs.evolve(user, active=True, is_admin=True, updated_at=now)


def _delete(connection: Connection, username: str) -> None:
    user = _existing(connection, username)
    _guard_last_admin(connection, user, "delete")
    _end_sessions(connection, user.id)
    connection.execute(sa.delete(users).where(users.c.id == user.id))


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

    def ensure_admin_now(self, username: str, password: str) -> bool:
        """Create ``username`` as an admin unless a user of that name exists, blocking
        (bcrypt included): for ``ADMIN_USERNAME``/``ADMIN_PASSWORD`` at the daemon's start,
        before the reactor runs and before the port is bound. True if it was created; an
        existing user is left exactly as it is, whatever its password or role.
        """
        check_username(username)
        check_new_password(password)
        if self._db.read_now(_by_name, username) is not None:
            return False
        now = self._clock.seconds()
        user = User(str(uuid.uuid4()), username, True, True, True, now, now, None)
        try:
            self._db.write_now(_insert, user, self._hasher.hash_now(password))
        except UserExists:
            return False
        return True

    def reset_admin_now(self, username: str, password: str) -> User:
        """Make ``username`` an active admin whose password is ``password``, creating it
        if need be (ending its sessions if not), blocking: for ``--demo`` at start."""
        check_new_password(password)
        password_hash = self._hasher.hash_now(password)
        return self._db.write_now(_reset_admin, username, password_hash, self._clock.seconds())

    def count_active_admins(self) -> Deferred[int]:
        """How many users are both admin and active."""
        return self._db.read(_count_active_admins)

    def list(self) -> Deferred[builtins.list[User]]:
        """All users, by name ignoring case."""
        return self._db.read(_all)
