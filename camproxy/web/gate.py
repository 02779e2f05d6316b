"""The boundary between accounts and viewers: who may watch, and for how long.

The gate admits a WebSocket upgrade only with a valid session cookie and access to
its camera (CONTRACT §3, §6; the ``Origin`` is checked before, by the site). The
credential watcher ends every viewer, WebSocket or MJPEG, whose session or token has
ended, also when that happened in another process (``camproxy user disable``,
``camproxy token revoke``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from autobahn.websocket.protocol import ConnectionRequest
from autobahn.websocket.types import ConnectionDeny
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from camproxy.accounts.access import Level
from camproxy.accounts.principal import Principal, PrincipalRefresher
from camproxy.fleet import Fleet
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


@attrs.frozen
class Watched:
    """One viewer, the camera it watches and the principal it was admitted as."""

    viewer: IViewer
    camera: str
    principal: Principal


class ViewerDirectory:
    """Every viewer of every camera, whatever its transport, for closing by credential."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def watched(self) -> list[Watched]:
        return [
            Watched(viewer, stack.name, viewer.principal)
            for stack in self._fleet
            for viewer in stack.hub.viewers
            if isinstance(viewer.principal, Principal)
        ]

    def close_where(self, predicate: Callable[[Principal], bool], reason: CloseReason) -> int:
        """Close every viewer whose principal matches; returns how many."""
        closing = [w.viewer for w in self.watched() if predicate(w.principal)]
        for viewer in closing:
            viewer.close(reason)
        return len(closing)


class CredentialWatcher(TimerService):
    """Every few seconds, checks every viewer's credential and access again.

    A viewer whose session or token ended (logout elsewhere, ``camproxy user disable``,
    ``camproxy token revoke``) is closed, as is one that may no longer see its camera
    (a grant, a camera's default access or the user's role changed); one that dropped
    from ``control`` to ``view`` stays and gets ``error`` for its commands from now on.
    """

    log = Logger()

    def __init__(
        self,
        clock: Any,
        refresher: PrincipalRefresher,
        directory: ViewerDirectory,
        cameras: CameraAccess,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        super().__init__(interval, self.check)
        self.clock = clock
        self._refresher = refresher
        self._directory = directory
        self._cameras = cameras

    async def _check(self) -> None:
        watched = self._directory.watched()
        if not watched:
            return
        refreshed = await self._refresher.refresh(w.principal for w in watched)
        ended = denied = 0
        for item in watched:
            current = refreshed.get(item.principal)
            if current is None:
                item.viewer.close(CloseReason.SESSION_ENDED)
                ended += 1
                continue
            level = self._cameras.level(current, item.camera)
            if level < Level.VIEW:
                item.viewer.close(CloseReason.ACCESS_CHANGED)
                denied += 1
            else:
                item.viewer.readmit(current, level.text)
        if ended or denied:
            self.log.info(
                "closed {ended} viewers whose credentials ended and {denied} that lost "
                "access to their camera",
                ended=ended,
                denied=denied,
            )

    def check(self) -> Deferred[None]:
        checking = Deferred.fromCoroutine(self._check())
        # A failed check (say, the database is busy) must not stop the timer for good.
        checking.addErrback(lambda failure: self.log.failure("credential check failed", failure))
        return checking
