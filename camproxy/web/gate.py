"""The boundary between accounts and viewers: who may watch, and for how long.

The gate admits a WebSocket upgrade only with a valid session cookie and access to
its camera (CONTRACT §3, §6; the ``Origin`` is checked before, by the site). The
credential watcher ends every viewer, WebSocket or MJPEG, whose session or token has
ended, also when that happened in another process (``camproxy user disable``,
``camproxy token revoke``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from autobahn.websocket.protocol import ConnectionRequest
from autobahn.websocket.types import ConnectionDeny
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from camproxy.accounts.access import Level
from camproxy.accounts.principal import Principal
from camproxy.accounts.service import AccountsService
from camproxy.hub.events import CloseReason
from camproxy.hub.viewer import IViewer
from camproxy.viewers.websocket import Admission, IHandshakeGate, forbidden
from camproxy.web.auth import SESSION_COOKIE, Authenticator, cookie_value
from camproxy.web.cameras import CameraAccess

#: Seconds between two checks for ended credentials (CONTRACT §4: within 10 s).
WATCH_INTERVAL = 5.0


@implementer(IHandshakeGate)
class CameraGate:
    """Admits a viewer of one camera: a valid session cookie, and at least ``view`` on it.

    A camera the user may not see is refused exactly as one that does not exist (404).
    """

    def __init__(self, auth: Authenticator, cameras: CameraAccess, camera: str) -> None:
        self._auth = auth
        self._cameras = cameras
        self._camera = camera

    def admit(self, request: ConnectionRequest, secure: bool, peer: str) -> Deferred[Admission]:
        session_id = cookie_value(request.headers.get("cookie"), SESSION_COOKIE)
        looking = self._auth.session_principal(session_id, memo=True)
        return looking.addCallback(self._admission)

    def _admission(self, principal: Principal | None) -> Admission:
        if principal is None:
            raise forbidden("login required")
        level = self._cameras.level(principal, self._camera)
        if level < Level.VIEW:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "no such camera")
        return Admission(
            principal=principal,
            user=principal.username,
            is_admin=principal.is_admin,
            access=level.text,
        )


class ViewerDirectory:
    """Every viewer of every camera, whatever its transport, for closing by credential."""

    def __init__(self, viewers: Callable[[], Iterable[IViewer]]) -> None:
        self._viewers = viewers

    def principals(self) -> list[tuple[IViewer, Principal]]:
        return [
            (viewer, viewer.principal)
            for viewer in self._viewers()
            if isinstance(viewer.principal, Principal)
        ]

    def close_where(self, predicate: Callable[[Principal], bool], reason: CloseReason) -> int:
        """Close every viewer whose principal matches; returns how many."""
        closing = [viewer for viewer, principal in self.principals() if predicate(principal)]
        for viewer in closing:
            viewer.close(reason)
        return len(closing)


class CredentialWatcher(TimerService):
    """Every few seconds, ends the viewers whose session or token no longer works."""

    log = Logger()

    def __init__(
        self,
        clock: Any,
        accounts: AccountsService,
        directory: ViewerDirectory,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        super().__init__(interval, self.check)
        self.clock = clock
        self._accounts = accounts
        self._directory = directory

    async def _check(self) -> None:
        sessions, tokens = self._accounts.sessions, self._accounts.tokens
        if sessions is None or tokens is None:
            return
        watched = self._directory.principals()
        session_ids = {p.session_id for _, p in watched if p.session_id is not None}
        token_ids = {p.token_id for _, p in watched if p.token_id is not None}
        alive_sessions = await sessions.alive(session_ids) if session_ids else set()
        alive_tokens = await tokens.alive(token_ids) if token_ids else set()
        ended_sessions = session_ids - alive_sessions
        ended_tokens = token_ids - alive_tokens
        if ended_sessions or ended_tokens:
            closed = self._directory.close_where(
                lambda p: p.session_id in ended_sessions or p.token_id in ended_tokens,
                CloseReason.SESSION_ENDED,
            )
            self.log.info("closed {count} viewers whose credentials ended", count=closed)

    def check(self) -> Deferred[None]:
        checking = Deferred.fromCoroutine(self._check())
        # A failed check (say, the database is busy) must not stop the timer for good.
        checking.addErrback(lambda failure: self.log.failure("credential check failed", failure))
        return checking
