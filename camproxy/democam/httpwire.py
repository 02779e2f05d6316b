"""A small HTTP/1.1 server that writes its answers byte for byte, as a camera firmware does.

The ESP32 camera firmwares run ESP-IDF's ``esp_http_server``, which writes exactly
``HTTP/1.1 <status>\\r\\nContent-Type: <type>\\r\\nContent-Length: <n>\\r\\n``, then the
handler's own headers in the order they were set, then an empty line: no ``Date``, no
``Server``, no ``Connection``. ``httpd_resp_send_chunk`` writes ``Transfer-Encoding: chunked``
instead of the length, and one chunk per call. twisted.web would add headers and frame the
body its own way, so the emulators write their answers themselves through this module.

:class:`WireServer` is one listening server of a camera. It parses requests (with ESP-IDF's
limits: a 512-byte URI, 512-byte header lines), hands each to its handler as an
:class:`Exchange`, and keeps the connection for the next request. With ``single_task`` it serves
one request at a time across all its connections, as the ESP-IDF server's single task does:
while a handler runs (an endless MJPEG stream, say), other connections are accepted and their
requests read, but nothing answers them until that handler is done.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

ESP_ERRORS: dict[int, tuple[str, str]] = {
    400: ("400 Bad Request", "Bad request syntax"),
    401: ("401 Unauthorized", "No permission -- see authorization schemes"),
    403: ("403 Forbidden", "Request forbidden -- authorization will not help"),
    404: ("404 Not Found", "Nothing matches the given URI"),
    405: ("405 Method Not Allowed", "Specified method is invalid for this resource"),
    408: ("408 Request Timeout", "Server closed this connection"),
    411: ("411 Length Required", "Client must specify Content-Length"),
    414: ("414 URI Too Long", "URI is too long"),
    431: ("431 Request Header Fields Too Large", "Header fields are too long"),
    500: ("500 Internal Server Error", "Server has encountered an unexpected error"),
    501: ("501 Method Not Implemented", "Server does not support this method"),
    505: ("505 Version Not Supported", "HTTP version not supported by server"),
}
"""ESP-IDF's status lines and error bodies (``httpd_resp_send_err``), by status code."""

MAX_URI = 512
"""ESP-IDF's default ``CONFIG_HTTPD_MAX_URI_LEN``."""
MAX_HEADER_LINE = 512
"""ESP-IDF's default ``CONFIG_HTTPD_MAX_REQ_HDR_LEN``, applied to each header line."""
RECORDED = 1000
"""How many of the latest requests (and other events) an emulator keeps for tests to look at."""
_MAX_HEAD = 16 * 1024
"""A request head not finished within this many bytes is refused with 431."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@attrs.frozen
class Request:
    """One parsed request: the method, the target as sent, and the headers in order."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> str:
        """The target up to the ``?`` (ESP-IDF matches handlers on exactly this)."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str | None:
        """The text after the ``?``, or None without one (``httpd_req_get_url_query_str``)."""
        _path, mark, query = self.target.partition("?")
        return query if mark else None

    def header(self, name: str) -> str | None:
        """The first header of that name (any case), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


def query_value(query: str | None, key: str, size: int = 32) -> str | None:
    """ESP-IDF's ``httpd_query_key_value``: the raw (undecoded) value of ``key``, or None.

    The value is whatever follows ``key=`` up to the next ``&``. None when the key is absent or
    its value does not fit a ``size``-byte buffer (the firmware gets an error then too).
    """
    if query is None:
        return None
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        if equals and name == key:
            return value if len(value.encode("utf-8")) < size else None
    return None


def atoi(text: str) -> int:
    """C's ``atoi`` as newlib does it: leading digits, 0 for none, saturated to 32 bits."""
    match = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", text)
    if match is None:
        return 0
    return max(-(2**31), min(2**31 - 1, int(match.group(1))))


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body, as ``httpd_resp_send_chunk`` frames it."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


class Exchange:
    """One request and its answer, on one connection; the ``httpd_req_t`` of a handler.

    The handler sets ``status``, ``content_type`` and ``headers``, then calls :meth:`send` once
    (a body with ``Content-Length``), or :meth:`send_chunk` any number of times, or :meth:`write`
    raw bytes, and finally :meth:`finish`, which lets the connection (and, for a single-task
    server, the server) go on to the next request. ``head_padding`` adds a header line of that
    many bytes to the head, for the ``huge-header`` fault.
    """

    def __init__(self, connection: WireConnection, request: Request) -> None:
        self.request = request
        self.connection = connection
        self.status = "200 OK"
        self.content_type = "text/html"
        self.headers: list[tuple[str, str]] = []
        self.head_padding = 0
        self.head_sent = False
        self.finished = False
        self.lost = False
        self._lost_callbacks: list[Callable[[], None]] = []

    @property
    def server(self) -> WireServer:
        """The server that received the request."""
        return self.connection.factory

    @property
    def clock(self) -> Any:
        """The reactor (an ``IReactorTime``)."""
        return self.connection.factory.clock

    @property
    def paused(self) -> bool:
        """Whether the socket's send buffer is full (the firmware's ``send`` would block)."""
        return self.connection.paused

    @property
    def paused_since(self) -> float | None:
        """When the send buffer filled up, on the reactor's clock; None while not paused."""
        return self.connection.paused_since

    @property
    def open(self) -> bool:
        """Whether the answer can still be written: not finished and the connection up."""
        return not self.finished and not self.lost

    def set_header(self, name: str, value: str) -> None:
        """Add a header, sent after the essential ones (``httpd_resp_set_hdr``)."""
        self.headers.append((name, value))

    def _head(self, framing: str) -> bytes:
        lines = [f"HTTP/1.1 {self.status}", f"Content-Type: {self.content_type}", framing]
        lines += [f"{name}: {value}" for name, value in self.headers]
        head = "\r\n".join(lines).encode("latin-1") + b"\r\n"
        return head + padding_line(self.head_padding) + b"\r\n"

    def send(self, body: bytes = b"") -> None:
        """Write the head with ``Content-Length`` and the body (``httpd_resp_send``)."""
        self.write(self._head(f"Content-Length: {len(body)}") + body)
        self.head_sent = True

    def send_head(self, length: int) -> None:
        """Write only the head, announcing ``length`` bytes of body (for truncated answers)."""
        self.write(self._head(f"Content-Length: {length}"))
        self.head_sent = True

    def send_chunk(self, data: bytes) -> None:
        """Write one chunk, after the chunked head on the first call (``httpd_resp_send_chunk``)."""
        if not self.head_sent:
            self.write(self._head("Transfer-Encoding: chunked"))
            self.head_sent = True
        self.write(chunk(data))

    def send_error(self, code: int, message: str | None = None) -> None:
        """Answer with ESP-IDF's error status and text (``httpd_resp_send_err``)."""
        status, default = ESP_ERRORS[code]
        self.status = status
        self.content_type = "text/html"
        self.send((default if message is None else message).encode("utf-8"))

    def write(self, data: bytes) -> None:
        """Write raw bytes to the connection (nothing once it is lost)."""
        if not self.lost and data:
            self.connection.write(data)

    def finish(self, close: bool = False) -> None:
        """The handler is done; with ``close``, the connection is closed after what was written.

        ESP-IDF closes the connection when a handler fails (returns ``ESP_FAIL``), which is
        what ``close`` is for; otherwise it waits for the next request on it.
        """
        if self.finished:
            return
        self.finished = True
        self.connection.exchange_finished(self, close)

    def abort(self) -> None:
        """Reset the connection at once."""
        self.connection.abort()

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` if the connection goes away before :meth:`finish`."""
        self._lost_callbacks.append(callback)

    def connection_lost(self) -> None:
        """The connection went away (called by the connection)."""
        if self.lost:
            return
        self.lost = True
        callbacks, self._lost_callbacks = self._lost_callbacks, []
        for callback in callbacks:
            callback()
        self.finish()


def padding_line(size: int) -> bytes:
    """A header line ``X-Padding: aaa...`` of ``size`` bytes in all (CRLF included), or nothing."""
    if size <= 0:
        return b""
    filler = max(0, size - len(b"X-Padding: \r\n"))
    return b"X-Padding: " + b"a" * filler + b"\r\n"


@implementer(IPushProducer)
class WireConnection(Protocol):
    """One TCP (or UNIX) connection to a :class:`WireServer`: parses requests, one at a time."""

    factory: WireServer

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.exchange: Exchange | None = None
        self.queued = False
        self.closing = False
        self.connected_ = False
        self.paused = False
        self.paused_since: float | None = None
        self.bytes_received = 0
        self.bytes_sent = 0

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.connected_ = True
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self.factory.connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self._buffer += data
        self.next_request()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected_ = False
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.connection_lost()
        self.factory.connection_lost(self)

    # IPushProducer: the transport tells us when its send buffer is full.
    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.paused_since = self.factory.clock.seconds()

    def resumeProducing(self) -> None:
        self.paused = False
        self.paused_since = None

    def stopProducing(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        """Write bytes (counted) unless the connection is closing or gone."""
        if self.transport is not None and self.connected_ and not self.closing:
            self.bytes_sent += len(data)
            self.transport.write(data)

    def abort(self) -> None:
        """Reset the connection."""
        if self.transport is not None and self.connected_:
            self.closing = True
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Close the connection once everything written has been sent."""
        if self.transport is not None and self.connected_ and not self.closing:
            self.closing = True
            self.transport.loseConnection()

    def exchange_finished(self, exchange: Exchange, close: bool) -> None:
        """The handler of ``exchange`` is done; go on with the next request, or close."""
        if self.exchange is exchange:
            self.exchange = None
        self.factory.exchange_finished(exchange)
        if close:
            self.close()
        elif self.connected_:
            self.next_request()

    def next_request(self) -> None:
        """Parse the next buffered request, if any, and submit it to the server."""
        if self.exchange is not None or self.closing or not self.connected_:
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                self._refuse(431)
            return
        head = bytes(self._buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0].encode("latin-1")):
            self._refuse(400)
            return
        method, target, version = parts
        if not version.startswith("HTTP/1."):
            self._refuse(505)
            return
        if len(target) > self.factory.max_uri:
            self._refuse(414)
            return
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if len(line) > self.factory.max_header_line:
                self._refuse(431)
                return
            name, colon, value = line.partition(":")
            if not colon or not name or not _TOKEN.fullmatch(name.encode("latin-1")):
                self._refuse(400)
                return
            headers.append((name, value.strip(" \t")))
        request = Request(method, target, version, tuple(headers))
        length_text = request.header("Content-Length") or "0"
        if request.header("Transfer-Encoding") is not None or not length_text.isdigit():
            self._refuse(411)
            return
        body_end = end + 4 + int(length_text)
        if len(self._buffer) < body_end:
            return  # the body is still coming; it is read and ignored
        del self._buffer[:body_end]
        self.exchange = Exchange(self, request)
        self.factory.submit(self.exchange)

    def _refuse(self, code: int) -> None:
        """Answer a request ESP-IDF cannot parse, and close (as it does)."""
        self._buffer.clear()
        status, message = ESP_ERRORS[code]
        body = message.encode("utf-8")
        self.write(
            b"HTTP/1.1 %s\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
            % (status.encode("latin-1"), len(body), body)
        )
        self.factory.refused += 1
        self.close()


class WireServer(Factory[WireConnection]):
    """One listening server: connections, requests, and the handler that answers them.

    ``handler`` is called with each :class:`Exchange`; it must eventually call
    ``exchange.finish()`` (an exchange whose connection is lost is finished for it).

    With ``single_task``, one exchange is handled at a time across all connections and the
    others wait in ``waiting``, in arrival order (the ESP-IDF server's one task). Otherwise every
    connection is served at once.

    Records, for tests: ``requests`` (the last :data:`RECORDED` requests parsed, in order) and
    ``requests_total``, ``connections`` (open),
    ``connections_total``, ``in_flight`` and ``in_flight_max`` (exchanges being handled at
    once), ``refused`` (requests refused as unparseable).
    """

    protocol = WireConnection
    noisy = False
    _log = Logger(namespace="camproxy.democam")

    def __init__(
        self,
        reactor: Any,
        handler: Callable[[Exchange], None],
        *,
        name: str = "http",
        single_task: bool = False,
        max_uri: int = MAX_URI,
        max_header_line: int = MAX_HEADER_LINE,
    ) -> None:
        self.clock: Any = reactor
        self.handler = handler
        self.name = name
        self.single_task = single_task
        self.max_uri = max_uri
        self.max_header_line = max_header_line
        self.connections: set[WireConnection] = set()
        self.connections_total = 0
        self.requests: deque[Request] = deque(maxlen=RECORDED)
        self.requests_total = 0
        self.waiting: deque[Exchange] = deque()
        self.current: set[Exchange] = set()
        self.in_flight_max = 0
        self.refused = 0
        self.on_change: list[Callable[[], None]] = []

    def logPrefix(self) -> str:
        return f"democam-{self.name}"

    @property
    def in_flight(self) -> int:
        """Exchanges being handled right now."""
        return len(self.current)

    def connection_made(self, connection: WireConnection) -> None:
        self.connections.add(connection)
        self.connections_total += 1
        self.changed()

    def connection_lost(self, connection: WireConnection) -> None:
        self.connections.discard(connection)
        self.waiting = deque(e for e in self.waiting if e.connection is not connection)
        self.changed()

    def submit(self, exchange: Exchange) -> None:
        """A request arrived: handle it now, or queue it behind the running one."""
        self.requests.append(exchange.request)
        self.requests_total += 1
        if self.single_task and self.current:
            self.waiting.append(exchange)
            self.changed()
            return
        self._run(exchange)

    def _run(self, exchange: Exchange) -> None:
        self.current.add(exchange)
        self.in_flight_max = max(self.in_flight_max, len(self.current))
        self.changed()
        try:
            self.handler(exchange)
        except Exception:
            self._log.failure("Emulated camera handler failed")
            if not exchange.finished:
                exchange.abort()
                exchange.finish()

    def exchange_finished(self, exchange: Exchange) -> None:
        """The handler of ``exchange`` is done: let the next waiting request in."""
        self.current.discard(exchange)
        while self.single_task and not self.current and self.waiting:
            following = self.waiting.popleft()
            if following.connection.connected_:
                self._run(following)
        self.changed()

    def changed(self) -> None:
        """Tell the listeners in ``on_change`` that the state changed."""
        for listener in list(self.on_change):
            listener()

    def drop_all(self) -> None:
        """Reset every open connection."""
        for connection in list(self.connections):
            connection.abort()


class Waiters:
    """Deferreds that fire once a condition on some state holds (re-checked on every change)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def when(self, condition: Callable[[], bool]) -> Deferred[None]:
        """A Deferred that fires once ``condition()`` is true (at once if it is already)."""
        waiter: Deferred[None] = Deferred()
        if condition():
            waiter.callback(None)
        else:
            self._waiting.append((condition, waiter))
        return waiter

    def check(self) -> None:
        """Fire the waiters whose condition now holds."""
        pending, self._waiting = self._waiting, []
        for condition, waiter in pending:
            if condition():
                waiter.callback(None)
            else:
                self._waiting.append((condition, waiter))
