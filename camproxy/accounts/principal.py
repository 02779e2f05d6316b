"""Who a request or a socket is authenticated as: one user, through a session or a token."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from camproxy.accounts.access import Caller, Level
from camproxy.accounts.cameras import CameraStore
from camproxy.accounts.database import Database
from camproxy.accounts.sessions import Session, SessionStore
from camproxy.accounts.tables import users
from camproxy.accounts.tokens import CONTROL, TokenGrant, TokenStore


@attrs.frozen(eq=False)
class Principal:
    """An authenticated caller: a browser session (``session_id``) or an API token
    (``token_id``), with its user's rights as they were when it was checked.

    Compared by identity: the sockets admitted with one lookup share one principal.
    """

    user_id: str
    username: str
    is_admin: bool
    can_control: bool
    session_id: str | None = None
    token_id: str | None = None
    token_name: str | None = None
    token_scope: str | None = None
    #: The user's grants, by camera name (the cameras without one use their default).
    grants: Mapping[str, Level] = attrs.field(factory=dict)
    #: For a token limited to some cameras, their names; None: all its user may access.
    token_cameras: frozenset[str] | None = None

    @property
    def caller(self) -> Caller:
        """What the access decision needs to know of this principal."""
        scope = None
        if self.token_id is not None:
            scope = Level.CONTROL if self.token_scope == CONTROL else Level.VIEW
        return Caller(
            is_admin=self.is_admin,
            can_control=self.can_control,
            grants=self.grants,
            token_scope=scope,
            token_cameras=self.token_cameras,
        )

    @property
    def may_control(self) -> bool:
        """Whether this caller may move cameras and switch lights.

        Admins always may; other users unless marked ``nocontrol``; a token only with
        the ``control`` scope, and never more than its user.
        """
        user_may = self.is_admin or self.can_control
        if self.token_id is not None:
            return user_may and self.token_scope == CONTROL
        return user_may


def principal_of_session(session: Session, grants: Mapping[str, Level]) -> Principal:
    return Principal(
        user_id=session.user_id,
        username=session.username,
        is_admin=session.is_admin,
        can_control=session.can_control,
        session_id=session.id,
        grants=grants,
    )


def principal_of_token(
    grant: TokenGrant, grants: Mapping[str, Level], cameras: frozenset[str] | None
) -> Principal:
    return Principal(
        user_id=grant.user_id,
        username=grant.username,
        is_admin=grant.is_admin,
        can_control=grant.can_control,
        token_id=grant.token_id,
        token_name=grant.token_name,
        token_scope=grant.scope,
        grants=grants,
        token_cameras=cameras,
    )


@attrs.frozen
class Rights:
    """A user's rights as stored now."""

    is_admin: bool
    can_control: bool


def _rights(connection: Connection, user_ids: list[str]) -> dict[str, Rights]:
    rows = connection.execute(
        sa.select(users.c.id, users.c.is_admin, users.c.can_control).where(
            users.c.id.in_(user_ids), users.c.active == sa.true()
        )
    )
    return {row.id: Rights(bool(row.is_admin), bool(row.can_control)) for row in rows}


class PrincipalRefresher:
    """Checks principals again against the database, for the daemon's watcher.

    A principal whose session or token has ended (or whose user was disabled or
    deleted) refreshes to None; the others to their user's current rights, grants and
    token limits, so a running socket follows a changed grant or role.
    """

    def __init__(
        self,
        db: Database,
        sessions: SessionStore,
        tokens: TokenStore,
        cameras: CameraStore,
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._tokens = tokens
        self._cameras = cameras

    async def refresh(self, principals: Iterable[Principal]) -> dict[Principal, Principal | None]:
        wanted = set(principals)
        session_ids = {p.session_id for p in wanted if p.session_id is not None}
        token_ids = {p.token_id for p in wanted if p.token_id is not None}
        user_ids = sorted({p.user_id for p in wanted})
        alive_sessions = await self._sessions.alive(session_ids) if session_ids else set()
        alive_tokens = await self._tokens.alive(token_ids) if token_ids else set()
        rights = await self._db.read(_rights, user_ids) if user_ids else {}
        grants = await self._cameras.grants_of(user_ids)
        limits = await self._cameras.token_cameras(alive_tokens)
        refreshed: dict[Principal, Principal | None] = {}
        for principal in wanted:
            ended = (
                principal.session_id is not None and principal.session_id not in alive_sessions
            ) or (principal.token_id is not None and principal.token_id not in alive_tokens)
            current = rights.get(principal.user_id)
            if ended or current is None:
                refreshed[principal] = None
                continue
            refreshed[principal] = attrs.evolve(
                principal,
                is_admin=current.is_admin,
                can_control=current.can_control,
                grants=grants.get(principal.user_id, {}),
                token_cameras=limits.get(principal.token_id) if principal.token_id else None,
            )
        return refreshed
