"""A hostile or broken browser gets an error or an RFC 6455 close code, never the camera.

And it costs the other viewers nothing: their frames keep coming and their commands work.
Raw sockets (:class:`RawViewer`) send what Autobahn's client never would.
"""

from __future__ import annotations

import gc
import json
import os
import struct
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from camproxy.viewers.websocket import MESSAGE_BURST, MESSAGE_RATE, SLOW_DOWN, ViewerProtocol
from camproxy.web.auth import SESSION_COOKIE
from tests.conftest import RunningCamera, RunningDaemon, wait_until
from tests.wsclient import RecordingViewer, close_viewer

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_TOO_BIG = 1009

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 1, 2, 8, 9, 10, 0


# --- a hand-written WebSocket client ---------------------------------------------------------


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One frame as a client sends it (masked unless told otherwise), any bits we like."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    length = len(payload)
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack(">H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawViewer(Protocol):
    """Does the opening handshake, then records the server's frames and close code."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self._request = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "\r\n"
        ).encode()
        self.status: defer.Deferred[int] = defer.Deferred()
        self.close_code: defer.Deferred[int | None] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.frames: list[tuple[int, bytes]] = []
        self._buffer = b""
        self._upgraded = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def stop_reading(self) -> None:
        """From now on the kernel's buffers fill up and pings go unanswered."""
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            head, separator, rest = self._buffer.partition(b"\r\n\r\n")
            if not separator:
                return
            self._upgraded = True
            self._buffer = rest
            self.status.callback(int(head.split(b" ", 2)[1]))
        while (frame := self._next_frame()) is not None:
            opcode, payload = frame
            self.frames.append(frame)
            if opcode == CLOSE and not self.close_code.called:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                self.close_code.callback(code)
                self.send(client_frame(CLOSE, payload[:2]))
                assert self.transport is not None
                self.transport.loseConnection()

    def _next_frame(self) -> tuple[int, bytes] | None:
        data = self._buffer
        if len(data) < 2:
            return None
        length, offset = data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                return None
            length, offset = struct.unpack(">H", data[2:4])[0], 4
        elif length == 127:
            if len(data) < 10:
                return None
            length, offset = struct.unpack(">Q", data[2:10])[0], 10
        if len(data) < offset + length:
            return None
        self._buffer = data[offset + length :]
        return data[0] & 0x0F, data[offset : offset + length]

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.status.called:
            self.status.errback(ConnectionError("closed before the handshake finished"))
        if not self.close_code.called:
            self.close_code.callback(None)
        self.lost.callback(None)

    def texts(self) -> list[dict[str, Any]]:
        return [json.loads(payload) for opcode, payload in self.frames if opcode == TEXT]


async def raw_viewer(
    reactor: Any, daemon: RunningDaemon, *, session: bool = True, **headers: str
) -> RawViewer:
    """A raw client after the handshake; ``status`` tells how the handshake went."""
    if session:
        headers.setdefault("Cookie", f"{SESSION_COOKIE}={await daemon.session()}")
    viewer = RawViewer(daemon.port, headers)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
    await endpoint.connect(Factory.forProtocol(lambda: viewer))
    return viewer


def port_of(transport: Any, end: str) -> int:
    """The TCP port of one end (``getHost`` or ``getPeer``) of a transport."""
    return int(getattr(transport, end)().port)


async def within(reactor: Any, seconds: float, waiting: defer.Deferred[Any]) -> Any:
    return await waiting.addTimeout(seconds, reactor)


# --- fixtures ---------------------------------------------------------------------------------


async def camera_and_daemon(
    demo_camera_factory: Any, daemon_factory: Any, **settings: Any
) -> tuple[RunningCamera, RunningDaemon]:
    from camproxy.democam.robocam import DemoCamera

    camera = await demo_camera_factory(camera=DemoCamera(width=160, height=120, quality=50))
    daemon = await daemon_factory(camera_url=camera.url, **settings)
    return camera, daemon


def sent_to_camera(camera: RunningCamera, since: int) -> list[str]:
    """What the camera received since index ``since``, but the proxy's own ``getframe``."""
    return [m for m in camera.camera.received[since:] if m != "getframe"]


async def ready_viewer(daemon: RunningDaemon, name: str = "viewer") -> RecordingViewer:
    """A viewer once the camera's limits and position are known (asked at connect)."""
    viewer = await daemon.viewer(name)
    await viewer.wait_event("position_update")
    return viewer


# --- flooding ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_flooding_viewer_is_throttled_and_costs_the_others_nothing(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera, daemon = await camera_and_daemon(demo_camera_factory, daemon_factory, max_fps=20)
    camera.camera.push_frames = False  # frames only on request: the pacing is the proxy's
    other = await ready_viewer(daemon, "other")
    flooder = await ready_viewer(daemon, "flooder")
    await other.wait_frames(3)
    received_before = len(camera.camera.received)
    frames_before, other_frames_before = daemon.hub.stats.frames_received, len(other.frames)
    message = json.dumps({"type": "get_position"}).encode()
    sent = 0

    def burst() -> None:
        nonlocal sent
        for _ in range(10):
            flooder.sendMessage(message, isBinary=False)
            sent += 1

    started = reactor.seconds()
    flood = task.LoopingCall(burst)
    flood.clock = reactor
    flooding = flood.start(0.01)  # 1,000 messages a second
    try:
        await task.deferLater(reactor, 0.5, lambda: None)
        other.send_json({"type": "servo_command", "command": "up"})
        await within(reactor, 5.0, other.wait_event("position_update", x=90, y=35))
        await wait_until(reactor, lambda: sent >= 2000)
    finally:
        flood.stop()
        await flooding
    # Every message was either passed to the camera or throttled.
    await wait_until(
        reactor,
        lambda: (
            daemon.viewers.throttled + sent_to_camera(camera, received_before).count("get_pos")
            >= sent
        ),
    )
    elapsed = reactor.seconds() - started

    passed = sent_to_camera(camera, received_before).count("get_pos")
    assert passed <= MESSAGE_BURST + MESSAGE_RATE * elapsed + 1
    assert daemon.viewers.throttled >= sent - passed
    assert "error" not in {e["type"] for e in other.events}
    slow_down = [e for e in flooder.of_type("error") if e["message"] == SLOW_DOWN]
    assert 1 <= len(slow_down) <= elapsed + 1
    assert not flooder.closed.called

    # The other viewer saw every frame, at the paced rate.
    camera_frames = daemon.hub.stats.frames_received - frames_before
    assert camera_frames >= 0.5 * 20 * elapsed
    assert len(other.frames) - other_frames_before >= camera_frames - 2
    await close_viewer(flooder)
    await close_viewer(other)


@pytest_twisted.ensureDeferred
async def test_a_throttled_viewer_recovers_once_it_slows_down(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera, daemon = await camera_and_daemon(demo_camera_factory, daemon_factory)
    viewer = await ready_viewer(daemon)
    for _ in range(int(MESSAGE_BURST) + 10):
        viewer.send_json({"type": "get_position"})
    await within(reactor, 5.0, viewer.wait_event("error", message=SLOW_DOWN))
    await task.deferLater(reactor, 1.0, lambda: None)  # the bucket refills at 20/s
    viewer.send_json({"type": "light_command", "state": True})
    await within(reactor, 5.0, viewer.wait_event("light_update", state=True))
    await wait_until(reactor, lambda: "light_on" in camera.camera.received)
    await close_viewer(viewer)


# --- bad messages -----------------------------------------------------------------------------

BAD_TEXT = [
    "",
    "nonsense",
    "null",
    "[]",
    '"up"',
    "{}",
    '{"type":5}',
    '{"type":"getframe"}',
    '{"type":"servo_command","command":"UP"}',
    '{"type":"servo_command","command":"get_pos"}',
    '{"type":"servo_command"}',
    '{"type":"position_command","x":90}',
    '{"type":"position_command","x":1e400,"y":10}',
    '{"type":"position_command","x":NaN,"y":10}',
    '{"type":"position_command","x":99999999999999999999999,"y":10}',
    '{"type":"position_command","x":-1,"y":10}',
    '{"type":"position_command","x":null,"y":10}',
    '{"type":"light_command","state":"true"}',
    '{"type":"light_command","state":null}',
    '{"type":"position_command","x":' + "9" * 5000 + ',"y":1}',
    "[" * 30000,
    '{"a":' * 10000,
]


@pytest_twisted.ensureDeferred
async def test_every_bad_message_gets_an_error_and_never_reaches_the_camera(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera, daemon = await camera_and_daemon(demo_camera_factory, daemon_factory)
    viewer = await ready_viewer(daemon)
    before = len(camera.camera.received)
    assert len(BAD_TEXT) + 4 <= MESSAGE_BURST  # all within the rate limit
    for text in BAD_TEXT:
        viewer.sendMessage(text.encode(), isBinary=False)
    for payload in (b"\xff\xd8\xff\xd9", b'{"type":"get_position"}', b""):
        viewer.sendMessage(payload, isBinary=True)
    # A valid command after them all: its answer means every bad one has been handled.
    viewer.send_json({"type": "get_position"})
    expected = len(BAD_TEXT) + 3
    await within(reactor, 5.0, viewer.wait_for(lambda v: len(v.of_type("error")) >= expected))
    await wait_until(reactor, lambda: "get_pos" in camera.camera.received[before:], 5.0)
    assert sent_to_camera(camera, before) == ["get_pos"]
    assert not any(e["message"] == SLOW_DOWN for e in viewer.of_type("error"))
    assert not viewer.closed.called
    await close_viewer(viewer)


@pytest.mark.parametrize(
    ("payload", "kwargs", "code"),
    [
        pytest.param(b"\xff\xfe\xfd", {}, CLOSE_INVALID_PAYLOAD, id="invalid-utf8"),
        pytest.param(b'{"a":"\xed\xa0\x80"}', {}, CLOSE_INVALID_PAYLOAD, id="utf8-surrogate"),
        pytest.param(b"x" * 70000, {}, CLOSE_TOO_BIG, id="text-over-64k"),
        pytest.param(b"x" * 70000, {"isBinary": True}, CLOSE_TOO_BIG, id="binary-over-64k"),
        pytest.param(
            b"x" * 200_000, {"fragmentSize": 16384}, CLOSE_TOO_BIG, id="fragmented-over-64k"
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_messages_close_with_the_rfc_code(
    reactor: Any,
    demo_camera_factory: Any,
    daemon_factory: Any,
    payload: bytes,
    kwargs: dict[str, Any],
    code: int,
) -> None:
    camera, daemon = await camera_and_daemon(demo_camera_factory, daemon_factory)
    viewer = await ready_viewer(daemon)
    before = len(camera.camera.received)
    viewer.sendMessage(payload, **kwargs)
    _clean, closed_with, _reason = await within(reactor, 5.0, viewer.closed)
    assert closed_with == code
    await wait_until(reactor, lambda: daemon.hub.viewer_count == 0)
    assert sent_to_camera(camera, before) == []


def _huge_header() -> bytes:
    """A text frame header announcing 1 TiB, and a few bytes of it."""
    return bytes([0x81, 0x80 | 127]) + struct.pack(">Q", 1 << 40) + os.urandom(4) + b"xxxx"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(client_frame(TEXT, b"{}", mask=False), CLOSE_PROTOCOL_ERROR, id="unmasked"),
        pytest.param(client_frame(TEXT, b"{}", rsv=4), CLOSE_PROTOCOL_ERROR, id="reserved-bit"),
        pytest.param(client_frame(3, b"{}"), CLOSE_PROTOCOL_ERROR, id="unknown-opcode"),
        pytest.param(client_frame(PING, b"x" * 126), CLOSE_PROTOCOL_ERROR, id="long-ping"),
        pytest.param(client_frame(PING, b"x", fin=False), CLOSE_PROTOCOL_ERROR, id="split-ping"),
        pytest.param(
            client_frame(CONTINUATION, b"{}"), CLOSE_PROTOCOL_ERROR, id="orphan-continuation"
        ),
        pytest.param(
            client_frame(TEXT, b"{", fin=False) + client_frame(TEXT, b"}"),
            CLOSE_PROTOCOL_ERROR,
            id="interleaved-message",
        ),
        # The client is closing anyway: Autobahn fails it by dropping the TCP connection
        # right after its 1002, so the close frame may never be read.
        pytest.param(
            client_frame(CLOSE, struct.pack(">H", 999)),
            (CLOSE_PROTOCOL_ERROR, None),
            id="bad-close-code",
        ),
        pytest.param(
            client_frame(CLOSE, struct.pack(">H", 1000) + b"\xff"),
            (CLOSE_INVALID_PAYLOAD, None),
            id="close-reason-not-utf8",
        ),
        pytest.param(_huge_header(), CLOSE_TOO_BIG, id="announces-1TiB"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_protocol_violations_close_with_the_rfc_code(
    reactor: Any,
    demo_camera_factory: Any,
    daemon_factory: Any,
    data: bytes,
    code: int | tuple[int | None, ...],
) -> None:
    camera, daemon = await camera_and_daemon(demo_camera_factory, daemon_factory)
    viewer = await raw_viewer(reactor, daemon)
    assert await within(reactor, 5.0, viewer.status) == 101
    await wait_until(reactor, lambda: daemon.hub.viewer_count == 1)
    before = len(camera.camera.received)
    viewer.send(data)
    codes = code if isinstance(code, tuple) else (code,)
    assert await within(reactor, 5.0, viewer.close_code) in codes
    await within(reactor, 5.0, viewer.lost)
    await wait_until(reactor, lambda: daemon.hub.viewer_count == 0)
    assert sent_to_camera(camera, before) == []


# --- connections that misbehave -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_half_open_viewer_is_dropped_by_the_ping_timeout(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    _camera, daemon = await camera_and_daemon(demo_camera_factory, daemon_factory)
    # Autobahn's timers have one-second resolution; the defaults are 20 s and 10 s.
    daemon.viewers.setProtocolOptions(autoPingInterval=1.0, autoPingTimeout=1.0)
    other = await ready_viewer(daemon, "other")
    viewer = await raw_viewer(reactor, daemon)
    assert await within(reactor, 5.0, viewer.status) == 101
    await wait_until(reactor, lambda: daemon.hub.viewer_count == 2)
    local_port = port_of(viewer.transport, "getHost")
    (server_side,) = [
        v for v in daemon.viewers.viewers if port_of(v.transport, "getPeer") == local_port
    ]
    viewer.stop_reading()
    await wait_until(reactor, lambda: daemon.hub.viewer_count == 1)
    assert server_side not in daemon.viewers.viewers
    assert "ping timeout" in str(server_side.wasNotCleanReason)
    await within(reactor, 5.0, other.wait_event("client_count", count=1))
    # The well-behaved viewer (it answers pings) is still there, and still watching.
    await within(reactor, 5.0, other.wait_frames(3))
    viewer.transport.abortConnection()  # type: ignore[union-attr]
    await close_viewer(other)


def _live_viewer_protocols() -> int:
    gc.collect()
    return sum(isinstance(o, ViewerProtocol) for o in gc.get_objects())


@pytest_twisted.ensureDeferred
async def test_connect_disconnect_churn_leaks_nothing(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    _camera, daemon = await camera_and_daemon(demo_camera_factory, daemon_factory)
    observer = await ready_viewer(daemon, "observer")
    await observer.wait_frames(2)
    await daemon.session("churn")
    delayed_before = len(reactor.getDelayedCalls())
    protocols_before = _live_viewer_protocols()

    for _ in range(500):
        viewer = await daemon.viewer("churn")
        await close_viewer(viewer)

    await wait_until(reactor, lambda: daemon.hub.viewer_count == 1)
    (remaining,) = daemon.viewers.viewers
    assert remaining.admission is not None and remaining.admission.user == "observer"
    await within(
        reactor, 5.0, observer.wait_for(lambda v: v.of_type("client_count")[-1]["count"] == 1)
    )
    # Timers of closed connections are all cancelled (a few may be the steady ones rescheduled).
    await wait_until(reactor, lambda: len(reactor.getDelayedCalls()) <= delayed_before + 5)
    # Nothing holds on to a closed viewer.
    await wait_until(reactor, lambda: _live_viewer_protocols() <= protocols_before)
    await observer.wait_frames(2)
    await close_viewer(observer)


@pytest_twisted.ensureDeferred
async def test_handshake_without_origin_is_for_non_browsers_with_a_session(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    _camera, daemon = await camera_and_daemon(demo_camera_factory, daemon_factory)
    cases = [
        ({}, True, 101),  # a script: no Origin, a session
        ({"Origin": f"http://127.0.0.1:{daemon.port}"}, True, 101),
        ({"Origin": "http://evil.example"}, True, 403),
        ({}, False, 403),  # no Origin is no excuse for no session
    ]
    for headers, session, status in cases:
        viewer = await raw_viewer(reactor, daemon, session=session, **headers)
        assert await within(reactor, 5.0, viewer.status) == status
        viewer.transport.loseConnection()  # type: ignore[union-attr]
        await within(reactor, 5.0, viewer.lost)
    await wait_until(reactor, lambda: daemon.hub.viewer_count == 0)
