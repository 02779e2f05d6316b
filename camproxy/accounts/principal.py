"""Who a request or a socket is authenticated as: one user, through a session or a token."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from camproxy.accounts.access import Caller, Level
from camproxy.accounts.sessions import Session
from camproxy.accounts.tokens import CONTROL, TokenGrant


@attrs.frozen
class Principal:
    """An authenticated caller: a browser session (``session_id``) or an API token
    (``token_id``), with its user's rights as they were when it was checked."""

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


def principal_of_session(session: Session) -> Principal:
    return Principal(
        user_id=session.user_id,
        username=session.username,
        is_admin=session.is_admin,
        can_control=session.can_control,
        session_id=session.id,
    )


def principal_of_token(grant: TokenGrant) -> Principal:
    return Principal(
        user_id=grant.user_id,
        username=grant.username,
        is_admin=grant.is_admin,
        can_control=grant.can_control,
        token_id=grant.token_id,
        token_name=grant.token_name,
        token_scope=grant.scope,
    )
