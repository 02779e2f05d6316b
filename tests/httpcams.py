"""Minimal HTTP cameras for the source tests: an in-memory network and loopback servers.

``FakeNetwork`` is an ``IAgentEndpointFactory`` whose connections are
``StringTransport``\\ s: a test reads what the source sent and answers byte by byte, with
a ``Clock`` for time. ``CameraServer`` is a real TCP server on 127.0.0.1 whose
connections follow a script (a coroutine per request), for the loopback tests.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from camproxy.hub.source import Capabilities, ISourceListener, Limits

BOUNDARY = b"123456789000000000000987654321"
STREAM_TYPE = b"multipart/x-mixed-replace;boundary=" + BOUNDARY


def jpeg(size: int = 2000, seed: int = 0) -> bytes:
    """A blob delimited as a JPEG (no stray FF inside)."""
    inner = bytes((i * 13 + seed) % 250 for i in range(max(0, size - 4)))
    return b"\xff\xd8" + inner + b"\xff\xd9"


def real_jpeg(width: int = 320, height: int = 240) -> bytes:
    """A real JPEG image (with an SOF marker), made with Pillow."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "JPEG", quality=70)
    return out.getvalue()


def part(frame: bytes, *, length: bool = True) -> bytes:
    """One part as Espressif's CameraWebServer writes it: delimiter first."""
    head = b"\r\n--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
    if length:
        head += b"Content-Length: %d\r\n" % len(frame)
    return head + b"X-Timestamp: 1.000001\r\n\r\n" + frame


def response_head(
    status: bytes = b"200 OK",
    headers: dict[bytes, bytes] | None = None,
    *,
    length: int | None = None,
) -> bytes:
    lines = [b"HTTP/1.1 " + status]
    for name, value in (headers or {}).items():
        lines.append(name + b": " + value)
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def stream_head(content_type: bytes = STREAM_TYPE) -> bytes:
    """A stream's response head, as the firmwares send it (no length, connection close)."""
    return response_head(headers={b"Content-Type": content_type, b"Connection": b"close"})


def image_answer(data: bytes, content_type: bytes = b"image/jpeg") -> bytes:
    return response_head(headers={b"Content-Type": content_type}, length=len(data)) + data


def plain_answer(status: bytes, body: bytes = b"", content_type: bytes = b"text/plain") -> bytes:
    return response_head(status, {b"Content-Type": content_type}, length=len(body)) + body


@attrs.define
class Request:
    method: str
    path: str
    headers: dict[str, str]


def parse_request(data: bytes) -> Request | None:
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, path, headers)


# -- in memory -------------------------------------------------------------------------


class FakeTransport(StringTransport):
    """A StringTransport whose close reaches the protocol (at once, or when the test says)."""

    def __init__(self, connection: FakeConnection) -> None:
        super().__init__()
        self._connection = connection

    def loseConnection(self) -> None:
        super().loseConnection()
        self._connection.closing()

    def abortConnection(self) -> None:
        super().abortConnection()
        self._connection.closing()


@attrs.define(eq=False)
class FakeConnection:
    """One connection from the source under test, to ``host:port``."""

    network: FakeNetwork
    scheme: str
    host: str
    port: int
    protocol: IProtocol
    transport: FakeTransport = attrs.field(init=False)
    lost: bool = False
    close_requested: bool = False

    def __attrs_post_init__(self) -> None:
        self.transport = FakeTransport(self)

    @property
    def request(self) -> Request | None:
        return parse_request(self.transport.value())

    @property
    def path(self) -> str:
        request = self.request
        assert request is not None, "the source sent no complete request"
        return request.path

    def send(self, data: bytes) -> None:
        """The camera sends ``data`` (and closes requested meanwhile complete)."""
        assert not self.lost
        self.protocol.dataReceived(data)
        self.network.clock.advance(0)

    def closing(self) -> None:
        if self.close_requested:
            return
        self.close_requested = True
        if self.network.close_at_once:
            # As over TCP: the protocol learns of the close on a later reactor turn.
            self.network.clock.callLater(0, self.drop)

    def drop(self, reason: Failure | None = None) -> None:
        """The connection ends (the camera closed it, or the source's close completed)."""
        if self.lost:
            return
        self.lost = True
        self.protocol.connectionLost(reason or Failure(error.ConnectionDone()))


@implementer(IStreamClientEndpoint)
@attrs.define
class _FakeEndpoint:
    network: FakeNetwork
    scheme: str
    host: str
    port: int

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        behaviour = self.network.behaviour.get((self.host, self.port))
        if behaviour == "refuse":
            return defer.fail(error.ConnectionRefusedError("refused"))
        if behaviour == "hang":
            return Deferred()
        protocol = protocolFactory.buildProtocol(IPv4Address("TCP", "127.0.0.1", self.port))
        assert protocol is not None
        connection = FakeConnection(self.network, self.scheme, self.host, self.port, protocol)
        self.network.connections.append(connection)
        live = len(self.network.live(self.port))
        most = self.network.most_live
        most[self.port] = max(most.get(self.port, 0), live)
        protocol.makeConnection(connection.transport)
        return defer.succeed(protocol)


@implementer(IAgentEndpointFactory)
@attrs.define
class FakeNetwork:
    """Every connection the sources make, kept for the test to answer.

    :ivar clock: the reactor's clock, on which closes complete (on its next turn).
    :ivar close_at_once: a close by the source completes on the next turn (else the test
        calls :meth:`FakeConnection.drop`).
    :ivar behaviour: per ``(host, port)``, ``"refuse"`` or ``"hang"`` (never connects).
    """

    clock: Clock
    connections: list[FakeConnection] = attrs.Factory(list)
    close_at_once: bool = True
    behaviour: dict[tuple[str, int], str] = attrs.Factory(dict)
    #: The most connections that were open at once, per port.
    most_live: dict[int, int] = attrs.Factory(dict)

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return _FakeEndpoint(self, uri.scheme.decode(), uri.host.decode(), uri.port)

    def to(self, port: int) -> list[FakeConnection]:
        return [c for c in self.connections if c.port == port]

    def live(self, port: int | None = None) -> list[FakeConnection]:
        return [c for c in self.connections if not c.lost and (port is None or c.port == port)]

    @property
    def last(self) -> FakeConnection:
        return self.connections[-1]


@implementer(ISourceListener)
class RecordingListener:
    """Records what a source reports, in order; checks the reports make sense."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.connected = False

    def source_connected(self) -> None:
        assert not self.connected, "source_connected twice"
        self.connected = True
        self.events.append(("connected", None))

    def source_disconnected(self) -> None:
        self.connected = False
        self.events.append(("disconnected", None))

    def frame_received(self, data: bytes) -> bool:
        assert self.connected, "a frame before source_connected"
        assert data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9"), "invalid frame"
        self.events.append(("frame", data))
        return True

    def frame_request_failed(self) -> None:
        self.events.append(("request_failed", None))

    def position_reported(self, x: int, y: int) -> None:
        self.events.append(("position", (x, y)))

    def limits_reported(self, limits: Limits) -> None:
        self.events.append(("limits", limits))

    def position_refused(self) -> None:
        self.events.append(("refused", None))

    def capabilities_changed(self) -> None:
        self.events.append(("capabilities", None))

    def light_reported(self, on: bool) -> None:
        self.events.append(("light", on))

    def control_reported(self, holder: str | None, expires_in: float | None) -> None:
        self.events.append(("control", (holder, expires_in)))

    @property
    def frames(self) -> list[bytes]:
        return [data for kind, data in self.events if kind == "frame"]

    def count(self, kind: str) -> int:
        return sum(1 for event, _ in self.events if event == kind)

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


NO_CAPABILITIES = Capabilities()


# -- on the loopback ------------------------------------------------------------------------

Handler = Callable[["ServerConnection", Request], Coroutine[Any, Any, None]]


class ServerConnection(Protocol):
    """One connection to a :class:`CameraServer`; its handler writes the answer."""

    factory: CameraServer

    def __init__(self) -> None:
        self._buffer = b""
        self.request: Request | None = None
        self.closed: Deferred[None] = Deferred()
        self.gone = False

    def connectionMade(self) -> None:
        self.factory.connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        if self.request is not None:
            return
        self._buffer += data
        request = parse_request(self._buffer)
        if request is None:
            return
        self.request = request
        self.factory.requests.append(request)
        handler = self.factory.handler
        defer.ensureDeferred(handler(self, request)).addErrback(self._handler_failed)

    def _handler_failed(self, failure: Failure) -> None:
        if not self.gone:
            failure.printTraceback()
            self.transport.abortConnection()  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        if not self.gone:
            self.transport.write(data)  # type: ignore[union-attr]

    def write_chunk(self, data: bytes) -> None:
        """One chunk of a chunked body (the ESP32 httpd sends its stream this way)."""
        if data:
            self.write(b"%x\r\n" % len(data) + data + b"\r\n")

    def finish(self) -> None:
        if not self.gone:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        self.gone = True
        self.factory.connection_lost(self)
        self.closed.callback(None)


class CameraServer(Factory):
    """A scripted HTTP server: ``handler(connection, request)`` answers each request
    (one request per connection, as the firmwares' stream servers).

    Counts connections, the most that were open at once, and keeps every request.
    """

    protocol = ServerConnection  # type: ignore[assignment]

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.open: set[ServerConnection] = set()
        self.most_at_once = 0
        self.total = 0
        self.port: Any = None

    def connection_made(self, connection: ServerConnection) -> None:
        self.open.add(connection)
        self.total += 1
        self.most_at_once = max(self.most_at_once, len(self.open))

    def connection_lost(self, connection: ServerConnection) -> None:
        self.open.discard(connection)

    async def listen(self, reactor: Any) -> int:
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        return int(self.port.getHost().port)

    async def listen_unix(self, reactor: Any, path: str) -> str:
        self.port = reactor.listenUNIX(path, self)
        return path

    async def stop(self) -> None:
        for connection in list(self.open):
            connection.transport.abortConnection()  # type: ignore[union-attr]
        waits = [c.closed for c in list(self.open)]
        if self.port is not None:
            await self.port.stopListening()
        for wait in waits:
            await wait


def sleep(reactor: Any, seconds: float) -> Deferred[None]:
    """For the scripted servers only (they play a camera's timing); tests never sleep."""
    return defer.Deferred.fromCoroutine(_sleep(reactor, seconds))


async def _sleep(reactor: Any, seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)
