"""Browser viewers on ``/ws``: admitted by a gate, commands in, frames and events out.

Each viewer is a push *producer* for its own transport. While the transport holds
unsent data it pauses us, and we keep only the newest frame for it: a slow viewer
skips frames instead of growing a queue, and never delays the others.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import attrs
import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import ConnectionRequest, PreparedMessage, WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from camproxy.hub.commands import InvalidCommand
from camproxy.hub.events import CloseReason, Event, Refused
from camproxy.hub.frames import Frame
from camproxy.hub.hub import CameraHub
from camproxy.hub.viewer import IRequester, IViewer
from camproxy.viewers.delivery import NewestFrameProducer
from camproxy.viewers.directwrite import idle, socket_send
from camproxy.viewers.messages import (
    SetFrameRate,
    encode_error,
    encode_event,
    encode_hello,
    frame_rate,
    parse_viewer_message,
)
from camproxy.viewers.ratelimit import TokenBucket
from camproxy.viewers.socketopts import limit_unsent_bytes

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
#: The page goes back to the login form on 4001 and reloads on 4002.
CLOSE_CODES = {
    CloseReason.GOING_AWAY: (CLOSE_GOING_AWAY, "server shutting down"),
    CloseReason.SESSION_ENDED: (4001, "session ended"),
    CloseReason.ACCESS_CHANGED: (4002, "permissions changed"),
    CloseReason.CAMERA_REMOVED: (4004, "camera removed"),
}


@attrs.define
class Admission:
    """Who may watch, as the gate decided at the handshake.

    ``principal`` is the credential the viewer was admitted with, opaque here: the
    credential watcher closes viewers whose principal has ended, and lowers ``access``
    from ``control`` to ``view`` when a grant changes (the socket stays open).
    """

    principal: object
    user: str | None
    is_admin: bool = False
    access: str = "view"

    @property
    def may_control(self) -> bool:
        return self.access == "control"


class IHandshakeGate(Interface):
    """Decides whether a WebSocket upgrade request may become a viewer."""

    def admit(request: ConnectionRequest, secure: bool, peer: str) -> Deferred[Admission]:
        """Fire with the admission, or fail with :class:`ConnectionDeny` (403)."""


def forbidden(reason: str) -> ConnectionDeny:
    return ConnectionDeny(ConnectionDeny.FORBIDDEN, reason)


#: Autobahn's state of an open connection, read on every frame for every viewer.
STATE_OPEN = WebSocketProtocol.STATE_OPEN

#: Autobahn copies each of these options from the factory onto every protocol and
#: pretty-prints them all for a debug line that is then thrown away: about a fifth of a
#: handshake's CPU. The viewer copies them in one step instead (see ``connectionMade``).
_SERVER_OPTIONS = tuple(
    WebSocketProtocol.CONFIG_ATTRS_COMMON + WebSocketProtocol.CONFIG_ATTRS_SERVER
)


@implementer(IViewer, IRequester)
class ViewerProtocol(WebSocketServerProtocol):
    """One browser watching one camera."""

    factory: ViewerFactory
    #: txaio's logger drops Autobahn's per-message debug traces before they become events
    #: (a Twisted ``Logger`` would build one for every frame sent to every viewer).
    log = txaio.make_logger()  # type: ignore[attr-defined]
    CONFIG_ATTRS: list[str] = []

    admission: Admission | None = None
    #: The viewer's frame path and its transport's producer, from the opening on.
    frames: ViewerFrames | None = None
    gone: Deferred[None]
    _attached = False
    _commands: TokenBucket | None = None
    _opened_at: float | None = None
    _peer_host = "-"
    #: Seconds between frames this viewer asked for (``?fps=``, ``set_fps``); 0: every
    #: frame; None: none at all (a hidden tile).
    _frame_interval: float | None = 0.0
    #: Messages dropped over the rate limit, and when the viewer was last told.
    throttled = 0
    _throttle_noticed_at: float | None = None

    # -- handshake and lifetime ---------------------------------------------

    def connectionMade(self) -> None:
        self.gone = Deferred()
        self.__dict__.update(self.factory.protocol_options)
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        if self.frames is not None:
            self.frames.stopProducing()
        super().connectionLost(reason)
        if not self.gone.called:
            self.gone.callback(None)

    def onConnect(self, request: ConnectionRequest) -> Deferred[None]:  # type: ignore[override]
        assert self.transport is not None
        factory = self.factory
        self._peer_host = str(getattr(self.transport.getPeer(), "host", "-"))
        fps = request.params.get("fps")
        if fps:
            # A bad ?fps= is ignored: the viewer gets every frame.
            with contextlib.suppress(ValueError, InvalidCommand):
                self._set_frame_rate(frame_rate(float(fps[0])))
        secure = factory.is_secure(self.transport, self._peer_host, request.headers)
        admitted = factory.gate.admit(request, secure, self._peer_host)

        def remember(admission: Admission) -> None:
            self.admission = admission

        def refused(failure: Any) -> Any:
            denial = failure.value
            if isinstance(denial, ConnectionDeny):
                factory.request_log.info(
                    '{client} "GET {path}" {status} refused: {reason}',
                    client=factory.client_address(self._peer_host, request.headers),
                    path=request.path,
                    status=denial.code,
                    reason=denial.reason,
                )
            return failure

        return admitted.addCallbacks(remember, refused)

    def onOpen(self) -> None:
        factory = self.factory
        # Twisted Web's channel was the transport's producer; our frames are now.
        transport = self.transport
        assert IConsumer.providedBy(transport)
        transport.unregisterProducer()
        limit_unsent_bytes(transport, factory.unsent_limit)
        self._start_frames()
        self._commands = TokenBucket(factory.clock, rate=MESSAGE_RATE, burst=MESSAGE_BURST)
        self._opened_at = factory.clock.seconds()
        admission = self.admission
        assert admission is not None
        factory.request_log.info(
            '{client} "GET {path}" 101 user={user}',
            client=self._client(),
            path=self.http_request_path,
            user=admission.user,
        )
        hub = factory.hub
        self.sendMessage(
            encode_hello(
                {
                    "user": admission.user,
                    "is_admin": admission.is_admin,
                    "can_control": admission.may_control,
                    "access": admission.access,
                    "limits": hub.limits.as_json(),
                    "esp32_connected": hub.connected,
                    "control": hub.control_mode,
                    "capabilities": hub.capabilities.as_json(),
                    **factory.camera_fields(),
                }
            ).encode("utf-8"),
            isBinary=False,
        )
        self._attached = True
        factory.viewer_opened(self)

    def _start_frames(self) -> None:
        """Open the frame path and register it as the transport's producer."""
        transport = self.transport
        assert IConsumer.providedBy(transport)
        self.frames = frames = ViewerFrames(self.factory, transport)
        frames.interval = self._frame_interval
        transport.registerProducer(frames, True)
        frames.open = True

    # Autobahn leaves the open state in these three places (and in connectionLost): from
    # then on no frame may follow, as it checked ``state`` before every frame.

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        if self.frames is not None:
            self.frames.open = False
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def dropConnection(self, abort: bool = False) -> None:
        if self.frames is not None:
            self.frames.open = False
        super().dropConnection(abort)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Everything Autobahn writes (the hello, events, pings, the close) passes here: the
        # frame path must look at Twisted's buffer again before it writes to the socket.
        frames = self.frames
        if frames is not None:
            frames.held = True
            if sync or chopsize:
                # Autobahn would queue this and write it over several reactor turns.
                frames.socket_send = None
        super().sendData(data, sync, chopsize)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.frames is not None:
            self.frames.stopProducing()
        if self._attached:
            self._attached = False
            self.factory.viewer_closed(self)
            assert self._opened_at is not None and self.frames is not None
            self.factory.request_log.info(
                '{client} "GET {path}" closed user={user} code={code} after {duration:.1f}s, '
                "{sent} frames sent, {skipped} skipped",
                client=self._client(),
                path=self.http_request_path,
                user=self.admission.user if self.admission is not None else None,
                code=code,
                duration=self.factory.clock.seconds() - self._opened_at,
                sent=self.frames.frames_sent,
                skipped=self.frames.frames_skipped,
            )

    def _client(self) -> str:
        return self.factory.client_address(self._peer_host, self.http_headers)

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
            self._send_error("binary messages are not accepted; send JSON text")
            return
        try:
            command = parse_viewer_message(payload.decode("utf-8"), self.factory.hub.limits)
        except InvalidCommand as refusal:
            self._send_error(str(refusal))
            return
        if isinstance(command, SetFrameRate):
            self._set_frame_rate(command.fps)
            return
        self.factory.hub.execute(command, self)

    def _set_frame_rate(self, fps: float) -> None:
        self._frame_interval = None if fps == 0 else (0.0 if fps >= 60 else 1.0 / fps)
        if self.frames is not None:
            self.frames.interval = self._frame_interval

    def _throttle(self) -> None:
        """Drop a message over the rate limit; say so once a second, count the rest."""
        self.throttled += 1
        self.factory.throttled += 1
        now = self.factory.clock.seconds()
        last = self._throttle_noticed_at
        if last is None or now - last >= THROTTLE_NOTICE_INTERVAL:
            self._throttle_noticed_at = now
            self._send_error(SLOW_DOWN)

    def _send_json(self, fields: dict[str, Any]) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(json.dumps(fields, separators=(",", ":")).encode(), isBinary=False)

    def _send_error(self, message: str) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(encode_error(message).encode("utf-8"), isBinary=False)

    # -- IRequester ------------------------------------------------------------

    @property
    def may_control(self) -> bool:
        return self.admission is not None and self.admission.may_control

    @property
    def user(self) -> str | None:
        return self.admission.user if self.admission is not None else None

    @property
    def is_admin(self) -> bool:
        return self.admission is not None and self.admission.is_admin

    def command_refused(self, refused: Refused) -> None:
        self._send_error(refused.message)

    # -- IViewer ------------------------------------------------------------------

    @property
    def principal(self) -> object:
        return self.admission.principal if self.admission is not None else None

    def send_event(self, event: Event) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(self.factory.encoded_event(event), isBinary=False)

    @property
    def frame_sink(self) -> ViewerFrames:
        """What the hub hands every frame to: :attr:`frames` (set before the hub knows
        this viewer)."""
        assert self.frames is not None
        return self.frames

    def close(self, reason: CloseReason) -> None:
        code, text = CLOSE_CODES[reason]
        self.close_viewer(code, text)

    def readmit(self, principal: object, access: str) -> None:
        admission = self.admission
        if admission is None:
            return
        admission.principal = principal
        if admission.access != access:
            admission.access = access
            # The page shows (or greys out) its controls by this.
            self._send_json({"type": "access", "access": access})

    def close_viewer(self, code: int, reason: str) -> None:
        if self.state not in (self.STATE_OPEN, self.STATE_CONNECTING):
            return
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code, reason)
        else:
            # sendClose refuses the protocol-level codes (1001 going away) that a server
            # legitimately sends; the close frame itself allows them.
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8"), isReply=False)


class ViewerFrames(NewestFrameProducer):
    """One viewer's frames: what the hub calls for every frame, and the transport's producer.

    The hub calls :meth:`send_frame` for every frame and every viewer, hundreds of times
    per frame, while the kernel's ``send()`` of the frames before pushes the viewers'
    objects out of the CPU caches. Everything that call reads is in this one small
    slotted object, not in the Autobahn protocol, whose ~150 attributes sit in a large
    dict (each lookup there is a cache miss or two; see bench/RESULTS.md, issue 13): the
    checks here, then :meth:`offer`'s counts, the frame's bytes (framed once, kept on the
    frame) and the socket's own ``send()``.

    The write follows :mod:`camproxy.viewers.directwrite`: straight to the socket when
    Twisted holds nothing for it, else (and whatever the kernel did not take) through
    Twisted, which buffers, pauses this producer when that is too much, and finds a broken
    connection. ``held`` says that Twisted may hold bytes for the socket: set whenever
    anything goes through Twisted (the protocol's ``sendData`` sets it too), cleared once
    Twisted's buffers are seen empty.
    """

    __slots__ = ("factory", "held", "interval", "last_at", "open", "socket_send", "transport")

    def __init__(self, factory: ViewerFactory, transport: Any) -> None:
        super().__init__(stats=factory.hub.stats)
        #: Whether frames may go out: the protocol's state is open (see ViewerProtocol).
        self.open = False
        #: Seconds between frames (see ``ViewerProtocol._frame_interval``).
        self.interval: float | None = 0.0
        self.last_at = float("-inf")
        self.factory = factory
        self.transport = transport
        #: The socket's ``send`` for a plain TCP transport; None: always through Twisted.
        self.socket_send = socket_send(transport)
        self.held = True

    def send_frame(self, frame: Frame) -> None:
        if not self.open:
            return
        interval = self.interval
        if interval:
            # A tile asking for 2 fps takes a frame once half a second has passed
            # (a little early rather than a whole camera frame late).
            if frame.received_at - self.last_at < interval * 0.9:
                return
            self.last_at = frame.received_at
        elif interval is None:
            return
        self.offer(frame)

    def deliver(self, frame: Frame) -> None:
        self._write(self.factory.frame_bytes(frame))

    def _write(self, payload: bytes) -> None:
        send = self.socket_send
        if send is not None and (not self.held or self._drained()):
            try:
                sent = send(payload)
            except OSError:
                # EAGAIN: all of it waits in Twisted's buffer; a broken connection:
                # Twisted's own write attempt finds it and closes.
                sent = 0
            if sent == len(payload):
                return
            payload = payload[sent:]
        self.held = True
        self.transport.write(payload)

    def _drained(self) -> bool:
        """Whether Twisted holds nothing for the socket now (and it is not closing)."""
        if idle(self.transport):
            self.held = False
            return True
        return False

    def stopProducing(self) -> None:
        self.open = False
        super().stopProducing()


class ViewerFactory(WebSocketServerFactory):
    """Builds viewer protocols for one camera hub and remembers the open ones.

    :param camera_fields: what ``hello`` says of the camera (name, title, kind).
    :param is_secure: tells whether a connection is TLS as the browser sees it (its own,
        or a trusted proxy's), from the transport, the peer's address and the headers.
    :param client_address: the client's address for the request log (behind a
        trusted proxy, the one it forwarded).
    :param unsent_limit: bytes the kernel may hold unsent for one viewer (about two
        frames): beyond that the viewer counts as busy and gets the newest frame only.
    """

    protocol = ViewerProtocol  # type: ignore[assignment]
    request_log = Logger(namespace="camproxy.viewers.requests")

    def __init__(
        self,
        hub: CameraHub,
        gate: IHandshakeGate,
        clock: IReactorTime,
        *,
        camera_fields: Callable[[], dict[str, Any]] = dict,
        is_secure: Callable[[Any, str, dict[str, str]], bool] = lambda *_: False,
        client_address: Callable[[str, dict[str, str]], str] = lambda peer, _: peer,
        unsent_limit: int = 64 * 1024,
        **kw: Any,
    ):
        super().__init__(**kw)
        self.hub = hub
        self.gate = gate
        self.clock = clock
        self.camera_fields = camera_fields
        self.is_secure = is_secure
        self.client_address = client_address
        self.unsent_limit = unsent_limit
        self.viewers: set[ViewerProtocol] = set()
        self.throttled = 0
        self._last_event: Event | None = None
        self._last_encoded = b""
        self.setProtocolOptions(
            webStatus=False,
            failByDrop=False,
            autoPingInterval=20.0,
            autoPingTimeout=10.0,
            openHandshakeTimeout=10.0,
            closeHandshakeTimeout=3.0,
            # Autobahn would answer an Origin of "null" (sandboxed frames, file:// pages)
            # with 400; the gate refuses it with 403 like any other origin not allowed.
            allowNullOrigin=True,
        )

    @property
    def protocol_options(self) -> dict[str, Any]:
        """The options every protocol copies, read once per connection."""
        return {name: getattr(self, name) for name in _SERVER_OPTIONS}

    def frame_message(self, data: bytes) -> bytes:
        """A JPEG as one binary WebSocket message (compression is never negotiated)."""
        prepared: PreparedMessage = self.prepareMessage(data, isBinary=True, doNotCompress=True)
        return prepared.payloadHybi

    def frame_bytes(self, frame: Frame) -> bytes:
        """The frame as one binary WebSocket message, framed once however many viewers
        get it."""
        return frame.encoded("websocket", self.frame_message)

    def encoded_event(self, event: Event) -> bytes:
        """The event as UTF-8 JSON, encoded once however many viewers get it."""
        if event is not self._last_event:
            self._last_event = event
            self._last_encoded = encode_event(event).encode("utf-8")
        return self._last_encoded

    def viewer_opened(self, viewer: ViewerProtocol) -> None:
        self.viewers.add(viewer)
        self.hub.attach(viewer)

    def viewer_closed(self, viewer: ViewerProtocol) -> None:
        self.viewers.discard(viewer)
        self.hub.detach(viewer)

    def close_all(self, reason: CloseReason, timeout: float = 3.0) -> Deferred[Any]:
        """Close every viewer; fires once all are gone (or after ``timeout``)."""
        gone = [viewer.gone for viewer in self.viewers]
        for viewer in list(self.viewers):
            viewer.close(reason)
        waiting = DeferredList(gone, consumeErrors=True)
        waiting.addTimeout(timeout, self.clock)
        return waiting.addErrback(lambda _: None)
