"""Browser viewers on ``/ws``: the handshake gate, commands in, frames and events out.

Each viewer is a push *producer* for its own transport. While the transport holds
unsent data it pauses us, and we keep only the newest frame for it: a slow viewer
skips frames instead of growing a queue, and never delays the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import ConnectionRequest, PreparedMessage
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IConsumer, IReactorTime, ISSLTransport
from zope.interface import Interface, implementer

from camproxy.hub.commands import InvalidCommand, parse_viewer_message
from camproxy.hub.hub import CameraHub, Frame, IRequester, IViewer, event
from camproxy.viewers.delivery import FrameTotals, NewestFrameProducer
from camproxy.viewers.directwrite import write_now
from camproxy.viewers.ratelimit import TokenBucket
from camproxy.web.proxies import TrustedProxies

#: CONTRACT §3: a text message over 64 KiB closes the connection with 1009.
MAX_INCOMING_MESSAGE = 64 * 1024
#: Messages a viewer may send: this many a second on average, in bursts of up to ``BURST``.
MESSAGE_RATE = 20.0
MESSAGE_BURST = 40.0
#: Told to a viewer over the limit, at most once per ``THROTTLE_NOTICE_INTERVAL`` seconds.
SLOW_DOWN = "too many messages; slow down"
THROTTLE_NOTICE_INTERVAL = 1.0
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009


@attrs.frozen
class ViewerIdentity:
    """Who is on the other end of a viewer socket, decided at the handshake."""

    user: str | None
    is_admin: bool = False
    can_control: bool = True
    user_id: str | None = None
    session_id: str | None = None

    @property
    def may_control(self) -> bool:
        return self.is_admin or self.can_control


class IHandshakeGate(Interface):
    """Decides whether a WebSocket upgrade request may become a viewer."""

    def admit(request: ConnectionRequest, secure: bool) -> Deferred[ViewerIdentity]:
        """Fire with the viewer's identity, or fail with ``ConnectionDeny(403)``."""


def forbidden(reason: str) -> ConnectionDeny:
    return ConnectionDeny(ConnectionDeny.FORBIDDEN, reason)


@implementer(IViewer, IRequester)
class ViewerProtocol(WebSocketServerProtocol):
    """One browser watching one camera."""

    factory: ViewerFactory
    #: txaio's logger drops Autobahn's per-message debug traces before they become events
    #: (a Twisted ``Logger`` would build one for every frame sent to every viewer).
    log = txaio.make_logger()  # type: ignore[attr-defined]

    identity: ViewerIdentity | None = None
    frames: NewestFrameProducer | None = None
    gone: Deferred[None]
    _attached = False
    _commands: TokenBucket | None = None
    #: Messages dropped over the rate limit, and when the viewer was last told.
    throttled = 0
    _throttle_noticed_at: float | None = None

    # -- handshake and lifetime ---------------------------------------------

    def connectionMade(self) -> None:
        self.gone = Deferred()
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        if not self.gone.called:
            self.gone.callback(None)

    def onConnect(self, request: ConnectionRequest) -> Deferred[None]:  # type: ignore[override]
        assert self.transport is not None
        secure = self.factory.proxies.is_secure(
            str(getattr(self.transport.getPeer(), "host", "")),
            ISSLTransport.providedBy(self.transport),
            request.headers.get("x-forwarded-proto"),
        )
        admitted = self.factory.gate.admit(request, secure)

        def remember(identity: ViewerIdentity) -> None:
            self.identity = identity

        return admitted.addCallback(remember)

    def onOpen(self) -> None:
        # Twisted Web's channel was the transport's producer; our frames are now.
        transport = self.transport
        assert IConsumer.providedBy(transport)
        transport.unregisterProducer()
        self.frames = NewestFrameProducer(self._write_frame, self.factory.totals)
        transport.registerProducer(self.frames, True)
        self._commands = TokenBucket(self.factory.clock, rate=MESSAGE_RATE, burst=MESSAGE_BURST)
        assert self.identity is not None
        hub = self.factory.hub
        self.send_event(
            json.dumps(
                {
                    "type": "hello",
                    "user": self.identity.user,
                    "is_admin": self.identity.is_admin,
                    "can_control": self.identity.may_control,
                    "limits": hub.limits.as_json(),
                    **hub.hello_fields(),
                },
                separators=(",", ":"),
            )
        )
        self._attached = True
        self.factory.viewer_opened(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.frames is not None:
            self.frames.stopProducing()
        if self._attached:
            self._attached = False
            self.factory.viewer_closed(self)

    # -- browser -> server --------------------------------------------------

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        # Autobahn's own payload limit would also cap what we send (frames exceed
        # 64 KiB), so the incoming limit is enforced here, before any data arrives.
        if self.message_data_total_length > MAX_INCOMING_MESSAGE and not self.failedByMe:
            self._fail_connection(CLOSE_TOO_BIG, "message too big")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        assert self._commands is not None
        if not self._commands.take():
            self._throttle()
            return
        if isBinary:
            self.command_refused("binary messages are not accepted; send JSON text")
            return
        try:
            command = parse_viewer_message(payload.decode("utf-8"), self.factory.hub.limits)
        except InvalidCommand as refusal:
            self.command_refused(str(refusal))
            return
        self.factory.hub.execute(command, self)

    def _throttle(self) -> None:
        """Drop a message over the rate limit; say so once a second, count the rest."""
        self.throttled += 1
        self.factory.throttled += 1
        now = self.factory.clock.seconds()
        last = self._throttle_noticed_at
        if last is None or now - last >= THROTTLE_NOTICE_INTERVAL:
            self._throttle_noticed_at = now
            self.command_refused(SLOW_DOWN)

    # -- IRequester ------------------------------------------------------------

    @property
    def may_control(self) -> bool:
        return self.identity is not None and self.identity.may_control

    def command_refused(self, reason: str) -> None:
        self.send_event(event("error", message=reason))

    # -- IViewer ------------------------------------------------------------------

    def send_event(self, message: str) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(message.encode("utf-8"), isBinary=False)

    def send_frame(self, frame: Frame) -> None:
        if self.state == self.STATE_OPEN and self.frames is not None:
            self.frames.offer(frame)

    def _write_frame(self, frame: Frame) -> None:
        # The frame is framed once for everyone; its bytes go straight to the transport.
        # Autobahn's sendData would format debug-log arguments (colours and all) for
        # every frame and viewer even with debug logging off: ~15 % of the daemon's CPU
        # at 500 viewers. Compression is never negotiated, so the bytes are final.
        prepared = frame.encoded("websocket", self.factory.prepare_frame)
        write_now(self.transport, prepared.payloadHybi)

    def close_viewer(self, code: int, reason: str) -> None:
        if self.state not in (self.STATE_OPEN, self.STATE_CONNECTING):
            return
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code, reason)
        else:
            # sendClose refuses the protocol-level codes (1001 going away) that a server
            # legitimately sends; the close frame itself allows them.
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8"), isReply=False)


class ViewerFactory(WebSocketServerFactory):
    """Builds viewer protocols for one camera hub and remembers the open ones."""

    protocol = ViewerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        hub: CameraHub,
        gate: IHandshakeGate,
        clock: IReactorTime,
        *,
        proxies: TrustedProxies | None = None,
        totals: FrameTotals | None = None,
        **kw: Any,
    ):
        super().__init__(**kw)
        self.hub = hub
        self.gate = gate
        self.clock = clock
        self.proxies = proxies or TrustedProxies()
        self.totals = totals or FrameTotals()
        self.viewers: set[ViewerProtocol] = set()
        self.throttled = 0
        self.setProtocolOptions(
            webStatus=False,
            failByDrop=False,
            autoPingInterval=20.0,
            autoPingTimeout=10.0,
            openHandshakeTimeout=10.0,
            closeHandshakeTimeout=3.0,
        )

    def prepare_frame(self, data: bytes) -> PreparedMessage:
        return self.prepareMessage(data, isBinary=True, doNotCompress=True)

    def viewer_opened(self, viewer: ViewerProtocol) -> None:
        self.viewers.add(viewer)
        self.hub.attach(viewer)

    def viewer_closed(self, viewer: ViewerProtocol) -> None:
        self.viewers.discard(viewer)
        self.hub.detach(viewer)

    def close_all(self, code: int, reason: str, timeout: float = 3.0) -> Deferred[Any]:
        """Close every viewer; fires once all are gone (or after ``timeout``)."""
        gone = [viewer.gone for viewer in self.viewers]
        for viewer in list(self.viewers):
            viewer.close_viewer(code, reason)
        waiting = DeferredList(gone, consumeErrors=True)
        waiting.addTimeout(timeout, self.clock)
        return waiting.addErrback(lambda _: None)

    def close_where(
        self, predicate: Callable[[ViewerIdentity], bool], code: int, reason: str
    ) -> int:
        """Close every open viewer whose identity matches; returns how many."""
        closing = [
            viewer
            for viewer in self.viewers
            if viewer.identity is not None and predicate(viewer.identity)
        ]
        for viewer in closing:
            viewer.close_viewer(code, reason)
        return len(closing)
