"""API tokens: credentials for integrations (Home Assistant, scripts) instead of a login.

A token is ``cpx_`` + ``secrets.token_urlsafe(32)`` (256 random bits). It is shown once,
at creation; the database keeps only its SHA-256 and its first ``PREFIX_CHARS``
characters (for listings), so a copy of the database file yields no usable token.

Each token belongs to a user, has a name unique for that user (ignoring case) and a
scope: ``view`` (stream, snapshot, status) or ``control`` (also move the camera and
switch its light, if the user may: ``TokenGrant.may_control``). A token works while its
user exists and is active, with the user's current rights: disabling the user stops
it (enabling the user again revives it), deleting the user deletes it (the foreign
key cascades), a new password leaves it alone. Revoking a token deletes its row.
"""

from __future__ import annotations

import builtins
import re
import secrets
import uuid
from collections.abc import Iterable
from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from camproxy.accounts.cameras import limit_token
from camproxy.accounts.database import Database, as_deferred
from camproxy.accounts.hashedkeys import among, hashed, plausible, present
from camproxy.accounts.tables import api_tokens, name_order, same_name, users
from camproxy.accounts.users import AccountError, UnknownUser

TOKEN_PREFIX: Final = "cpx_"  # noqa: S105 (a marker, not a secret)
# "cpx_" and 8 random characters (48 of the 256 bits): enough to tell tokens apart.
PREFIX_CHARS: Final = 12
VIEW: Final = "view"
CONTROL: Final = "control"
SCOPES: Final = (VIEW, CONTROL)
MAX_NAME_CHARS: Final = 50
# Seconds: last_used_at is written at most this often per token, to spare writes.
LAST_USED_RESOLUTION: Final = 60.0

_NAME: Final = re.compile(r"[A-Za-z0-9._@](?:[A-Za-z0-9._@ -]{0,48}[A-Za-z0-9._@-])?")
# Ours are 47 characters; anything far longer is not one of ours.
_MAX_SECRET_CHARS: Final = 128

_JOINED: Final = api_tokens.join(users, users.c.id == api_tokens.c.user_id)
_SELECT_ROWS: Final = sa.select(
    api_tokens.c.id,
    api_tokens.c.user_id,
    users.c.username,
    api_tokens.c.name,
    api_tokens.c.scope,
    api_tokens.c.prefix,
    api_tokens.c.created_at,
    api_tokens.c.last_used_at,
).select_from(_JOINED)
_ORDER: Final = (
    name_order(users.c.username),
    name_order(api_tokens.c.name),
    api_tokens.c.created_at,
)
_SELECT_GRANT: Final = sa.select(
    api_tokens.c.id,
    api_tokens.c.name,
    api_tokens.c.scope,
    api_tokens.c.last_used_at,
    api_tokens.c.user_id,
    users.c.username,
    users.c.is_admin,
    users.c.can_control,
    users.c.active,
).select_from(_JOINED)
# Built once with bind parameters (see sessions.py): run for every request with a token.
_GRANT: Final = _SELECT_GRANT.where(api_tokens.c.token_hash == sa.bindparam("key"))
_TOUCH: Final = (
    sa.update(api_tokens)
    .where(api_tokens.c.id == sa.bindparam("token_id"))
    .values(last_used_at=sa.bindparam("now"))
)
_ALIVE: Final = (
    sa.select(api_tokens.c.id)
    .select_from(_JOINED)
    .where(among(api_tokens.c.id), users.c.active == sa.true())
)


class TokenError(AccountError):
    """A token operation was refused; the message is one line, fit for a user."""


class TokenExists(TokenError):
    """The user has a token of that name already (names ignore case)."""


class UnknownToken(TokenError):
    """The user has no token of that name."""


class InvalidTokenName(TokenError, ValueError):
    """A new token's name breaks the rules (see ``check_token_name``)."""


class InvalidTokenScope(TokenError, ValueError):
    """A scope other than ``view`` or ``control``."""


def check_token_name(name: str) -> None:
    """Raise ``InvalidTokenName`` unless ``name`` may name a new token.

    1 to 50 ASCII letters, digits, spaces and ``. _ - @``; neither starting with ``-``
    (it would read as an option on the command line) or a space nor ending with a space.
    """
    if not _NAME.fullmatch(name):
        raise InvalidTokenName(
            f"invalid token name {name!r}: use 1 to {MAX_NAME_CHARS} letters, digits, "
            "spaces and . _ - @ (not starting with - or a space, not ending with a space)"
        )


def check_scope(scope: str) -> None:
    """Raise ``InvalidTokenScope`` unless ``scope`` is ``view`` or ``control``."""
    if scope not in SCOPES:
        raise InvalidTokenScope(f"invalid token scope {scope!r}: use view or control")


@attrs.frozen
class ApiToken:
    """A stored token, without its secret. Times are POSIX seconds.

    ``prefix`` is the token's first ``PREFIX_CHARS`` characters; ``last_used_at`` is
    None before the first use and otherwise exact to ``LAST_USED_RESOLUTION``.
    """

    id: str
    user_id: str
    username: str
    name: str
    scope: str
    prefix: str
    created_at: float
    last_used_at: float | None


@attrs.frozen
class TokenGrant:
    """What a valid token allows, with its user's state as it is now."""

    token_id: str
    token_name: str
    scope: str
    user_id: str
    username: str
    is_admin: bool
    can_control: bool

    @property
    def may_control(self) -> bool:
        """Whether the bearer may move the camera and switch its light.

        Only a ``control`` token of a user who may control (admins always may).
        """
        return self.scope == CONTROL and (self.is_admin or self.can_control)


def _plausible(secret: object) -> bool:
    return plausible(secret, max_chars=_MAX_SECRET_CHARS, prefix=TOKEN_PREFIX)


def _token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        user_id=row.user_id,
        username=row.username,
        name=row.name,
        scope=row.scope,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


def _user(connection: Connection, username: str) -> tuple[str, str]:
    """The id and stored name of the user ``username`` (ignoring case)."""
    query = sa.select(users.c.id, users.c.username).where(same_name(users.c.username, username))
    row = connection.execute(query).first()
    if row is None:
        raise UnknownUser(f"no user named {username!r}")
    return row.id, row.username


def _insert(
    connection: Connection,
    username: str,
    name: str,
    scope: str,
    key: str,
    prefix: str,
    now: float,
    cameras: tuple[str, ...] = (),
) -> ApiToken:
    user_id, stored_username = _user(connection, username)
    existing = connection.scalar(
        sa.select(api_tokens.c.name).where(
            api_tokens.c.user_id == user_id, same_name(api_tokens.c.name, name)
        )
    )
    if existing is not None:
        raise TokenExists(f"{stored_username!r} has a token named {existing!r} already")
    token = ApiToken(
        id=str(uuid.uuid4()),
        user_id=user_id,
        username=stored_username,
        name=name,
        scope=scope,
        prefix=prefix,
        created_at=now,
        last_used_at=None,
    )
    connection.execute(
        sa.insert(api_tokens).values(
            id=token.id,
            user_id=user_id,
            name=name,
            scope=scope,
            token_hash=key,
            prefix=prefix,
            created_at=now,
            last_used_at=None,
        )
    )
    if cameras:
        limit_token(connection, token.id, cameras)
    return token


def _grant(connection: Connection, key: str) -> tuple[TokenGrant, float | None] | None:
    row = connection.execute(_GRANT, {"key": key}).first()
    if row is None or not row.active:
        return None
    grant = TokenGrant(
        token_id=row.id,
        token_name=row.name,
        scope=row.scope,
        user_id=row.user_id,
        username=row.username,
        is_admin=bool(row.is_admin),
        can_control=bool(row.can_control),
    )
    return grant, row.last_used_at


def _touch(connection: Connection, token_id: str, now: float) -> bool:
    """Record a use; False if the token was revoked since it was looked up."""
    return connection.execute(_TOUCH, {"token_id": token_id, "now": now}).rowcount > 0


def _list(connection: Connection, username: str | None) -> list[ApiToken]:
    query = _SELECT_ROWS
    if username is not None:
        user_id, _ = _user(connection, username)
        query = query.where(api_tokens.c.user_id == user_id)
    return [_token(row) for row in connection.execute(query.order_by(*_ORDER))]


def _by_id(connection: Connection, token_id: str) -> ApiToken | None:
    row = connection.execute(_SELECT_ROWS.where(api_tokens.c.id == token_id)).first()
    return None if row is None else _token(row)


def _revoke(connection: Connection, username: str, name: str) -> None:
    user_id, stored_username = _user(connection, username)
    deleted = connection.execute(
        sa.delete(api_tokens).where(
            api_tokens.c.user_id == user_id, same_name(api_tokens.c.name, name)
        )
    ).rowcount
    if not deleted:
        raise UnknownToken(f"{stored_username!r} has no token named {name!r}")


def _revoke_by_id(connection: Connection, token_id: str) -> bool:
    deleted = connection.execute(sa.delete(api_tokens).where(api_tokens.c.id == token_id))
    return deleted.rowcount > 0


def _alive_ids(connection: Connection, token_ids: list[str]) -> set[str]:
    return present(connection, _ALIVE, token_ids)


class TokenStore:
    """API tokens in a ``Database``; every method returns a ``Deferred``.

    :param db: the open database.
    :param clock: the only source of time (``IReactorTime``, or ``task.Clock`` in tests).

    User names are matched ignoring case, token names too. Methods that name a user who
    does not exist fail with ``accounts.UnknownUser``; ``TokenExists``, ``UnknownToken``,
    ``InvalidTokenName`` and ``InvalidTokenScope`` are the other refusals, all
    ``TokenError`` (an ``accounts.AccountError``).
    """

    def __init__(self, db: Database, clock: IReactorTime) -> None:
        self._db = db
        self._clock = clock

    @as_deferred
    async def create(
        self, username: str, name: str, scope: str = VIEW, cameras: Iterable[str] = ()
    ) -> tuple[ApiToken, str]:
        """A new token for ``username``: its record and the secret, to show once.

        A token may be made for a disabled user; it works once the user is enabled.
        ``cameras`` limits it to those cameras (none: every camera its user may access);
        an unknown camera name fails with ``cameras.UnknownCamera``.
        """
        check_token_name(name)
        check_scope(scope)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = await self._db.write(
            _insert,
            username,
            name,
            scope,
            hashed(secret),
            secret[:PREFIX_CHARS],
            self._clock.seconds(),
            tuple(sorted(set(cameras))),
        )
        return token, secret

    @as_deferred
    async def authenticate(self, secret: str) -> TokenGrant | None:
        """The grant of the token ``secret``, or None if it is unknown or revoked or
        its user is disabled or deleted.

        Records the use in ``last_used_at`` if the last record is a minute old or more
        (so at most one write a minute per token); other uses only read.
        """
        if not _plausible(secret):
            return None
        found = await self._db.read(_grant, hashed(secret))
        if found is None:
            return None
        grant, last_used_at = found
        now = self._clock.seconds()
        stale = last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION
        if stale and not await self._db.write(_touch, grant.token_id, now):
            return None
        return grant

    def list(self, username: str | None = None) -> Deferred[builtins.list[ApiToken]]:
        """The tokens of ``username``, or of every user when None; by user, then name."""
        return self._db.read(_list, username)

    def get(self, token_id: str) -> Deferred[ApiToken | None]:
        """The token with that id, or None."""
        return self._db.read(_by_id, token_id)

    def revoke(self, username: str, name: str) -> Deferred[None]:
        """Delete the token ``name`` of ``username``; ``UnknownToken`` if there is none."""
        return self._db.write(_revoke, username, name)

    def revoke_by_id(self, token_id: str) -> Deferred[bool]:
        """Delete the token with that id; True if it existed."""
        return self._db.write(_revoke_by_id, token_id)

    def alive(self, token_ids: Iterable[str]) -> Deferred[set[str]]:
        """Which of ``token_ids`` still work: not revoked, their user active.

        For the daemon's periodic check, to end streams opened with a token that was
        revoked or whose user was disabled or deleted since.
        """
        unique = sorted(set(token_ids))
        if not unique:
            return succeed(set())
        return self._db.read(_alive_ids, unique)
