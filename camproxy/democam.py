"""An in-process emulator of the RoboCam ESP32-CAM firmware (CONTRACT §1), as a WebSocket server.

:class:`DemoCamera` is the socket-free model of ``ESP32Cam/src/main.cpp``: one text message in,
a list of :class:`Reply` out, each addressed to the sender or to all clients.
:class:`DemoCameraFactory` serves it with Autobahn: it pushes a JPEG to every client each
``frame_interval`` while anyone is connected, broadcasts ``{"client_count":N}`` on every connect
and disconnect, and closes clients over ``client_limit`` right after accepting them, as the
firmware does. Its attributes are knobs for tests and fault injection.

Run it standalone with ``python -m camproxy.democam --listen tcp:8081:interface=127.0.0.1``;
the camera is then ``ws://127.0.0.1:8081/ws``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn, Protocol, TypeGuard

import attrs
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from camproxy.testpattern import PatternRenderer

OUT_OF_BOUNDS = "Position out of bounds"
STEP = 10
"""Degrees one ``up``/``down``/``left``/``right`` moves, as in the firmware."""

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

Recipient = Literal["sender", "all"]


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

    Records: ``received`` holds every text message received, in order, and
    ``received_binary`` every binary one (the firmware treats those as text too).
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
            client.sendClose()
            return
        self._clients.append(client)
        self._pending[client] = set()
        self._log.info("Client connected ({count} now)", count=len(self._clients))
        self._broadcast_client_count()
        self._update_pushing(now=True)
        self._notify_count()

    def client_closed(self, client: DemoClient) -> None:
        """A client went away (the firmware's ``WS_EVT_DISCONNECT``)."""
        if client in self._refused:
            self._refused.remove(client)
        elif client in self._clients:
            self._clients.remove(client)
            for call in self._pending.pop(client, set()):
                if call.active():
                    call.cancel()
            self._log.info("Client disconnected ({count} left)", count=len(self._clients))
        else:
            return  # never completed the handshake: the firmware never saw it
        # The firmware announces every disconnect, a refused client's included.
        self._broadcast_client_count()
        self._update_pushing(now=False)
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
                _send(target, reply.payload)

    def _broadcast_client_count(self) -> None:
        self.camera.client_count = len(self._clients)
        for client in list(self._clients):
            _send(client, client_count_json(self.camera.client_count))

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
            client.sendMessage(frame, isBinary=True)

    def _notify_count(self) -> None:
        if self._refused:
            return
        count = len(self._clients)
        ready = [w for w in self._count_waiters if w[0] == count]
        self._count_waiters = [w for w in self._count_waiters if w[0] != count]
        for _count, waiter in ready:
            waiter.callback(None)


def _send(client: DemoClient, payload: str | bytes) -> None:
    if isinstance(payload, bytes):
        client.sendMessage(payload, isBinary=True)
    else:
        client.sendMessage(payload.encode("utf-8"), isBinary=False)


def _positive(seconds: float) -> float:
    if not seconds > 0:
        raise ValueError(f"frame_interval must be positive, not {seconds!r}")
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


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _ArgumentParser(
        prog="python -m camproxy.democam",
        description="Run an emulated RoboCam ESP32-CAM (WebSocket at /ws).",
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
    return parser.parse_args(argv)


async def _serve(reactor: Any, endpoint: Any, args: argparse.Namespace) -> None:
    log = Logger(namespace="camproxy.democam")
    camera = DemoCamera(width=args.size[0], height=args.size[1], quality=args.quality)
    factory = DemoCameraFactory(
        reactor, camera=camera, frame_interval=args.frame_interval, client_limit=args.client_limit
    )
    try:
        port: Any = await endpoint.listen(demo_site(factory))
    except Exception as error:
        log.error("Cannot listen on {listen}: {error}", listen=args.listen, error=error)
        raise SystemExit(1) from None
    address: Any = port.getHost()
    log.info("Demo camera at ws://{host}:{port}/ws", host=address.host, port=address.port)
    await Deferred()


def main(argv: list[str] | None = None) -> None:
    """Run the demo camera until interrupted, logging to standard output.

    Usage errors, a bad endpoint string included, print one line and exit with status 2.
    """
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
