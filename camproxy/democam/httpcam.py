"""What the emulated HTTP cameras share: faults, Basic auth, pictures, MJPEG streams, ports.

:class:`HttpCameraServer` is the base of every emulated HTTP camera (the ESP32 firmwares in
:mod:`camproxy.democam.esp32`, the generic MJPEG and JPEG servers in
:mod:`camproxy.democam.mjpeg`). It owns one :class:`~camproxy.democam.httpwire.WireServer` per
role (``control``, ``stream``, ``snapshot``), listens on Twisted server endpoint strings (TCP,
UNIX sockets, anything), and puts a gate in front of every handler that applies the fault
injected (:data:`FAULTS`) and HTTP Basic authentication.

:class:`StreamSession` writes one ``multipart/x-mixed-replace`` JPEG stream, framed as a
:class:`MultipartStyle` says (the stock firmware's, esp32-cam-webserver's, ESPHome's, or any
variant a generic server might use), paced by the reactor, and blocked like the firmware when
the client stops reading.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger

from camproxy.democam.httpwire import Exchange, Waiters, WireServer, padding_line
from camproxy.democam.robocam import NOT_JPEG
from camproxy.democam.testpattern import PatternRenderer

ESP_BOUNDARY = "123456789000000000000987654321"
"""The part boundary of the ESP32 camera firmwares (and ESPHome)."""
WRONG_BOUNDARY = "thisisnottheannouncedboundary0000"
"""What the ``wrong-boundary`` fault delimits parts with instead of the announced boundary."""

HUGE_PART_BYTES = 11 * 1024 * 1024
"""Size of the JPEG-shaped part (or body) the ``huge`` fault sends: over any 10 MB limit."""
HUGE_HEADER_BYTES = 10 * 1024 * 1024
"""Size of the header line the ``huge-header`` and ``huge-part-header`` faults send."""

STREAM_FAULTS = (
    "stall",
    "wrong-boundary",
    "truncated",
    "not-jpeg",
    "huge",
    "huge-part-header",
    "close",
)
"""Faults in the video itself; by default (scope ``auto``) they hit only the video server."""
SERVER_FAULTS = (
    "huge-header",
    "refuse",
    "black-hole",
    "status-401",
    "status-404",
    "status-500",
    "slow",
)
"""Faults of the whole device; by default (scope ``auto``) they hit every server of it."""
FAULTS = STREAM_FAULTS + SERVER_FAULTS
"""Every fault name the HTTP emulators take (``None`` is a well-behaved camera)."""

FAULT_HELP = {
    "stall": "the stream stops sending after a few frames, the socket stays open "
    "(other answers: the head, half the body, then nothing)",
    "wrong-boundary": "stream parts delimited by another boundary than the announced one",
    "truncated": "parts shorter than their Content-Length, or JPEGs cut off "
    "(JPEG answers: half the announced body, then the connection closes)",
    "not-jpeg": "parts (and JPEG answers) that are not JPEGs",
    "huge": "one 11 MiB JPEG-shaped part per stream (or 11 MiB JPEG answers)",
    "huge-part-header": "a 10 MiB header line in the first part of every stream",
    "close": "the stream closes after a few frames (other requests: closed unanswered)",
    "huge-header": "a 10 MiB header line in every response head",
    "refuse": "stop listening: connections are refused",
    "black-hole": "accept connections and requests, never answer",
    "status-401": "answer every request with 401 (and WWW-Authenticate)",
    "status-404": "answer every request with 404",
    "status-500": "answer every request with 500",
    "slow": "answer every request (start every stream) only after --slow-seconds",
}
"""One line per fault, for the command line's help and its start-up message."""

SCOPES = ("auto", "all", "control", "stream", "snapshot")
"""Which servers a fault hits: ``auto`` (see :data:`STREAM_FAULTS`), ``all``, or one role."""

_VIDEO_ROLES = ("stream", "snapshot")


def esp_quality_to_pillow(quality: int) -> int:
    """The ESP32 camera's JPEG quality (0 best .. 63 worst) as Pillow's (95 best .. 5)."""
    return max(5, min(95, round(100 - 1.45 * quality)))


@attrs.define
class Faults:
    """The fault a camera is injecting now, where, and its parameters.

    ``name`` is one of :data:`FAULTS` or None; ``scope`` one of :data:`SCOPES`. ``stall_after``
    and ``close_after`` count stream frames; ``slow_seconds`` is the ``slow`` delay. Setting
    ``name`` calls ``on_change`` (the server uses it to stop or resume listening for
    ``refuse``).
    """

    _name: str | None = attrs.field(default=None, alias="name")
    scope: str = "auto"
    stall_after: int = 2
    close_after: int = 3
    slow_seconds: float = 3.0
    on_change: Callable[[str | None], None] | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self._check(self._name)
        if self.scope not in SCOPES:
            raise ValueError(f"unknown fault scope {self.scope!r}; known: {', '.join(SCOPES)}")

    @staticmethod
    def _check(name: str | None) -> None:
        if name is not None and name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")

    @property
    def name(self) -> str | None:
        """The fault injected, or None."""
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        self._check(name)
        self._name = name
        if self.on_change is not None:
            self.on_change(name)

    def active(self, role: str) -> str | None:
        """The fault that hits the server of ``role`` now, or None."""
        name = self._name
        if name is None:
            return None
        scope = self.scope
        if scope == "auto":
            return name if name in SERVER_FAULTS or role in _VIDEO_ROLES else None
        return name if scope in ("all", role) else None


@attrs.frozen
class BasicAuth:
    """HTTP Basic credentials a camera requires."""

    user: str
    password: str
    realm: str = "democam"

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries these credentials."""
        if authorization is None:
            return False
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = f"{self.user}:{self.password}".encode()
        return hmac.compare_digest(decoded, expected)

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a 401."""
        return f'Basic realm="{self.realm}"'


def with_comment(jpeg: bytes, text: bytes) -> bytes:
    """``jpeg`` with a comment (COM) segment after its JFIF header: still a valid JPEG."""
    position = 2
    if jpeg[2:4] == b"\xff\xe0":
        position = 4 + int.from_bytes(jpeg[4:6], "big")
    segment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    return jpeg[:position] + segment + jpeg[position:]


@attrs.define
class PatternFrames:
    """Test-pattern JPEGs of any size, each one different.

    The clock drawn on the picture is ``now()``, but at least 1 ms after the previous frame's;
    and a JPEG comment numbers the frames, so even pictures too small to show the clock, or
    taken at the same instant (a fake clock, a capture beside a stream), differ.
    """

    now: Callable[[], float]
    rendered: int = 0
    _last: float = attrs.field(default=float("-inf"), init=False)
    _renderers: dict[tuple[int, int, int], PatternRenderer] = attrs.field(
        factory=dict, init=False, repr=False
    )

    def render(self, width: int, height: int, quality: int, light: bool) -> bytes:
        """One JPEG of ``width`` x ``height`` at Pillow ``quality``, lit or not."""
        key = (width, height, quality)
        renderer = self._renderers.get(key)
        if renderer is None:
            if len(self._renderers) >= 4:
                self._renderers.pop(next(iter(self._renderers)))
            renderer = self._renderers[key] = PatternRenderer(
                width=width, height=height, quality=quality
            )
        moment = max(self.now(), self._last + 0.001)
        self._last = moment
        self.rendered += 1
        comment = b"democam frame %d at %.3f" % (self.rendered, moment)
        return with_comment(renderer.render(90, 45, light, moment), comment)


def huge_jpeg() -> bytes:
    """A JPEG-shaped blob of :data:`HUGE_PART_BYTES` (starts ``FF D8``, ends ``FF D9``)."""
    return b"\xff\xd8" + b"\x00" * (HUGE_PART_BYTES - 4) + b"\xff\xd9"


def cut_jpeg(jpeg: bytes) -> bytes:
    """The first half of a JPEG: starts ``FF D8``, never ends ``FF D9``."""
    cut = jpeg[: max(2, len(jpeg) // 2)]
    return cut[:-1] if cut.endswith(b"\xff\xd9") else cut


@attrs.frozen
class MultipartStyle:
    """How a camera frames its MJPEG stream, down to the byte.

    - ``boundary``, and how ``Content-Type`` announces it: ``quote`` (``boundary="..."``) and
      ``space`` (a space after ``;``).
    - ``chunked``: HTTP/1.1 with chunked transfer encoding, one chunk per piece, and ESP-IDF's
      head (``Content-Type`` first, then ``headers``); otherwise an HTTP/1.0 head (``headers``,
      ``Connection: close``, then ``Content-Type``) and a body that ends with the connection,
      as ESPHome writes it.
    - ``boundary_first``: each part is preceded by ``\\r\\n--BOUNDARY\\r\\n`` (the stock
      firmware); otherwise the first boundary goes out at once and each part is followed by
      ``\\r\\n--BOUNDARY\\r\\n`` (esp32-cam-webserver, ESPHome). ``leading_crlf`` False drops the
      ``\\r\\n`` before the very first boundary (ESPHome).
    - Part headers: ``Content-Type: image/jpeg``, then ``Content-Length`` if
      ``content_length``, ``X-Timestamp: S.UUUUUU`` (seconds since boot) if ``timestamp``, and
      ``part_headers``.
    """

    boundary: str = ESP_BOUNDARY
    quote: bool = False
    space: bool = False
    chunked: bool = True
    boundary_first: bool = True
    leading_crlf: bool = True
    content_length: bool = True
    timestamp: bool = False
    part_headers: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = (("Access-Control-Allow-Origin", "*"),)

    def __attrs_post_init__(self) -> None:
        if not self.boundary or any(c in self.boundary for c in '\r\n"'):
            raise ValueError(f"unusable boundary {self.boundary!r}")

    @property
    def content_type(self) -> str:
        """The response's ``Content-Type`` value, byte for byte."""
        boundary = f'"{self.boundary}"' if self.quote else self.boundary
        return f"multipart/x-mixed-replace;{' ' if self.space else ''}boundary={boundary}"

    def delimiter(self, boundary: str | None = None) -> bytes:
        """``\\r\\n--BOUNDARY\\r\\n``."""
        return f"\r\n--{boundary or self.boundary}\r\n".encode("latin-1")

    def part_head(self, length: int, timestamp: float | None = None, padding: int = 0) -> bytes:
        """The headers of one part and the empty line after them."""
        lines = [b"Content-Type: image/jpeg\r\n"]
        if self.content_length:
            lines.append(b"Content-Length: %d\r\n" % length)
        if self.timestamp and timestamp is not None:
            seconds, micros = divmod(round(timestamp * 1_000_000), 1_000_000)
            lines.append(b"X-Timestamp: %d.%06d\r\n" % (seconds, micros))
        lines += [f"{name}: {value}\r\n".encode("latin-1") for name, value in self.part_headers]
        return b"".join(lines) + padding_line(padding) + b"\r\n"

    def raw_head(self, padding: int = 0) -> bytes:
        """The HTTP/1.0 head of a stream that is not chunked (ESPHome's)."""
        lines = ["HTTP/1.0 200 OK"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += ["Connection: close", f"Content-Type: {self.content_type}"]
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return head + padding_line(padding) + b"\r\n"


STOCK_STREAM = MultipartStyle(
    timestamp=True,
    headers=(("Access-Control-Allow-Origin", "*"), ("X-Framerate", "60")),
)
"""Espressif's ``CameraWebServer``: boundary before each part, ``X-Timestamp``, ``X-Framerate``."""
CAM_WEBSERVER_STREAM = MultipartStyle(boundary_first=False)
"""esp32-cam-webserver: the first boundary at once, then part, JPEG, boundary; no timestamp."""
ESPHOME_STREAM = MultipartStyle(chunked=False, boundary_first=False, leading_crlf=False)
"""ESPHome's ``esp32_camera_web_server``: HTTP/1.0, not chunked, ``Connection: close``."""


class StreamSession:
    """One MJPEG stream on an :class:`Exchange`, sending a frame every ``interval()`` seconds.

    Like the firmware's stream loop, it sends nothing new while the client is not reading (the
    socket's send buffer is full: the firmware's ``send`` blocks), and gives up, closing the
    connection, after ``send_timeout`` seconds of that (ESP-IDF's ``send_wait_timeout``).
    ``start_delay`` waits before the head (esp32-cam-webserver blinks its LED first).

    The faults of ``faults`` for ``role`` apply frame by frame, so changing them at run time
    changes the stream at once. ``on_frame`` is called after each frame and ``on_end`` once when
    the stream ends (connection lost, closed by a fault, or :meth:`stop`).
    """

    _log = Logger(namespace="camproxy.democam")

    def __init__(
        self,
        exchange: Exchange,
        style: MultipartStyle,
        picture: Callable[[], bytes],
        *,
        interval: Callable[[], float],
        faults: Faults,
        role: str = "stream",
        uptime: Callable[[], float] | None = None,
        start_delay: float = 0.0,
        send_timeout: float = 5.0,
        on_frame: Callable[[], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.style = style
        self.picture = picture
        self.interval = interval
        self.faults = faults
        self.role = role
        self.uptime = uptime
        self.start_delay = start_delay
        self.send_timeout = send_timeout
        self.on_frame = on_frame
        self.on_tick = on_tick
        self.on_end = on_end
        self.frames_sent = 0
        self.ticks = 0
        self.ended = False
        self._huge_sent = False
        self._padding_sent = False
        self._call: IDelayedCall | None = None
        self._clock: Any = exchange.clock
        exchange.on_lost(self._end)

    def start(self) -> None:
        """Begin: the head (and, depending on the style, the first boundary), then frames."""
        if self.start_delay > 0:
            self._call = self._clock.callLater(self.start_delay, self._begin)
        else:
            self._begin()

    def _begin(self) -> None:
        self._call = None
        exchange, style = self.exchange, self.style
        if not exchange.open:
            return
        exchange.content_type = style.content_type
        for name, value in style.headers:
            exchange.set_header(name, value)
        if not style.chunked:
            exchange.write(style.raw_head(exchange.head_padding))
            exchange.head_sent = True
        if not style.boundary_first:
            first = style.delimiter(self._boundary())
            self._send(first if style.leading_crlf else first[2:])
        self._tick()

    def _boundary(self) -> str:
        wrong = self.faults.active(self.role) == "wrong-boundary"
        return WRONG_BOUNDARY if wrong else self.style.boundary

    def _send(self, data: bytes) -> None:
        if self.style.chunked:
            self.exchange.send_chunk(data)
        else:
            self.exchange.write(data)

    def _tick(self) -> None:
        self._call = None
        if self.ended or not self.exchange.open:
            return
        self._call = self._clock.callLater(max(0.0, self.interval()), self._tick)
        self.ticks += 1
        try:
            self._frame_due()
        finally:
            if self.on_tick is not None:
                self.on_tick()

    def _frame_due(self) -> None:
        since = self.exchange.paused_since
        if since is not None:
            if self._clock.seconds() - since >= self.send_timeout:
                self._log.info("Stream client stopped reading; closing the stream")
                self.exchange.abort()
            return
        fault = self.faults.active(self.role)
        if fault == "stall" and self.frames_sent >= self.faults.stall_after:
            return
        if fault == "close" and self.frames_sent >= self.faults.close_after:
            self.stop(close=True)
            return
        self._send_frame(fault)

    def _send_frame(self, fault: str | None) -> None:
        jpeg = self.picture()
        payload, length = jpeg, len(jpeg)
        if fault == "not-jpeg":
            payload = NOT_JPEG[self.frames_sent % len(NOT_JPEG)]
            length = len(payload)
        elif fault == "truncated":
            payload = cut_jpeg(jpeg)
            # Every other part claims the whole JPEG's length but carries only half of it.
            length = len(payload) if self.frames_sent % 2 == 0 else len(jpeg)
        elif fault == "huge" and not self._huge_sent:
            self._huge_sent = True
            payload = huge_jpeg()
            length = len(payload)
        padding = 0
        if fault == "huge-part-header" and not self._padding_sent:
            self._padding_sent = True
            padding = HUGE_HEADER_BYTES
        style = self.style
        stamp = self.uptime() if self.uptime is not None else None
        head = style.part_head(length, stamp, padding)
        delimiter = style.delimiter(self._boundary())
        pieces = [delimiter, head, payload] if style.boundary_first else [head, payload, delimiter]
        for piece in pieces:
            self._send(piece)
        self.frames_sent += 1
        if self.on_frame is not None:
            self.on_frame()

    def stop(self, close: bool = False) -> None:
        """End the stream where it is, without a closing boundary or last chunk.

        With ``close`` the connection is closed; otherwise it stays open for the next
        request, as when esp32-cam-webserver's ``/stop`` ends its stream loop.
        """
        if self.ended:
            return
        self._end()
        self.exchange.finish(close=close or not self.style.chunked)

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.on_end is not None:
            self.on_end()


class HttpCameraServer:
    """The base of an emulated HTTP camera: its servers, ports, faults, auth and counters.

    Subclasses call :meth:`add_server` for each role with a router (a handler of exchanges
    that passed the gate). Keywords common to all cameras:

    - ``fault``, ``fault_scope``, ``stall_after``, ``close_after``, ``slow_seconds``: see
      :class:`Faults` (all changeable later through ``faults``; :meth:`set_fault` also waits
      for the ports to stop or resume listening).
    - ``user`` and ``password``: require HTTP Basic authentication on every server (401 with
      ``WWW-Authenticate`` otherwise).
    - ``send_timeout``: seconds a stream waits on a client that stopped reading.

    Counters: ``streams_active`` and ``streams_total`` (stream responses running / ever
    started), ``frames_sent``, ``stream_ticks`` (frame times of all streams, a frame sent or
    not: a stalled stream still ticks), ``held`` (exchanges swallowed by ``black-hole``); each
    :class:`WireServer` in ``servers`` counts its connections and requests. :meth:`when` waits
    for any condition on them.
    """

    _log = Logger(namespace="camproxy.democam")

    def __init__(
        self,
        reactor: Any,
        *,
        fault: str | None = None,
        fault_scope: str = "auto",
        stall_after: int = 2,
        close_after: int = 3,
        slow_seconds: float = 3.0,
        user: str | None = None,
        password: str | None = None,
        send_timeout: float = 5.0,
    ) -> None:
        self.clock: Any = reactor
        self.boot_time: float = reactor.seconds()
        self.faults = Faults(
            name=fault,
            scope=fault_scope,
            stall_after=stall_after,
            close_after=close_after,
            slow_seconds=slow_seconds,
        )
        self.faults.on_change = self._fault_changed
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self.auth = BasicAuth(user, password) if user is not None and password is not None else None
        self.send_timeout = send_timeout
        self.servers: dict[str, WireServer] = {}
        self.ports: dict[str, IListeningPort] = {}
        self.descriptions: dict[str, str] = {}
        self.addresses: dict[str, Any] = {}
        self.streams_active = 0
        self.streams_total = 0
        self.frames_sent = 0
        self.stream_ticks = 0
        self.held: list[Exchange] = []
        self.sessions: set[StreamSession] = set()
        self._waiters = Waiters()
        self._listening: Deferred[Any] | None = None
        self._timers: set[IDelayedCall] = set()

    # --- servers and the gate -------------------------------------------------------------

    def add_server(
        self, role: str, router: Callable[[Exchange], None], *, single_task: bool
    ) -> WireServer:
        """Create the server for ``role``; its requests pass the gate, then go to ``router``."""
        server = WireServer(
            self.clock,
            lambda exchange: self._gate(role, exchange, router),
            name=role,
            single_task=single_task,
        )
        server.on_change.append(self.changed)
        self.servers[role] = server
        return server

    def _gate(self, role: str, exchange: Exchange, router: Callable[[Exchange], None]) -> None:
        fault = self.faults.active(role)
        if fault == "black-hole":
            self.held.append(exchange)
            exchange.on_lost(lambda: self.held.remove(exchange))
            self.changed()
            return
        if fault == "huge-header":
            exchange.head_padding = HUGE_HEADER_BYTES
        if fault == "slow":
            self.later(self.faults.slow_seconds, exchange, self._answer, role, exchange, router)
            return
        self._answer(role, exchange, router)

    def _answer(self, role: str, exchange: Exchange, router: Callable[[Exchange], None]) -> None:
        fault = self.faults.active(role)
        if fault in ("status-401", "status-404", "status-500"):
            code = int(fault.rpartition("-")[2])
            if code == 401:
                exchange.set_header("WWW-Authenticate", BasicAuth("", "").challenge)
            exchange.send_error(code)
            exchange.finish()
            return
        if self.auth is not None and not self.auth.allows(exchange.request.header("Authorization")):
            exchange.set_header("WWW-Authenticate", self.auth.challenge)
            exchange.send_error(401)
            exchange.finish()
            return
        if fault == "close" and role not in self.stream_roles():
            exchange.finish(close=True)
            return
        router(exchange)

    def stream_roles(self) -> tuple[str, ...]:
        """Roles whose main answer is an endless stream (where ``close`` counts frames)."""
        return ("stream",)

    def timer(self, seconds: float, function: Callable[[], None]) -> IDelayedCall:
        """Call ``function`` after ``seconds`` (cancelled by :meth:`drop_all`)."""
        call: IDelayedCall | None = None

        def fire() -> None:
            self._timers.discard(call)
            function()

        call = self.clock.callLater(seconds, fire)
        self._timers.add(call)
        return call

    def later(
        self, seconds: float, exchange: Exchange, function: Callable[..., None], *args: Any
    ) -> None:
        """Call ``function(*args)`` after ``seconds``, unless ``exchange``'s connection is lost."""
        call = self.timer(seconds, lambda: function(*args))

        def cancel() -> None:
            if call.active():
                call.cancel()
            self._timers.discard(call)

        exchange.on_lost(cancel)

    # --- answers shared by the cameras ----------------------------------------------------

    def send_jpeg(self, role: str, exchange: Exchange, jpeg: bytes) -> None:
        """Answer with one JPEG (``Content-Length``), as altered by the fault on ``role``."""
        fault = self.faults.active(role)
        exchange.content_type = "image/jpeg"
        if fault == "not-jpeg":
            body = NOT_JPEG[self.servers[role].requests_total % len(NOT_JPEG)]
        elif fault == "huge":
            body = huge_jpeg()
        elif fault in ("truncated", "stall"):
            exchange.send_head(len(jpeg))
            exchange.write(cut_jpeg(jpeg))
            if fault == "truncated":
                exchange.finish(close=True)
            return
        else:
            body = jpeg
        exchange.send(body)
        exchange.finish()

    def start_stream(
        self,
        exchange: Exchange,
        style: MultipartStyle,
        picture: Callable[[], bytes],
        *,
        interval: Callable[[], float],
        role: str = "stream",
        timestamps: bool = False,
        start_delay: float = 0.0,
        on_end: Callable[[], None] | None = None,
    ) -> StreamSession:
        """Start a :class:`StreamSession` on ``exchange``, counted in ``streams_*``."""
        self.streams_active += 1
        self.streams_total += 1

        def frame_sent() -> None:
            self.frames_sent += 1

        def ticked() -> None:
            self.stream_ticks += 1
            self.changed()

        def ended() -> None:
            self._log.info("Stream ended after {frames} frames", frames=session.frames_sent)
            self.streams_active -= 1
            self.sessions.discard(session)
            if on_end is not None:
                on_end()
            self.changed()

        session = StreamSession(
            exchange,
            style,
            picture,
            interval=interval,
            faults=self.faults,
            role=role,
            uptime=self.uptime if timestamps else None,
            start_delay=start_delay,
            send_timeout=self.send_timeout,
            on_frame=frame_sent,
            on_tick=ticked,
            on_end=ended,
        )
        self.sessions.add(session)
        self._log.info(
            "Stream started ({waiting} more waiting)",
            waiting=len(exchange.server.waiting),
        )
        session.start()
        self.changed()
        return session

    def uptime(self) -> float:
        """Seconds since the emulated camera booted (what its ``X-Timestamp`` shows)."""
        return float(self.clock.seconds() - self.boot_time)

    # --- state and waiting ----------------------------------------------------------------

    def changed(self) -> None:
        """Re-check the conditions tests wait on."""
        self._waiters.check()

    def when(self, condition: Callable[[], bool]) -> Deferred[None]:
        """A Deferred that fires once ``condition()`` holds (checked on every change)."""
        return self._waiters.when(condition)

    def when_streams(self, count: int) -> Deferred[None]:
        """Fires once exactly ``count`` streams are running."""
        return self.when(lambda: self.streams_active == count)

    def when_connections(self, count: int, role: str | None = None) -> Deferred[None]:
        """Fires once exactly ``count`` connections are open (to ``role``'s server, or all)."""
        return self.when(lambda: self.connection_count(role) == count)

    def when_frames(self, count: int) -> Deferred[None]:
        """Fires once ``count`` stream frames were sent in all."""
        return self.when(lambda: self.frames_sent >= count)

    def when_ticks(self, count: int) -> Deferred[None]:
        """Fires once the streams ticked ``count`` times in all (see ``stream_ticks``)."""
        return self.when(lambda: self.stream_ticks >= count)

    def connection_count(self, role: str | None = None) -> int:
        """Open connections to ``role``'s server, or to all servers."""
        servers = self.servers.values() if role is None else [self.servers[role]]
        return sum(len(server.connections) for server in servers)

    # --- listening ------------------------------------------------------------------------

    async def listen(self, descriptions: dict[str, str]) -> None:
        """Listen with each role's server on its endpoint string (``tcp:0``, ``unix:PATH``...)."""
        try:
            for role, description in descriptions.items():
                endpoint = serverFromString(self.clock, description)
                self.ports[role] = await endpoint.listen(self.servers[role])
                self.addresses[role] = self.ports[role].getHost()
                self.descriptions[role] = _relisten_description(self.ports[role], description)
        except BaseException:
            # One port failed: close the others rather than leave them listening.
            for port in self.ports.values():
                await maybeDeferred(port.stopListening)
            self.ports.clear()
            raise
        if self.faults.name == "refuse":
            await self._apply_refusal("refuse")

    def address(self, role: str) -> Any:
        """The address ``role``'s server listens on (an ``IPv4Address``, ``UNIXAddress``...).

        While refusing (``refuse``) it is where the server will listen again.
        """
        return self.addresses[role]

    def url(self, role: str, path: str = "/") -> str:
        """``http://HOST:PORT/path`` of ``role``'s server (``localhost`` for a UNIX socket)."""
        address = self.address(role)
        port = getattr(address, "port", None)
        if port is None:
            return f"http://localhost{path}"
        host = address.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - reporting, not binding
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}{path}"

    def set_fault(self, name: str | None) -> Deferred[None]:
        """Inject a fault (or None); fires once the ports stopped or resumed listening."""
        self.faults.name = name
        return self._settled()

    def _settled(self) -> Deferred[None]:
        """Fires once every change of listening asked for so far is done."""
        waiter: Deferred[None] = Deferred()

        def fire(result: object) -> object:
            waiter.callback(None)
            return result

        if self._listening is None:
            waiter.callback(None)
        else:
            self._listening.addBoth(fire)
        return waiter

    def _fault_changed(self, name: str | None) -> None:
        # Changes apply one after the other, each with the fault current when it runs.
        previous: Deferred[Any] = self._listening if self._listening is not None else succeed(None)

        def apply(_: object) -> Deferred[None]:
            return Deferred.fromCoroutine(self._apply_refusal(self.faults.name))

        def failed(failure: Any) -> None:
            self._log.failure("Cannot change listening", failure)

        self._listening = previous.addBoth(apply).addErrback(failed)

    async def _apply_refusal(self, name: str | None) -> None:
        refusing = name == "refuse"
        for role, server in self.servers.items():
            port = self.ports.get(role)
            if port is None:
                continue
            listening = bool(getattr(port, "connected", True))
            if refusing and listening:
                server.drop_all()
                await maybeDeferred(port.stopListening)
            elif not refusing and not listening:
                endpoint = serverFromString(self.clock, self.descriptions[role])
                self.ports[role] = await endpoint.listen(server)
                self.addresses[role] = self.ports[role].getHost()
        self.changed()

    def drop_all(self) -> None:
        """Reset every connection of every server and cancel every pending answer."""
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()
        for server in self.servers.values():
            server.drop_all()

    async def _stop(self) -> None:
        self.drop_all()
        await self._settled()
        stops = [
            maybeDeferred(port.stopListening)
            for port in self.ports.values()
            if getattr(port, "connected", True)
        ]
        await DeferredList(stops, consumeErrors=True)
        await self.when(lambda: self.connection_count() == 0)

    def stop(self) -> Deferred[None]:
        """Drop every connection and stop listening; fires once all is closed."""
        return Deferred.fromCoroutine(self._stop())


def _relisten_description(port: IListeningPort, description: str) -> str:
    """An endpoint string that listens again where ``port`` listens (its real port number)."""
    address: Any = port.getHost()
    number = getattr(address, "port", None)
    if number is None:
        name = getattr(address, "name", None)
        if isinstance(name, bytes):
            name = name.decode()
        return f"unix:{_escape(name)}" if isinstance(name, str) else description
    kind = "tcp6" if ":" in address.host else "tcp"
    return f"{kind}:{number}:interface={_escape(address.host)}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
