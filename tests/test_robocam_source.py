"""The RoboCam source speaks the firmware's dialect for the hub (CONTRACT §1), socket-free.

A fake protocol stands in for the Autobahn connection; a fake clock drives the settle
query. What goes over the wire is byte-exact firmware text.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

import autobahn.twisted.websocket as autobahn_twisted_websocket
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer
from zope.interface.verify import verifyObject

from camproxy.hub.source import ICameraSource, ISourceListener, Limits
from camproxy.sources.robocam.link import POSITION_SETTLE, CameraSettings, RoboCamSource
from tests.fakes import JPEG

#: RFC 6455's key suffix for Sec-WebSocket-Accept.
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@implementer(ISourceListener)
class RecordingListener:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def source_connected(self) -> None:
        self.calls.append(("connected",))

    def source_disconnected(self) -> None:
        self.calls.append(("disconnected",))

    def frame_received(self, data: bytes) -> bool:
        self.calls.append(("frame", data))
        return data == JPEG

    def frame_request_failed(self) -> None:
        self.calls.append(("request_failed",))

    def position_reported(self, x: int, y: int) -> None:
        self.calls.append(("position", x, y))

    def limits_reported(self, limits: Limits) -> None:
        self.calls.append(("limits", limits))

    def position_refused(self) -> None:
        self.calls.append(("refused",))

    def capabilities_changed(self) -> None:
        self.calls.append(("capabilities",))

    def light_reported(self, on: bool) -> None:
        self.calls.append(("light", on))

    def control_reported(self, holder: str | None, expires_in: float | None) -> None:
        self.calls.append(("control", holder, expires_in))


class FakeProtocol:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        assert not isBinary
        self.sent.append(payload.decode("utf-8"))

    def sendClose(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def connected_source() -> tuple[Clock, RecordingListener, RoboCamSource, FakeProtocol]:
    clock = Clock()
    listener = RecordingListener()
    settings = CameraSettings(url="ws://camera/ws")
    source = RoboCamSource(
        clock, listener, settings, endpoint=UNIXClientEndpoint(clock, "/nonexistent")
    )
    protocol = FakeProtocol()
    source.protocol_opened(protocol)  # type: ignore[arg-type]
    return clock, listener, source, protocol


def test_provides_the_source_interface() -> None:
    _clock, listener, source, _protocol = connected_source()
    assert verifyObject(ICameraSource, source)
    assert verifyObject(ISourceListener, listener)
    assert source.capabilities.pan_tilt and source.capabilities.light and source.paced


def test_asks_limits_and_position_on_every_connect() -> None:
    _clock, _listener, _source, protocol = connected_source()
    assert protocol.sent == ["get_limits", "get_pos"]


def test_connected_only_once_the_camera_answers() -> None:
    """The firmware accepts a sixth client and closes it at once: no status flapping."""
    _clock, listener, source, protocol = connected_source()
    assert listener.calls == [] and not source.connected
    source.protocol_closed(protocol, True, 1000, None)  # type: ignore[arg-type]
    assert ("connected",) not in listener.calls and ("disconnected",) in listener.calls
    source.protocol_opened(protocol)  # type: ignore[arg-type]
    source.text_received('{"min_x":0,"max_x":180,"min_y":0,"max_y":90}')
    assert listener.calls[-2:] == [("connected",), ("limits", Limits(0, 180, 0, 90))]


def test_commands_translate_to_firmware_dialect() -> None:
    clock, _listener, source, protocol = connected_source()
    protocol.sent.clear()
    source.request_frame()
    source.move("up")
    source.move_to(90, 45)
    source.query_position()
    light: Deferred[None] = source.set_light(True)
    source.set_light(False)
    assert light.called
    assert protocol.sent == [
        "getframe",
        "up",
        '{"x":90,"y":45}',
        "get_pos",
        "get_pos",
        "light_on",
        "light_off",
    ]
    # The firmware echoes the position from before a move: ask again once settled.
    clock.advance(POSITION_SETTLE)
    assert protocol.sent[-1] == "get_pos"
    assert clock.getDelayedCalls() == []


def test_camera_messages_reach_the_listener() -> None:
    _clock, listener, source, _protocol = connected_source()
    source.text_received('{"x":100,"y":40}')
    source.text_received("Position out of bounds")
    source.text_received('{"client_count":3}')
    source.text_received("garbage \ufffd")
    source.binary_received(JPEG)
    assert listener.calls == [
        ("connected",),
        ("position", 100, 40),
        ("refused",),
        ("frame", JPEG),
    ]


def test_close_says_goodbye_and_cancels_the_settle_query() -> None:
    clock, _listener, source, protocol = connected_source()
    source.move_to(1, 1)
    source.close()
    assert protocol.closed == (1000, "camproxy closing the link")
    assert clock.getDelayedCalls() == []


def _open_camera_protocol(source: RoboCamSource) -> tuple[Any, StringTransport]:
    """The source's real Autobahn protocol on a string transport, past the handshake."""
    protocol: Any = source.factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    request = transport.value().decode("ascii")
    key = next(
        line.split(":", 1)[1].strip()
        for line in request.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest())
    protocol.dataReceived(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    assert protocol.state == protocol.STATE_OPEN
    return protocol, transport


def test_a_frame_in_many_reads_reaches_the_listener_whole(monkeypatch: Any) -> None:
    """Over WiFi a frame arrives in dozens of TCP reads; the protocol takes each as it is,
    without the debug line Autobahn's own dataReceived formats for every read (colours
    and all, with debug logging off: most of a frame's cost on its way in)."""
    formatted: list[object] = []
    monkeypatch.setattr(autobahn_twisted_websocket, "hltype", formatted.append)
    clock = Clock()
    listener = RecordingListener()
    source = RoboCamSource(
        clock,
        listener,
        CameraSettings(url="ws://camera/ws"),
        endpoint=UNIXClientEndpoint(clock, "/nonexistent"),
    )
    protocol, _transport = _open_camera_protocol(source)
    formatted.clear()
    frame = b"\xff\xd8" + bytes(range(256)) * 117 + b"\xff\xd9"
    message = bytes([0x82, 126]) + struct.pack("!H", len(frame)) + frame
    for start in range(0, len(message), 1460):
        protocol.dataReceived(message[start : start + 1460])
    assert ("frame", frame) in listener.calls
    assert formatted == []
