"""An in-process emulator of the RoboCam ESP32-CAM firmware (CONTRACT §1), as a WebSocket server.

:class:`DemoCamera` is the socket-free model of ``ESP32Cam/src/main.cpp``: one text message in,
a list of :class:`Reply` out, each addressed to the sender or to all clients.
:class:`DemoCameraFactory` serves it with Autobahn: it pushes a JPEG to every client each
``frame_interval`` while anyone is connected, broadcasts ``{"client_count":N}`` on every connect
and disconnect, and closes clients over ``client_limit`` right after accepting them, as the
firmware does. Its attributes are knobs for tests and fault injection: a camera that is slow,
silent, flapping, half-open, over its client limit, or that sends broken frames and garbage
text (see :data:`FAULTS`). :func:`listen_black_hole` is a camera that accepts TCP connections
and never answers the WebSocket handshake.

Run it standalone with ``python -m camproxy.democam --listen tcp:8081:interface=127.0.0.1``;
the camera is then ``ws://127.0.0.1:8081/ws``. ``--fault NAME`` (and ``--getframe-delay``,
``--flap-interval``) make it misbehave, to test a client against a flaky camera.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn, Protocol, TypeGuard

import attrs
import txaio
from autobahn.exception import Disconnected
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TCPProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from camproxy.democam.testpattern import PatternRenderer

OUT_OF_BOUNDS = "Position out of bounds"
STEP = 10
"""Degrees one ``up``/``down``/``left``/``right`` moves, as in the firmware."""

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

Recipient = Literal["sender", "all"]

FRAME_FAULTS = ("truncated", "not-jpeg", "huge")
"""Faults that replace frames (pushed or answering ``getframe``) with a bad binary message."""
TEXT_FAULTS = ("bad-utf8", "junk-json")
"""Faults that send a garbage text message before every frame (the frame still follows)."""
FAULTS = FRAME_FAULTS + TEXT_FAULTS
"""Names the ``fault`` knob accepts (``None`` is a well-behaved camera)."""

HUGE_FRAME_BYTES = 10 * 1024 * 1024
NOT_JPEG = (
    b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    b"GIF89a" + b"\x00" * 1000,
    b"\x00" * 4096,
    b"\xff\xd9 ends like a JPEG but does not start like one \xff\xd9",
)
"""Binary messages that are not JPEGs, sent in turn by the ``not-jpeg`` fault."""
BAD_UTF8 = b"\xff\xfe not UTF-8: \xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80"
"""A text message that is not valid UTF-8, as a buggy firmware might send."""
JUNK_JSON = (
    '{"x":',
    '{"x":"90","y":true}',
    "[90,45]",
    "null",
    '{"x":1.5,"y":2}',
    '{"x":1e999,"y":NaN}',
    '{"x":' + "9" * 5000 + ',"y":1}',
    '{"min_x":0,"max_x":"wide","min_y":0,"max_y":90}',
    '{"min_x":180,"max_x":0,"min_y":0,"max_y":90}',
    '{"client_count":-1.5}',
    "[" * 100_000,
    '{"a":' * 50_000,
)
"""Text a broken camera might send: cut off, mistyped, absurd, or nested past any parser."""


@attrs.frozen
class Reply:
    """One message the camera sends in answer: text (``str``) or a binary JPEG (``bytes``)."""

    to: Recipient
    payload: str | bytes


def _is_arduino_int(value: object) -> TypeGuard[int]:
    """ArduinoJson's ``is<int>()`` on a 32-bit ESP32: a JSON integer that fits an ``int``."""
    return isinstance(value, int) and not isinstance(value, bool) and _INT_MIN <= value <= _INT_MAX


def _position_json(x: int, y: int) -> str:
    return f'{{"x":{x},"y":{y}}}'


def client_count_json(count: int) -> str:
    """The firmware's ``{"client_count":N}``, byte for byte."""
    return f'{{"client_count":{count}}}'


@attrs.define
class DemoCamera:
    """The RoboCam firmware's command handling, without sockets.

    Limits and start position default to ``config.h-template``. The servos move instantly
    (the firmware eases them), so ``get_pos`` right after a move reports the target.

    ``frame_source``, when set, replaces the test pattern: it returns the bytes sent as a
    frame (anything, for fault injection), or ``None`` for a failed capture (nothing is sent).
    ``now`` is the clock drawn on the frames (the factory passes ``reactor.seconds``).
    """

    min_x: int = 0
    max_x: int = 180
    min_y: int = 0
    max_y: int = 90
    start_x: int = 90
    start_y: int = 45
    x: int = attrs.field(default=attrs.Factory(lambda self: self.start_x, takes_self=True))
    y: int = attrs.field(default=attrs.Factory(lambda self: self.start_y, takes_self=True))
    light: bool = False
    client_count: int = 0
    width: int = 640
    height: int = 480
    quality: int = 70
    frame_source: Callable[[], bytes | None] | None = None
    now: Callable[[], float] | None = None
    _renderer: PatternRenderer | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.min_x > self.max_x or self.min_y > self.max_y:
            raise ValueError("camera limits are empty")
        if not self.in_limits(self.start_x, self.start_y):
            raise ValueError("start position is outside the limits")

    def in_limits(self, x: int, y: int) -> bool:
        """Whether the firmware accepts ``{"x":x,"y":y}``."""
        return self.min_x <= x <= self.max_x and self.min_y <= y <= self.max_y

    def capture(self) -> bytes | None:
        """One frame as the camera would capture it now; ``None`` if the capture failed."""
        if self.frame_source is not None:
            return self.frame_source()
        if self._renderer is None:
            self._renderer = PatternRenderer(
                width=self.width,
                height=self.height,
                quality=self.quality,
                limits=(self.min_x, self.max_x, self.min_y, self.max_y),
            )
        now = self.now() if self.now is not None else 0.0
        return self._renderer.render(self.x, self.y, self.light, now)

    def handle(self, message: str) -> list[Reply]:
        """Apply one message from a client and return what the firmware sends in answer."""
        if message == "getframe":
            frame = self.capture()
            return [] if frame is None else [Reply("sender", frame)]

        current_x, current_y = self.x, self.y
        new_x, new_y = current_x, current_y
        if message.startswith("{"):
            target = self._parse_position(message)
            if target is None:
                return []
            if not self.in_limits(*target):
                return [Reply("sender", OUT_OF_BOUNDS)]
            # The firmware moves, then broadcasts new_x/new_y, which still hold the old position.
            self.x, self.y = target
        elif message == "center":
            new_x, new_y = self.start_x, self.start_y
        elif message == "up":
            new_y = max(current_y - STEP, self.min_y)
        elif message == "down":
            new_y = min(current_y + STEP, self.max_y)
        elif message == "left":
            new_x = min(current_x + STEP, self.max_x)
        elif message == "right":
            new_x = max(current_x - STEP, self.min_x)
        elif message == "get_pos":
            return [Reply("sender", _position_json(current_x, current_y))]
        elif message == "client_count":
            return [Reply("sender", client_count_json(self.client_count))]
        elif message == "get_limits":
            return [
                Reply(
                    "sender",
                    f'{{"min_x":{self.min_x},"max_x":{self.max_x},'
                    f'"min_y":{self.min_y},"max_y":{self.max_y}}}',
                )
            ]
        elif message in ("light_on", "light_off"):
            self.light = message == "light_on"
            return []
        else:
            return []

        if (new_x, new_y) != (current_x, current_y):
            self.x, self.y = new_x, new_y
        return [Reply("all", _position_json(new_x, new_y))]

    @staticmethod
    def _parse_position(message: str) -> tuple[int, int] | None:
        # ArduinoJson stops after the first JSON value, so trailing text is ignored.
        try:
            document, _end = json.JSONDecoder().raw_decode(message)
        except ValueError:
            return None
        if not isinstance(document, dict):
            return None
        x, y = document.get("x"), document.get("y")
        if _is_arduino_int(x) and _is_arduino_int(y):
            return x, y
        return None


class DemoClient(Protocol):
    """What :class:`DemoCameraFactory` needs of a connected client (an Autobahn protocol)."""

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        """Send one WebSocket message."""

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake."""

    def dropConnection(self, abort: bool = False) -> None:
        """Close the TCP connection without a closing handshake."""


class DemoCameraProtocol(WebSocketServerProtocol):
    """One client of the demo camera; forwards everything to its factory."""

    #: Autobahn's own messages about the camera's clients, under the camera's namespace.
    log = txaio.make_logger()  # type: ignore[attr-defined]

    def onPing(self, payload: bytes) -> None:
        # Autobahn answers pings itself; a half-open link is one that never does.
        if not self.factory.half_open:
            super().onPing(payload)

    def onOpen(self) -> None:
        self.factory.client_opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.message_received(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.client_closed(self)


class DemoCameraFactory(WebSocketServerFactory):
    """Serves a :class:`DemoCamera` to WebSocket clients the way the firmware does.

    Knobs (constructor keywords and attributes of the same name, changeable at any time):

    - ``frame_interval``: seconds between pushed frames (firmware ``FRAME_INTERVAL``, 0.150).
    - ``push_frames``: push frames to all clients while any is connected (default True).
    - ``client_limit``: clients accepted at once (``MAX_CLIENTS``, 5); one more is accepted
      and then closed at once, without a close code, like the firmware.
    - ``answer_getframe``: False makes ``getframe`` go unanswered.
    - ``getframe_delay``: seconds, on the reactor's clock, before ``getframe`` is answered.
    - ``camera.frame_source``: replaces the test pattern (also the ``frame_source`` keyword).

    Fault injection (all off by default):

    - ``fault``: one of :data:`FAULTS`, or None. ``truncated`` cuts every frame in half (it
      starts ``FF D8`` but never ends ``FF D9``); ``not-jpeg`` sends other binaries instead
      (:data:`NOT_JPEG`); ``huge`` sends each client one 10 MiB binary shaped like a JPEG as
      its next frame, then normal frames (so the camera never buffers more than one for a
      client that stopped reading); ``bad-utf8`` sends a text message that is not UTF-8 and
      ``junk-json`` one of :data:`JUNK_JSON` before every frame.
    - ``flap_interval``: seconds; while any client is connected, abort every connection
      this often (a camera whose WiFi keeps dropping). None: never.
    - ``half_open``: keep every TCP connection but send nothing at all, frames, answers and
      pongs included, as when the camera vanished without a FIN. Messages are still recorded.
    - For a camera that refuses connections, set ``client_limit=0``; for one that never
      answers ``getframe``, ``answer_getframe=False`` and ``push_frames=False``; for one
      that accepts TCP but never completes the handshake, see :func:`listen_black_hole`.

    Records: ``received`` holds every text message received, in order, and
    ``received_binary`` every binary one (the firmware treats those as text too);
    ``faults_sent`` counts the bad messages sent because of ``fault``, ``connects`` the
    clients ever accepted and ``refusals`` those closed over ``client_limit``.
    """

    protocol = DemoCameraProtocol
    _log = Logger(namespace="camproxy.democam")

    def __init__(
        self,
        reactor: Any,
        *,
        camera: DemoCamera | None = None,
        frame_interval: float = 0.150,
        push_frames: bool = True,
        client_limit: int = 5,
        answer_getframe: bool = True,
        getframe_delay: float = 0.0,
        frame_source: Callable[[], bytes | None] | None = None,
        fault: str | None = None,
        flap_interval: float | None = None,
        half_open: bool = False,
    ) -> None:
        super().__init__(reactor=reactor)
        self.setProtocolOptions(failByDrop=False, webStatus=False)
        # Any, not IReactorTime: without the mypy-zope plugin mypy cannot call interface methods.
        self.clock: Any = reactor
        self.camera = camera if camera is not None else DemoCamera()
        if self.camera.now is None:
            self.camera.now = self.clock.seconds
        if frame_source is not None:
            self.camera.frame_source = frame_source
        self.client_limit = client_limit
        self.answer_getframe = answer_getframe
        self.getframe_delay = getframe_delay
        self.received: list[str] = []
        self.received_binary: list[bytes] = []
        self._frame_interval = _positive(frame_interval)
        self._push_frames = push_frames
        self._clients: list[DemoClient] = []
        self._refused: list[DemoClient] = []
        self._pending: dict[DemoClient, set[Any]] = {}
        self._loop: LoopingCall | None = None
        self._count_waiters: list[tuple[int, Deferred[None]]] = []
        self.half_open = half_open
        self.faults_sent = 0
        self.connects = 0
        self.refusals = 0
        self._fault: str | None = None
        self._huge_sent: set[DemoClient] = set()
        self.fault = fault
        self._flap_interval: float | None = None
        self._flap_loop: LoopingCall | None = None
        self.flap_interval = flap_interval

    @property
    def clients(self) -> Sequence[DemoClient]:
        """The accepted clients, oldest first."""
        return tuple(self._clients)

    @property
    def frame_interval(self) -> float:
        """Seconds between pushed frames."""
        return self._frame_interval

    @frame_interval.setter
    def frame_interval(self, seconds: float) -> None:
        self._frame_interval = _positive(seconds)
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
            self._update_pushing(now=False)

    @property
    def push_frames(self) -> bool:
        """Whether frames are pushed without ``getframe``."""
        return self._push_frames

    @push_frames.setter
    def push_frames(self, enabled: bool) -> None:
        self._push_frames = enabled
        self._update_pushing(now=True)

    @property
    def fault(self) -> str | None:
        """The bad messages sent with or instead of frames: a name from :data:`FAULTS`."""
        return self._fault

    @fault.setter
    def fault(self, name: str | None) -> None:
        if name is not None and name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        self._fault = name
        self._huge_sent.clear()

    @property
    def flap_interval(self) -> float | None:
        """Seconds between dropping every connection, or None for a steady link."""
        return self._flap_interval

    @flap_interval.setter
    def flap_interval(self, seconds: float | None) -> None:
        self._flap_interval = None if seconds is None else _positive(seconds)
        if self._flap_loop is not None:
            self._flap_loop.stop()
            self._flap_loop = None
        self._update_flapping()

    def when_clients(self, count: int) -> Deferred[None]:
        """A Deferred that fires once exactly ``count`` clients are connected (now or later).

        It waits until no client refused over the limit is still being closed, so
        ``when_clients(0)`` means every connection is gone.
        """
        waiter: Deferred[None] = Deferred()
        self._count_waiters.append((count, waiter))
        self._notify_count()
        return waiter

    def drop_all(self, clean: bool = False) -> None:
        """Disconnect every client: abort the TCP connections, or send a close if ``clean``."""
        for client in [*self._clients, *self._refused]:
            if clean:
                client.sendClose()
            else:
                client.dropConnection(abort=True)

    def client_opened(self, client: DemoClient) -> None:
        """A WebSocket handshake completed (the firmware's ``WS_EVT_CONNECT``)."""
        if len(self._clients) >= self.client_limit:
            self._log.info("Client limit reached, closing connection.")
            self._refused.append(client)
            self.refusals += 1
            client.sendClose()
            return
        self._clients.append(client)
        self.connects += 1
        self._pending[client] = set()
        self._log.info("Client connected ({count} now)", count=len(self._clients))
        self._broadcast_client_count()
        self._update_pushing(now=True)
        self._update_flapping()
        self._notify_count()

    def client_closed(self, client: DemoClient) -> None:
        """A client went away (the firmware's ``WS_EVT_DISCONNECT``)."""
        if client in self._refused:
            self._refused.remove(client)
        elif client in self._clients:
            self._clients.remove(client)
            self._huge_sent.discard(client)
            for call in self._pending.pop(client, set()):
                if call.active():
                    call.cancel()
            self._log.info("Client disconnected ({count} left)", count=len(self._clients))
        else:
            return  # never completed the handshake: the firmware never saw it
        # The firmware announces every disconnect, a refused client's included.
        self._broadcast_client_count()
        self._update_pushing(now=False)
        self._update_flapping()
        self._notify_count()

    def message_received(self, client: DemoClient, payload: bytes, isBinary: bool) -> None:
        """One message from a client (the firmware's ``WS_EVT_DATA``)."""
        if client not in self._clients:
            return
        if isBinary:
            self.received_binary.append(payload)
        message = payload.decode("utf-8", errors="replace")
        if not isBinary:
            self.received.append(message)
        if message == "getframe":
            if not self.answer_getframe:
                return
            if self.getframe_delay > 0:
                pending = self._pending[client]
                call = self.clock.callLater(
                    self.getframe_delay, self._answer_later, client, message
                )
                pending.add(call)
                return
        self._deliver(client, self.camera.handle(message))

    def _answer_later(self, client: DemoClient, message: str) -> None:
        pending = self._pending.get(client)
        if pending is None:
            return
        pending.difference_update([c for c in pending if not c.active()])
        self._deliver(client, self.camera.handle(message))

    def _deliver(self, sender: DemoClient, replies: list[Reply]) -> None:
        for reply in replies:
            targets = self._clients if reply.to == "all" else [sender]
            for target in list(targets):
                if isinstance(reply.payload, bytes):
                    self._send_frame(target, reply.payload)
                else:
                    self._send(target, reply.payload.encode("utf-8"), binary=False)

    def _broadcast_client_count(self) -> None:
        self.camera.client_count = len(self._clients)
        message = client_count_json(self.camera.client_count).encode("utf-8")
        for client in list(self._clients):
            self._send(client, message, binary=False)

    def _send_frame(self, client: DemoClient, frame: bytes) -> None:
        """Send one frame to ``client``, or what the ``fault`` knob sends with or instead of it."""
        fault = self._fault
        if fault == "truncated":
            cut = frame[: max(2, len(frame) // 2)]
            self._send_fault(client, cut[:-1] if cut.endswith(b"\xff\xd9") else cut, True)
        elif fault == "not-jpeg":
            self._send_fault(client, NOT_JPEG[self.faults_sent % len(NOT_JPEG)], True)
        elif fault == "huge" and client not in self._huge_sent:
            self._huge_sent.add(client)
            padding = b"\x00" * (HUGE_FRAME_BYTES - 4)
            self._send_fault(client, b"\xff\xd8" + padding + b"\xff\xd9", True)
        else:
            if fault == "bad-utf8":
                self._send_fault(client, BAD_UTF8, False)
            elif fault == "junk-json":
                junk = JUNK_JSON[self.faults_sent % len(JUNK_JSON)]
                self._send_fault(client, junk.encode("utf-8"), False)
            self._send(client, frame, binary=True)

    def _send_fault(self, client: DemoClient, payload: bytes, binary: bool) -> None:
        if self._send(client, payload, binary=binary):
            self.faults_sent += 1

    def _send(self, client: DemoClient, payload: bytes, *, binary: bool) -> bool:
        """Send one message unless the link is half-open; False if nothing was sent."""
        if self.half_open:
            return False
        try:
            client.sendMessage(payload, isBinary=binary)
        except Disconnected:
            # Closing already (e.g. the client failed the connection); the firmware's
            # send would fail just the same, and the push loop must go on for the rest.
            return False
        return True

    def _update_flapping(self) -> None:
        wanted = self._flap_interval is not None and bool(self._clients)
        if wanted and self._flap_loop is None:
            assert self._flap_interval is not None
            self._flap_loop = LoopingCall(self._flap)
            self._flap_loop.clock = self.clock
            self._flap_loop.start(self._flap_interval, now=False)
        elif not wanted and self._flap_loop is not None:
            self._flap_loop.stop()
            self._flap_loop = None

    def _flap(self) -> None:
        self._log.info("Flapping: dropping {count} clients", count=len(self._clients))
        self.drop_all()

    def _update_pushing(self, now: bool) -> None:
        wanted = self._push_frames and bool(self._clients)
        if wanted and self._loop is None:
            self._loop = LoopingCall(self._push_frame)
            self._loop.clock = self.clock
            self._loop.start(self._frame_interval, now=now).addErrback(
                lambda failure: self._log.failure("frame push failed", failure)
            )
        elif not wanted and self._loop is not None:
            self._loop.stop()
            self._loop = None

    def _push_frame(self) -> None:
        try:
            frame = self.camera.capture()
        except Exception:
            # A broken injected frame source must not stop the push loop for good.
            self._log.failure("Frame capture failed")
            return
        if frame is None:
            return
        for client in list(self._clients):
            self._send_frame(client, frame)

    def _notify_count(self) -> None:
        if self._refused:
            return
        count = len(self._clients)
        ready = [w for w in self._count_waiters if w[0] == count]
        self._count_waiters = [w for w in self._count_waiters if w[0] != count]
        for _count, waiter in ready:
            waiter.callback(None)


def _positive(seconds: float) -> float:
    if not seconds > 0:
        raise ValueError(f"an interval must be positive, not {seconds!r}")
    return seconds


_INDEX_HTML = b"""<!DOCTYPE html><html><head><meta charset='UTF-8'><title>Demo camera</title></head>
<body style='background:#121212;color:#f0f0f0;font-family:sans-serif;text-align:center'>
<h1>CamProxy demo camera</h1><img id='cam' width='640' height='480'>
<p>Emulated RoboCam firmware; WebSocket at <code>/ws</code>.</p>
<script>
let scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
let ws = new WebSocket(scheme + location.host + '/ws');
ws.binaryType = 'blob';
ws.onmessage = function(e) {
  if (typeof e.data === 'string') return;
  let url = URL.createObjectURL(e.data);
  document.getElementById('cam').src = url;
  setTimeout(function() { URL.revokeObjectURL(url); }, 100);
};
</script></body></html>
"""


class _IndexPage(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return _INDEX_HTML


def demo_site(factory: DemoCameraFactory) -> Site:
    """A web site serving ``factory`` at ``/ws`` and a small viewer page at ``/``."""
    root = Resource()
    children: dict[bytes, Any] = {b"": _IndexPage(), b"ws": WebSocketResource(factory)}
    for path, child in children.items():
        root.putChild(path, child)
    return Site(root)


def listen_demo_camera(
    reactor: Any,
    endpoint_description: str,
    **knobs: Any,
) -> Deferred[tuple[IListeningPort, DemoCameraFactory]]:
    """Listen on a server endpoint string; the camera is then ``ws://HOST:PORT/ws``.

    ``knobs`` are :class:`DemoCameraFactory`'s keyword arguments. Stop it with
    ``factory.drop_all()`` and ``port.stopListening()``.
    """
    factory = DemoCameraFactory(reactor, **knobs)
    listening = serverFromString(reactor, endpoint_description).listen(demo_site(factory))
    return listening.addCallback(lambda port: (port, factory))


class _BlackHoleConnection(TCPProtocol):
    factory: BlackHoleFactory

    def connectionMade(self) -> None:
        self.factory.connections.add(self)

    def dataReceived(self, data: bytes) -> None:
        self.factory.bytes_received += len(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connections.discard(self)


class BlackHoleFactory(Factory[_BlackHoleConnection]):
    """Accepts TCP connections, reads everything and never answers: a hung camera.

    From the outside it looks like a camera whose network stack is alive but whose web
    server is stuck, so a WebSocket client's opening handshake never completes.
    """

    protocol = _BlackHoleConnection

    def __init__(self) -> None:
        self.connections: set[_BlackHoleConnection] = set()
        self.bytes_received = 0
        self.accepted = 0

    def buildProtocol(self, addr: Any) -> _BlackHoleConnection | None:
        self.accepted += 1
        built = super().buildProtocol(addr)
        assert built is None or isinstance(built, _BlackHoleConnection)
        return built

    def drop_all(self) -> None:
        """Abort every open connection."""
        for connection in list(self.connections):
            assert connection.transport is not None
            connection.transport.abortConnection()  # type: ignore[attr-defined]


def listen_black_hole(
    reactor: Any, endpoint_description: str
) -> Deferred[tuple[IListeningPort, BlackHoleFactory]]:
    """Listen with a :class:`BlackHoleFactory`; stop it with ``drop_all`` and ``stopListening``."""
    factory = BlackHoleFactory()
    listening = serverFromString(reactor, endpoint_description).listen(factory)
    return listening.addCallback(lambda port: (port, factory))


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind: type[int] | type[float], text: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive_float(text: str) -> float:
    value = _number(float, text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(_number(int, text))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"not WIDTHxHEIGHT: {text}")
    if int(width) < 16 or int(height) < 16:
        raise argparse.ArgumentTypeError(f"too small: {text}")
    return int(width), int(height)


def _quality(text: str) -> int:
    value = int(_number(int, text))
    if not 1 <= value <= 95:
        raise argparse.ArgumentTypeError(f"not within 1..95: {text}")
    return value


KINDS = ("robocam", "esp32", "esp32-cam-webserver", "mjpeg", "jpeg")
"""Cameras ``--kind`` emulates; each kind but ``robocam`` has its options in ``httpcli``."""


def _requested_kind(argv: list[str]) -> str:
    """The ``--kind`` asked for (``robocam`` without one); a bad one exits with status 2."""
    parser = _ArgumentParser(prog="python -m camproxy.democam", add_help=False)
    parser.add_argument("--kind", choices=KINDS, default="robocam")
    known, _rest = parser.parse_known_args(argv)
    return str(known.kind)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _ArgumentParser(
        prog="python -m camproxy.democam",
        description="Run an emulated RoboCam ESP32-CAM (WebSocket at /ws). Other cameras: "
        "--kind esp32|esp32-cam-webserver|mjpeg|jpeg (see --kind KIND --help).",
    )
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="robocam",
        help="the camera emulated (default: %(default)s)",
    )
    parser.add_argument(
        "--listen",
        default="tcp:8081:interface=127.0.0.1",
        metavar="ENDPOINT",
        help="Twisted server endpoint (default: %(default)s)",
    )
    parser.add_argument(
        "--frame-interval",
        type=_positive_float,
        default=0.150,
        metavar="SECONDS",
        help="seconds between pushed frames (default: %(default)s)",
    )
    parser.add_argument(
        "--client-limit",
        type=_non_negative_int,
        default=5,
        metavar="N",
        help="clients accepted at once (default: %(default)s)",
    )
    parser.add_argument(
        "--size", type=_size, default=(640, 480), metavar="WxH", help="frame size (640x480)"
    )
    parser.add_argument(
        "--quality", type=_quality, default=70, metavar="Q", help="JPEG quality (default: 70)"
    )
    parser.add_argument(
        "--fault",
        choices=CLI_FAULTS,
        metavar="NAME",
        help="misbehave: " + "; ".join(f"{name}: {what}" for name, what in CLI_FAULTS.items()),
    )
    parser.add_argument(
        "--getframe-delay",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="answer getframe this late (default: at once)",
    )
    parser.add_argument(
        "--flap-interval",
        type=_positive_float,
        metavar="SECONDS",
        help="drop every connection this often (default: never)",
    )
    return parser.parse_args(argv)


CLI_FAULTS = {
    "truncated": "frames cut in half",
    "not-jpeg": "binary messages that are not JPEGs instead of frames",
    "huge": "a 10 MiB binary as each client's next frame",
    "bad-utf8": "a text message that is not UTF-8 before every frame",
    "junk-json": "garbage JSON text before every frame",
    "silent": "never answer getframe nor push frames",
    "half-open": "keep connections but send nothing, not even pongs",
    "refuse": "close every client at once (client limit reached)",
    "black-hole": "accept TCP connections, never answer the WebSocket handshake",
}
"""``--fault`` names: :data:`FAULTS` and the other knobs, by what they look like from outside."""


def _non_negative_float(text: str) -> float:
    value = _number(float, text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _factory_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`DemoCameraFactory` keywords for the command line's options."""
    knobs: dict[str, Any] = {
        "frame_interval": args.frame_interval,
        "client_limit": args.client_limit,
        "getframe_delay": args.getframe_delay,
        "flap_interval": args.flap_interval,
    }
    if args.fault in FAULTS:
        knobs["fault"] = args.fault
    elif args.fault == "silent":
        knobs.update(answer_getframe=False, push_frames=False)
    elif args.fault == "half-open":
        knobs["half_open"] = True
    elif args.fault == "refuse":
        knobs["client_limit"] = 0
    return knobs


async def _serve(reactor: Any, endpoint: Any, args: argparse.Namespace) -> None:
    log = Logger(namespace="camproxy.democam")
    camera = DemoCamera(width=args.size[0], height=args.size[1], quality=args.quality)
    factory = DemoCameraFactory(reactor, camera=camera, **_factory_knobs(args))
    site: Any = BlackHoleFactory() if args.fault == "black-hole" else demo_site(factory)
    try:
        port: Any = await endpoint.listen(site)
    except Exception as error:
        log.error("Cannot listen on {listen}: {error}", listen=args.listen, error=error)
        raise SystemExit(1) from None
    address: Any = port.getHost()
    log.info("Demo camera at ws://{host}:{port}/ws", host=address.host, port=address.port)
    if args.fault is not None:
        log.info("Fault: {fault} ({what})", fault=args.fault, what=CLI_FAULTS[args.fault])
    await Deferred()


def main(argv: list[str] | None = None) -> None:
    """Run the demo camera until interrupted, logging to standard output.

    Usage errors, a bad endpoint string included, print one line and exit with status 2.
    ``--kind`` other than ``robocam`` runs an HTTP camera instead (``camproxy.democam.httpcli``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    kind = _requested_kind(argv)
    if kind != "robocam":
        from camproxy.democam.httpcli import main as http_main

        http_main(kind, argv)
        return
    from twisted.internet import reactor
    from twisted.internet.task import react
    from twisted.logger import globalLogBeginner, textFileLogObserver

    args = _parse_args(argv)
    try:
        endpoint = serverFromString(reactor, args.listen)
    except (ValueError, KeyError, TypeError) as error:
        print(f"democam: error: bad --listen endpoint {args.listen!r}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    observers: list[Any] = [textFileLogObserver(sys.stdout)]
    globalLogBeginner.beginLoggingTo(observers)
    react(lambda reactor: Deferred.fromCoroutine(_serve(reactor, endpoint, args)))


if __name__ == "__main__":
    main()
