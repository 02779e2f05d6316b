"""Who is asking: a browser session (cookie) or an API token (bearer or ``?token=``).

Every route, the viewer socket's handshake and the media streams authenticate here,
and get one :class:`~camproxy.accounts.principal.Principal` back.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from camproxy.accounts.principal import Principal, principal_of_session, principal_of_token
from camproxy.accounts.service import AccountsService

SESSION_COOKIE = "camproxy_session"
#: Seconds a session lookup is reused by handshakes: a crowd reconnecting after a
#: restart shares a handful of sessions, and the database answers each once.
SESSION_MEMO_SECONDS = 2.0
_SESSION_MEMO_SIZE = 4096


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


def cookie_value(header: str | None, name: str) -> str | None:
    """One cookie from a raw ``Cookie`` header (a WebSocket handshake's, say)."""
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


class Authenticator:
    """Resolves sessions and tokens against the accounts; never creates anything.

    Session lookups for handshakes (:meth:`session_principal` with ``memo=True``) are
    shared while in flight and reused for :data:`SESSION_MEMO_SECONDS`; ending a
    session here (:meth:`forget`) drops it at once, and sockets of sessions ended
    elsewhere are closed by the credential watcher.
    """

    def __init__(self, accounts: AccountsService, clock: IReactorTime) -> None:
        self._accounts = accounts
        self._clock = clock
        self._memo: dict[str, tuple[float, Principal | None]] = {}
        self._pending: dict[str, list[Deferred[Principal | None]]] = {}
        self._generation = 0

    def session_principal(
        self, session_id: str | None, *, memo: bool = False
    ) -> Deferred[Principal | None]:
        """The principal of a session id (from a cookie), or None."""
        if not session_id:
            return succeed(None)
        if not memo:
            return self._lookup(session_id)
        remembered = self._memo.get(session_id)
        if remembered is not None and remembered[0] > self._clock.seconds():
            return succeed(remembered[1])
        waiter: Deferred[Principal | None] = Deferred()
        waiters = self._pending.get(session_id)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._pending[session_id] = [waiter]
        self._lookup(session_id).addBoth(self._settle, session_id, self._generation)
        return waiter

    def _lookup(self, session_id: str) -> Deferred[Principal | None]:
        return Deferred.fromCoroutine(self._principal_of_session(session_id))

    async def _principal_of_session(self, session_id: str) -> Principal | None:
        session = await self._accounts.sessions.lookup(session_id)
        if session is None:
            return None
        grants = await self._accounts.cameras.grants_of([session.user_id])
        return principal_of_session(session, grants[session.user_id])

    def _settle(self, result: Principal | Failure | None, session_id: str, generation: int) -> None:
        waiters = self._pending.pop(session_id, [])
        if isinstance(result, Failure):
            for waiter in waiters:
                waiter.errback(result)
            return
        if generation == self._generation:
            now = self._clock.seconds()
            if len(self._memo) >= _SESSION_MEMO_SIZE:
                self._memo = {k: v for k, v in self._memo.items() if v[0] > now}
                if len(self._memo) >= _SESSION_MEMO_SIZE:
                    self._memo.clear()
            self._memo[session_id] = (now + SESSION_MEMO_SECONDS, result)
        for waiter in waiters:
            waiter.callback(result)

    def forget(self, session_id: str | None = None) -> None:
        """Drop remembered lookups (one session, or all after an account change)."""
        self._generation += 1
        if session_id is None:
            self._memo.clear()
        else:
            self._memo.pop(session_id, None)

    async def session(self, request: IRequest) -> Principal | None:
        """The principal of the request's session cookie, or None."""
        session_id = request.getCookie(SESSION_COOKIE.encode())
        if not session_id:
            return None
        try:
            decoded = session_id.decode("ascii")
        except UnicodeDecodeError:
            return None
        return await self.session_principal(decoded)

    async def principal(self, request: IRequest, *, allow_query_token: bool) -> Principal | None:
        """A token (``Authorization: Bearer``; ``?token=`` only where allowed) or a session."""
        secret = bearer_token(request)
        if secret is None and allow_query_token:
            secret = query_token(request)
        if secret is not None:
            grant = await self._accounts.tokens.authenticate(secret)
            if grant is None:
                return None
            cameras = self._accounts.cameras
            grants = await cameras.grants_of([grant.user_id])
            limits = await cameras.token_cameras([grant.token_id])
            return principal_of_token(grant, grants[grant.user_id], limits.get(grant.token_id))
        return await self.session(request)
