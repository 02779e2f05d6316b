"""Who is asking: a browser session (cookie) or an API token (bearer or ``?token=``)."""

from __future__ import annotations

import attrs
from twisted.web.iweb import IRequest

from camproxy.accounts.service import AccountsService
from camproxy.accounts.sessions import Session
from camproxy.web.gate import SESSION_COOKIE


@attrs.frozen
class Principal:
    """An authenticated caller of the API or the media routes."""

    username: str
    is_admin: bool
    may_control: bool
    session_id: str | None = None
    token_name: str | None = None


def bearer_token(request: IRequest) -> str | None:
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, value = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def query_token(request: IRequest) -> str | None:
    values = request.args.get(b"token")
    if not values:
        return None
    try:
        return str(values[0].decode("ascii"))
    except UnicodeDecodeError:
        return None


class Authenticator:
    """Resolves sessions and tokens against the accounts; never creates anything."""

    def __init__(self, accounts: AccountsService) -> None:
        self._accounts = accounts

    async def session(self, request: IRequest) -> Session | None:
        await self._accounts.when_ready()
        sessions = self._accounts.sessions
        session_id = request.getCookie(SESSION_COOKIE.encode())
        if sessions is None or not session_id:
            return None
        try:
            return await sessions.lookup(session_id.decode("ascii"))
        except UnicodeDecodeError:
            return None

    async def principal(self, request: IRequest, *, allow_query_token: bool) -> Principal | None:
        """A token (``Authorization: Bearer``; ``?token=`` only where allowed) or a session."""
        secret = bearer_token(request)
        if secret is None and allow_query_token:
            secret = query_token(request)
        if secret is not None:
            await self._accounts.when_ready()
            tokens = self._accounts.tokens
            grant = await tokens.authenticate(secret) if tokens is not None else None
            if grant is None:
                return None
            return Principal(
                username=grant.username,
                is_admin=grant.is_admin,
                may_control=grant.may_control,
                token_name=grant.token_name,
            )
        session = await self.session(request)
        if session is None:
            return None
        return Principal(
            username=session.username,
            is_admin=session.is_admin,
            may_control=session.may_control,
            session_id=session.id,
        )
