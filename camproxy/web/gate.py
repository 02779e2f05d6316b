"""The boundary between accounts and viewers: who may open ``/ws``, and for how long.

The gate admits a WebSocket upgrade only with a valid session cookie and an allowed
``Origin`` (CONTRACT §3); the watcher closes sockets whose session has ended, also when
that happened in another process (``camproxy user disable`` and friends).
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from typing import Any

from autobahn.websocket.protocol import ConnectionRequest
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from camproxy.accounts.service import AccountsService
from camproxy.accounts.sessions import Session
from camproxy.viewers.websocket import IHandshakeGate, ViewerFactory, ViewerIdentity, forbidden
from camproxy.web.origins import OriginPolicy

SESSION_COOKIE = "camproxy_session"
#: Close code telling the page its session is over: back to the login page.
CLOSE_SESSION_ENDED = 4001
CLOSE_PERMISSIONS_CHANGED = 4002


def cookie_value(header: str | None, name: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def identity_of(session: Session) -> ViewerIdentity:
    return ViewerIdentity(
        user=session.username,
        is_admin=session.is_admin,
        can_control=session.can_control,
        user_id=session.user_id,
        session_id=session.id,
    )


@implementer(IHandshakeGate)
class SessionGate:
    """Admits a viewer with a valid session cookie and an allowed (or absent) Origin."""

    def __init__(self, accounts: AccountsService, origins: OriginPolicy) -> None:
        self._accounts = accounts
        self._origins = origins

    def admit(self, request: ConnectionRequest, secure: bool) -> Deferred[ViewerIdentity]:
        return Deferred.fromCoroutine(self._admit(request, secure))

    async def _admit(self, request: ConnectionRequest, secure: bool) -> ViewerIdentity:
        headers = request.headers
        if not self._origins.allows(headers.get("origin"), headers.get("host"), secure):
            raise forbidden("origin not allowed")
        session_id = cookie_value(headers.get("cookie"), SESSION_COOKIE)
        await self._accounts.when_ready()
        sessions = self._accounts.sessions
        if not session_id or sessions is None:
            raise forbidden("login required")
        session = await sessions.lookup(session_id)
        if session is None:
            raise forbidden("login required")
        return identity_of(session)


class SessionWatcher(Service):
    """Every few seconds, closes the sockets whose sessions no longer exist."""

    log = Logger()

    def __init__(
        self, reactor: Any, accounts: AccountsService, viewers: ViewerFactory, interval: float = 5.0
    ) -> None:
        self._accounts = accounts
        self._viewers = viewers
        self._interval = interval
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    async def _check(self) -> None:
        sessions = self._accounts.sessions
        if sessions is None:
            return
        open_ids = {
            v.identity.session_id
            for v in self._viewers.viewers
            if v.identity is not None and v.identity.session_id is not None
        }
        if not open_ids:
            return
        alive = await sessions.alive(open_ids)
        ended = open_ids - alive
        if ended:
            self._viewers.close_where(
                lambda identity: identity.session_id in ended,
                CLOSE_SESSION_ENDED,
                "session ended",
            )

    def check(self) -> Deferred[None]:
        checking = Deferred.fromCoroutine(self._check())
        # A failed check (say, the database is busy) must not stop the loop for good.
        checking.addErrback(lambda failure: self.log.failure("session check failed", failure))
        return checking
