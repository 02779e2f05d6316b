"""Tests for the emulated ESP32 HTTP cameras (Espressif's CameraWebServer, esp32-cam-webserver).

The models are tested without sockets; the stream framing with a fake clock and a string
transport, byte for byte; the servers on loopback with raw TCP (and UNIX) clients, since what
matters is the exact bytes a camera client must cope with. The helpers at the top (a raw
client, parsers of HTTP heads, chunks and multipart bodies written independently of the
emulators) are shared with ``test_democam_mjpeg.py``.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from PIL import Image, ImageStat
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError, ConnectError, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from camproxy.democam.esp32 import (
    FRAMESIZES,
    CameraWebServer,
    Esp32CameraServer,
    Esp32CamWebserver,
    Esp32CamWebserverServer,
    Sensor,
    listen_esp32_cam_webserver,
    listen_esp32_camera,
    next_port_endpoint,
)
from camproxy.democam.httpcam import (
    ESP_BOUNDARY,
    FAULTS,
    HUGE_HEADER_BYTES,
    HUGE_PART_BYTES,
    WRONG_BOUNDARY,
    Faults,
    HttpCameraServer,
    MultipartStyle,
)
from camproxy.democam.httpwire import atoi, query_value
from camproxy.democam.robocam import main
from tests.processes import free_port, running

STOCK_CONTENT_TYPE = b"multipart/x-mixed-replace;boundary=123456789000000000000987654321"
STOCK_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: " + STOCK_CONTENT_TYPE + b"\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Access-Control-Allow-Origin: *\r\n"
    b"X-Framerate: 60\r\n"
    b"\r\n"
)
DELIMITER = b"\r\n--123456789000000000000987654321\r\n"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# --- helpers: parsing what a camera sends, independently of the emulators --------------------


def is_jpeg(data: bytes) -> bool:
    return data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")


def image(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def brightness(jpeg: bytes) -> float:
    return float(ImageStat.Stat(image(jpeg).convert("L")).mean[0])


@attrs.frozen
class Head:
    status_line: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    raw: bytes

    @property
    def code(self) -> int:
        return int(self.status_line.split(b" ")[1])

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def split_head(data: bytes) -> tuple[Head, bytes] | None:
    """The response head and the bytes after it, or None while the head is incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    headers = tuple(
        (name, value.strip()) for name, _, value in (line.partition(b":") for line in lines[1:])
    )
    return Head(lines[0], headers, data[: end + 4]), data[end + 4 :]


def split_responses(data: bytes) -> list[tuple[Head, bytes]]:
    """Consecutive complete responses with ``Content-Length`` bodies on one connection."""
    responses = []
    while data:
        parsed = split_head(data)
        if parsed is None:
            break
        head, rest = parsed
        length = int(head.get(b"Content-Length") or b"0")
        if len(rest) < length:
            break
        responses.append((head, rest[:length]))
        data = rest[length:]
    return responses


def dechunk(body: bytes) -> tuple[list[bytes], bool]:
    """The complete chunks of a chunked body, and whether the last (empty) chunk came."""
    chunks: list[bytes] = []
    position = 0
    while True:
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            return chunks, False
        size = int(body[position:line_end], 16)
        start = line_end + 2
        if len(body) < start + size + 2:
            return chunks, False
        assert body[start + size : start + size + 2] == b"\r\n", "chunk not followed by CRLF"
        if size == 0:
            return chunks, True
        chunks.append(body[start : start + size])
        position = start + size + 2


@attrs.frozen
class Part:
    headers: dict[bytes, bytes]
    header_lines: tuple[bytes, ...]
    payload: bytes


def multipart(body: bytes, boundary: bytes) -> list[Part]:
    """The complete parts of a multipart body, found by boundary (lengths are not trusted).

    A part is complete once the next delimiter follows it.
    """
    marker = b"--" + boundary
    pieces = body.split(marker)
    parts = []
    # pieces[0] is the preamble; the last piece has no delimiter after it yet.
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n"), piece[:20]
        head_end = piece.find(b"\r\n\r\n")
        lines = tuple(piece[2:head_end].split(b"\r\n")) if head_end > 2 else ()
        headers = {n.lower(): v.strip() for n, _, v in (line.partition(b":") for line in lines)}
        payload = piece[head_end + 4 :]
        assert payload.endswith(b"\r\n"), "a part is not followed by CRLF before the delimiter"
        parts.append(Part(headers, lines, payload[:-2]))
    return parts


class RawClient(Protocol):
    """Records every byte a server sends; lets a test wait for a condition on them."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred[None] = Deferred()
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)
        self._check()

    def _check(self) -> None:
        waiting, self._waiters = self._waiters, []
        for condition, waiter in waiting:
            if condition():
                waiter.callback(None)
            else:
                self._waiters.append((condition, waiter))

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        if condition():
            return
        waiter: Deferred[None] = Deferred()
        self._waiters.append((condition, waiter))
        await waiter.addTimeout(timeout, _reactor())

    def get(self, target: str, *headers: str) -> None:
        lines = [f"GET {target} HTTP/1.1", "Host: camera", *headers, "", ""]
        assert self.transport is not None
        self.transport.write("\r\n".join(lines).encode())

    def close(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def body(self) -> bytes:
        """What came after the response head (nothing while the head is incomplete)."""
        parsed = split_head(self.data)
        return b"" if parsed is None else parsed[1]

    def stream(self) -> bytes:
        """The dechunked body of a chunked response so far."""
        return b"".join(dechunk(self.body())[0])


async def connect(camera: HttpCameraServer, role: str) -> RawClient:
    address = camera.address(role)
    endpoint: Any
    if isinstance(address, IPv4Address):
        endpoint = TCP4ClientEndpoint(_reactor(), address.host, address.port)
    else:
        endpoint = UNIXClientEndpoint(_reactor(), address.name)
    client: RawClient = await connectProtocol(endpoint, RawClient())
    return client


async def fetch(camera: HttpCameraServer, role: str, target: str, *headers: str) -> RawClient:
    """One request on a new connection; returns once a complete answer (or close) came."""
    client = await connect(camera, role)
    client.get(target, *headers)
    await client.until(lambda: bool(split_responses(client.data)) or client.closed.called)
    return client


@pytest_twisted.async_yield_fixture
async def cameras() -> AsyncIterator[list[HttpCameraServer]]:
    """Cameras a test starts go in this list; all are stopped afterwards."""
    started: list[HttpCameraServer] = []
    yield started
    for camera in started:
        await camera.stop()
        assert not camera.sessions


LOOPBACK = "tcp:0:interface=127.0.0.1"


async def stock(cameras: list[HttpCameraServer], **knobs: Any) -> Esp32CameraServer:
    knobs.setdefault("camera", CameraWebServer(sensor=Sensor(framesize=1)))
    knobs.setdefault("fps", 25.0)
    camera = await listen_esp32_camera(_reactor(), LOOPBACK, LOOPBACK, **knobs)
    cameras.append(camera)
    return camera


async def webserver(cameras: list[HttpCameraServer], **knobs: Any) -> Esp32CamWebserverServer:
    knobs.setdefault("camera", Esp32CamWebserver(sensor=Sensor(framesize=1, quality=12)))
    knobs.setdefault("fps", 25.0)
    knobs.setdefault("stream_start_delay", 0.0)
    camera = await listen_esp32_cam_webserver(_reactor(), LOOPBACK, LOOPBACK, **knobs)
    cameras.append(camera)
    return camera


def stock_frames(client: RawClient) -> list[bytes]:
    return [part.payload for part in multipart(client.stream(), ESP_BOUNDARY.encode())]


# --- firmware details that need no socket -----------------------------------------------------


def test_atoi_and_query_values_behave_like_the_firmware() -> None:
    assert [atoi(t) for t in ["255", " 12abc", "-3", "abc", "", "+7", "99999999999"]] == [
        255,
        12,
        -3,
        0,
        0,
        7,
        2**31 - 1,
    ]
    assert query_value("var=led_intensity&val=255", "val") == "255"
    assert query_value("val=1&var=quality", "var") == "quality"
    assert query_value("var=a%20b&val=1", "var") == "a%20b"  # never URL-decoded
    assert query_value("var&val=1", "var") is None
    assert query_value("xvar=1", "var") is None
    assert query_value("var=" + "x" * 32, "var") is None  # does not fit the 32-byte buffer
    assert query_value("var=" + "x" * 31, "var") == "x" * 31
    assert query_value(None, "var") is None


def test_stock_status_is_byte_for_byte_the_firmware_json() -> None:
    camera = CameraWebServer()
    assert camera.status_json() == (
        b'{"0xd3":8,"0x111":0,"0x132":137,"xclk":20,"pixformat":4,"framesize":5,'
        b'"quality":10,"brightness":0,"contrast":0,"saturation":0,"sharpness":0,'
        b'"special_effect":0,"wb_mode":0,"awb":1,"awb_gain":1,"aec":1,"aec2":0,"ae_level":0,'
        b'"aec_value":204,"agc":1,"agc_gain":0,"gainceiling":0,"bpc":0,"wpc":1,"raw_gma":1,'
        b'"lenc":1,"hmirror":0,"dcw":1,"colorbar":0,"led_intensity":0}'
    )
    assert b"vflip" not in camera.status_json()  # the stock firmware never reports it


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (None, 404),
        ("", 404),
        ("var=quality", 404),
        ("val=1", 404),
        ("var=quality&val=12", 200),
        ("val=12&var=quality", 200),
        ("var=led_intensity&val=255", 200),
        ("var=lamp&val=100", 500),
        ("var=nonsense&val=1", 500),
        ("var=brightness&val=3", 500),
        ("var=brightness&val=-2", 200),
        ("var=special_effect&val=7", 500),
        ("var=wb_mode&val=4", 200),
        ("var=face_detect&val=1", 500),
        ("var=" + "q" * 32 + "&val=1", 404),
    ],
)
def test_stock_control_answers_like_the_firmware(query: str | None, status: int) -> None:
    assert CameraWebServer().control(query) == status


def test_stock_control_values() -> None:
    camera = CameraWebServer()
    assert camera.control("var=framesize&val=99") == 200
    assert camera.sensor.framesize == len(FRAMESIZES) - 1  # past UXGA is UXGA
    camera.control("var=quality&val=12abc")
    camera.control("var=agc_gain&val=99")
    camera.control("var=led_intensity&val=-1")
    status = json.loads(camera.status_json())
    assert (status["quality"], status["agc_gain"]) == (12, 30)
    assert status["led_intensity"] == 4294967295  # printed with %u
    assert camera.controls[-1] == ("led_intensity", -1)


def test_stock_led_shines_while_streaming_or_flashing_only() -> None:
    camera = CameraWebServer(led_duty=300)
    assert camera.led_level == 0
    camera.stream_started()
    assert camera.led_level == 255  # clamped while streaming
    camera.stream_ended()
    assert camera.begin_capture() == pytest.approx(0.150)
    assert camera.led_level == 255 and camera.flashes == 1
    assert is_jpeg(camera.end_capture())
    assert camera.led_level == 0 and camera.captures == 1
    camera.led_duty = 0
    camera.begin_capture()
    camera.end_capture()
    assert (camera.captures, camera.flashes) == (2, 1)  # an LED at 0 does not flash


def test_stock_build_without_led_and_with_face_detection() -> None:
    dark = CameraWebServer(led_illuminator=False)
    assert dark.status_json().endswith(b',"led_intensity":-1}')
    assert dark.control("var=led_intensity&val=255") == 500
    assert dark.begin_capture() == 0.0
    faces = CameraWebServer(face_detection=True)
    assert faces.control("var=face_detect&val=1") == 200
    assert faces.status_json().endswith(b',"led_intensity":0,"face_detect":1}')


def test_the_picture_follows_framesize_and_the_led() -> None:
    now = [0.0]
    camera = CameraWebServer(now=lambda: now[0], sensor=Sensor(framesize=1))
    dark = camera.picture()
    assert image(dark).size == (160, 120)
    again = camera.picture()
    assert dark != again  # the clock drawn on it moved on by at least 1 ms
    camera.control("var=led_intensity&val=255")
    camera.stream_started()
    assert brightness(camera.picture()) > brightness(dark) * 1.5
    camera.control("var=framesize&val=5")
    assert image(camera.picture()).size == (320, 240)


def test_cam_webserver_status_is_byte_for_byte_the_firmware_json() -> None:
    camera = Esp32CamWebserver(stream_url="http://10.0.0.181:81/")
    assert camera.status_json() == (
        b'{"lamp":0,"autolamp":0,"min_frame_time":0,"framesize":9,"quality":12,"xclk":8,'
        b'"brightness":0,"contrast":0,"saturation":0,"sharpness":0,"special_effect":0,'
        b'"wb_mode":0,"awb":1,"awb_gain":1,"aec":1,"aec2":0,"ae_level":0,"aec_value":204,'
        b'"agc":1,"agc_gain":0,"gainceiling":0,"bpc":0,"wpc":1,"raw_gma":1,"lenc":1,'
        b'"vflip":0,"hmirror":0,"dcw":1,"colorbar":0,"cam_name":"ESP32 camera server",'
        b'"code_ver":"Mar 10 2022 @ 14:00:45","rotate":"0","stream_url":"http://10.0.0.181:81/"}'
    )
    assert camera.info_json() == (
        b'{"cam_name":"ESP32 camera server","rotate":"0","stream_url":"http://10.0.0.181:81/"}'
    )


def test_cam_webserver_lamp() -> None:
    camera = Esp32CamWebserver()
    assert camera.control("var=lamp&val=150") == 200
    assert camera.lamp == 100 and camera.lamp_level == 511
    assert camera.control("var=lamp&val=-5") == 200 and camera.lamp_level == 0
    assert camera.control("var=led_intensity&val=255") == 500  # not this firmware's variable
    camera.control("var=lamp&val=50")
    camera.control("var=autolamp&val=1")
    assert camera.lamp_level == 0  # autolamp: only while in use
    camera.stream_started()
    assert camera.lamp_level > 0
    camera.stream_ended()
    assert camera.begin_capture() == pytest.approx(0.150) and camera.lamp_level > 0
    camera.end_capture()
    assert (camera.images_served, camera.streams_served, camera.flashes) == (1, 1, 1)
    assert json.loads(camera.status_json())["lamp"] == 50


def test_cam_webserver_without_lamp_and_other_variables() -> None:
    camera = Esp32CamWebserver(lamp=-1)
    assert json.loads(camera.status_json())["lamp"] == -1
    assert camera.control("var=lamp&val=100") == 500
    assert camera.control("var=autolamp&val=1") == 500
    assert camera.control("var=min_frame_time&val=200") == 200
    assert camera.min_frame_seconds == pytest.approx(0.2)
    assert camera.control("var=rotate&val=-90") == 200
    assert json.loads(camera.status_json())["rotate"] == "-90"
    assert camera.control("var=xclk&val=20") == 200
    assert camera.control("var=vflip&val=1") == 200
    assert json.loads(camera.status_json())["vflip"] == 1
    assert camera.control("var=save_prefs&val=0") == 200
    assert camera.control("var=reboot&val=0") == 0  # never answered
    assert camera.control("var=quality") == 404


def test_multipart_content_types() -> None:
    assert MultipartStyle().content_type.encode() == STOCK_CONTENT_TYPE
    assert MultipartStyle(boundary="frame", quote=True, space=True).content_type == (
        'multipart/x-mixed-replace; boundary="frame"'
    )
    with pytest.raises(ValueError):
        MultipartStyle(boundary='a"b')


def test_next_port_endpoint() -> None:
    assert next_port_endpoint("tcp:80") == "tcp:81"
    assert next_port_endpoint("tcp:8080:interface=127.0.0.1") == "tcp:8081:interface=127.0.0.1"
    assert next_port_endpoint("tcp:port=80:interface=::1") == "tcp:port=81:interface=::1"
    assert next_port_endpoint("tcp:0:interface=127.0.0.1") == "tcp:0:interface=127.0.0.1"
    assert next_port_endpoint("unix:/tmp/cam.sock") is None


def test_faults_validate_and_scope() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Faults(name="gremlins")
    with pytest.raises(ValueError, match="scope"):
        Faults(scope="everywhere")
    faults = Faults(name="stall")
    assert (faults.active("stream"), faults.active("control")) == ("stall", None)
    faults.name = "status-500"
    assert faults.active("control") == faults.active("stream") == "status-500"
    faults.scope = "stream"
    assert faults.active("control") is None
    with pytest.raises(ValueError):
        faults.name = "gremlins"


# --- the stream, byte for byte, on a fake clock -------------------------------------------------


def wire(camera: HttpCameraServer, role: str) -> tuple[Any, StringTransport]:
    protocol = camera.servers[role].buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_stock_stream_bytes_on_a_fake_clock() -> None:
    clock = Clock()
    camera = Esp32CameraServer(
        clock, CameraWebServer(now=clock.seconds, sensor=Sensor(framesize=0)), fps=10
    )
    protocol, transport = wire(camera, "stream")
    protocol.dataReceived(b"GET /stream HTTP/1.1\r\nHost: camera\r\n\r\n")
    clock.advance(0.1)
    data = transport.value()
    assert data.startswith(STOCK_STREAM_HEAD)
    chunks, ended = dechunk(data[len(STOCK_STREAM_HEAD) :])
    assert not ended
    # Three chunks a frame: the delimiter, the part headers, the JPEG.
    assert len(chunks) == 6
    assert chunks[0] == chunks[3] == DELIMITER
    first = chunks[1]
    assert re.fullmatch(
        rb"Content-Type: image/jpeg\r\nContent-Length: (\d+)\r\nX-Timestamp: 0\.000000\r\n\r\n",
        first,
    )
    assert int(first.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(chunks[2])
    assert b"X-Timestamp: 0.100000\r\n" in chunks[4]
    assert is_jpeg(chunks[2]) and is_jpeg(chunks[5]) and chunks[2] != chunks[5]
    assert image(chunks[2]).size == (96, 96)
    assert camera.camera.streaming and camera.streams_active == 1
    transport.loseConnection()
    protocol.connectionLost(None)
    assert not camera.camera.streaming and camera.streams_active == 0
    assert clock.getDelayedCalls() == []


def test_cam_webserver_stream_bytes_on_a_fake_clock() -> None:
    clock = Clock()
    model = Esp32CamWebserver(now=clock.seconds, sensor=Sensor(framesize=0), min_frame_time=500)
    camera = Esp32CamWebserverServer(clock, model, fps=10)
    protocol, transport = wire(camera, "stream")
    protocol.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert transport.value() == b""  # it blinks its LED first
    clock.advance(0.225)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + STOCK_CONTENT_TYPE + b"\r\n"
        b"Transfer-Encoding: chunked\r\nAccess-Control-Allow-Origin: *\r\n\r\n"
    )
    data = transport.value()
    assert data.startswith(head)
    chunks, _ = dechunk(data[len(head) :])
    # The first boundary at once, then part headers, JPEG, boundary for every frame.
    assert chunks[0] == DELIMITER
    assert re.fullmatch(rb"Content-Type: image/jpeg\r\nContent-Length: \d+\r\n\r\n", chunks[1])
    assert is_jpeg(chunks[2]) and chunks[3] == DELIMITER
    assert len(chunks) == 4
    clock.advance(0.4)
    assert len(dechunk(transport.value()[len(head) :])[0]) == 4  # min_frame_time 500 ms
    clock.advance(0.1)
    assert len(dechunk(transport.value()[len(head) :])[0]) == 7
    assert model.stream_count == 1
    protocol.connectionLost(None)
    assert (model.stream_count, model.streams_served) == (0, 1)
    assert clock.getDelayedCalls() == []


def test_a_stream_whose_client_stops_reading_is_dropped_after_the_send_timeout() -> None:
    clock = Clock()
    camera = Esp32CameraServer(
        clock, CameraWebServer(now=clock.seconds, sensor=Sensor(framesize=0)), fps=10
    )
    protocol, transport = wire(camera, "stream")
    protocol.dataReceived(b"GET /stream HTTP/1.1\r\n\r\n")
    protocol.pauseProducing()  # the socket's send buffer is full
    sent = len(transport.value())
    clock.advance(4.9)
    assert len(transport.value()) == sent  # like the firmware, blocked in send
    protocol.resumeProducing()
    clock.advance(0.1)
    assert len(transport.value()) > sent
    protocol.pauseProducing()
    clock.pump([0.1] * 51)
    assert transport.disconnected  # aborted
    protocol.connectionLost(None)
    assert clock.getDelayedCalls() == []


def test_wire_refuses_what_esp_idf_refuses() -> None:
    clock = Clock()
    camera = Esp32CameraServer(clock)
    for request, status in [
        (b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n\r\n", b"414 URI Too Long"),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"b" * 600 + b"\r\n\r\n", b"431"),
        (b"garbage\r\n\r\n", b"400 Bad Request"),
        (b"GET / HTTP/2.0\r\n\r\n", b"505"),
    ]:
        protocol, transport = wire(camera, "control")
        protocol.dataReceived(request)
        assert transport.value().startswith(b"HTTP/1.1 " + status)
        assert transport.disconnecting
        protocol.connectionLost(None)


def test_requests_wait_for_the_single_task() -> None:
    clock = Clock()
    camera = Esp32CameraServer(clock, CameraWebServer(now=clock.seconds))
    first, first_transport = wire(camera, "control")
    second, second_transport = wire(camera, "control")
    first.dataReceived(b"GET /capture HTTP/1.1\r\n\r\n")
    second.dataReceived(b"GET /status HTTP/1.1\r\n\r\n")
    assert second_transport.value() == b""  # the task is busy flashing the LED for /capture
    assert camera.control.waiting[0].request.path == "/status"
    clock.advance(0.150)
    head = split_head(first_transport.value())
    assert head is not None and head[0].get(b"X-Timestamp") == b"0.150000"
    assert split_head(second_transport.value()) is not None


# --- on loopback -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stock_stream_on_loopback(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras)
    client = await connect(camera, "stream")
    client.get("/stream")
    await client.until(lambda: len(stock_frames(client)) >= 3)
    assert client.data.startswith(STOCK_STREAM_HEAD)
    frames = stock_frames(client)
    assert all(is_jpeg(frame) for frame in frames)
    assert len(set(frames)) == len(frames)
    assert image(frames[0]).size == (160, 120)
    parts = multipart(client.stream(), ESP_BOUNDARY.encode())
    assert all(int(p.headers[b"content-length"]) == len(p.payload) for p in parts)
    assert all(re.fullmatch(rb"\d+\.\d{6}", p.headers[b"x-timestamp"]) for p in parts)
    assert [line.split(b":")[0] for line in parts[0].header_lines] == [
        b"Content-Type",
        b"Content-Length",
        b"X-Timestamp",
    ]
    assert (camera.streams_active, camera.streams_total) == (1, 1)
    assert camera.camera.now == _reactor().seconds  # the server gave the model its clock
    client.close()
    await camera.when_streams(0)


@pytest_twisted.ensureDeferred
async def test_one_stream_at_a_time(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras)
    first = await connect(camera, "stream")
    first.get("/stream")
    await first.until(lambda: len(stock_frames(first)) >= 1)
    second = await connect(camera, "stream")
    second.get("/stream")
    await camera.when(lambda: len(camera.stream.waiting) == 1)
    assert camera.connection_count("stream") == 2  # accepted...
    seen = len(stock_frames(first))
    await first.until(lambda: len(stock_frames(first)) >= seen + 3)
    assert second.data == b""  # ...and silent while the first streams
    assert (camera.streams_active, camera.streams_total) == (1, 1)
    status = await fetch(camera, "control", "/status")  # the control server is another task
    assert split_responses(status.data)[0][0].code == 200
    first.close()
    await second.until(lambda: len(stock_frames(second)) >= 2)
    assert second.data.startswith(STOCK_STREAM_HEAD)
    assert (camera.streams_active, camera.streams_total) == (1, 2)
    second.close()
    await camera.when_streams(0)


@pytest_twisted.ensureDeferred
async def test_control_lights_the_led_in_status_and_stream(
    cameras: list[HttpCameraServer],
) -> None:
    camera = await stock(cameras)
    client = await connect(camera, "stream")
    client.get("/stream")
    await client.until(lambda: len(stock_frames(client)) >= 1)
    dark = stock_frames(client)[0]
    control = await fetch(camera, "control", "/control?var=led_intensity&val=255")
    [(head, body)] = split_responses(control.data)
    assert head.raw == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n"
        b"Access-Control-Allow-Origin: *\r\n\r\n"
    )
    status = await fetch(camera, "control", "/status")
    [(head, body)] = split_responses(status.data)
    assert head.get(b"Content-Type") == b"application/json"
    assert head.get(b"Access-Control-Allow-Origin") == b"*"
    assert json.loads(body)["led_intensity"] == 255
    seen = len(stock_frames(client))
    await client.until(lambda: len(stock_frames(client)) >= seen + 2)
    assert brightness(stock_frames(client)[-1]) > brightness(dark) * 1.5
    assert camera.camera.led_level == 255
    client.close()
    await camera.when_streams(0)
    assert camera.camera.led_level == 0
    assert camera.camera.captures == 0  # nothing here ever fired the flash


@pytest_twisted.ensureDeferred
async def test_control_errors_on_the_wire(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras)
    client = await connect(camera, "control")
    # 500 keeps the connection (the handler succeeded in sending it), 404 closes it.
    client.get("/control?var=nonsense&val=1")
    client.get("/status")
    client.get("/control?var=quality")
    client.get("/status")
    await client.closed.addTimeout(10, _reactor())
    responses = split_responses(client.data)
    assert [head.code for head, _ in responses] == [500, 200, 404]
    assert responses[0][1] == b"Server has encountered an unexpected error"
    assert responses[0][0].raw == (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n"
        b"Content-Length: 42\r\n\r\n"
    )
    assert responses[2][1] == b"Nothing matches the given URI"
    unknown = await fetch(camera, "control", "/nothing")
    assert split_responses(unknown.data)[0][0].code == 404
    posted = await connect(camera, "control")
    assert posted.transport is not None
    posted.transport.write(b"POST /control HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    await posted.closed.addTimeout(10, _reactor())
    assert split_responses(posted.data)[0][0].code == 405
    wrong_port = await fetch(camera, "stream", "/status")
    assert split_responses(wrong_port.data)[0][0].code == 404


@pytest_twisted.ensureDeferred
async def test_capture_fires_the_flash_and_is_counted(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras)
    await fetch(camera, "control", "/control?var=led_intensity&val=128")
    reactor = _reactor()
    start = reactor.seconds()
    client = await fetch(camera, "control", "/capture")
    assert reactor.seconds() - start >= 0.14
    [(head, body)] = split_responses(client.data)
    assert head.raw.startswith(
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
        b"Content-Disposition: inline; filename=capture.jpg\r\n"
        b"Access-Control-Allow-Origin: *\r\nX-Timestamp: " % len(body)
    )
    assert is_jpeg(body)
    assert (camera.camera.captures, camera.camera.flashes) == (1, 1)
    assert camera.camera.led_level == 0


@pytest_twisted.ensureDeferred
async def test_stock_pages_and_other_routes(cameras: list[HttpCameraServer]) -> None:
    import gzip

    camera = await stock(cameras)
    index = await fetch(camera, "control", "/")
    [(head, body)] = split_responses(index.data)
    assert head.get(b"Content-Encoding") == b"gzip"
    assert b"<html" in gzip.decompress(body)
    bmp = await fetch(camera, "control", "/bmp")
    [(head, body)] = split_responses(bmp.data)
    assert head.get(b"Content-Type") == b"image/x-windows-bmp" and body.startswith(b"BM")
    await fetch(camera, "control", "/reg?reg=300&mask=255&val=77")
    greg = await fetch(camera, "control", "/greg?reg=300&mask=255")
    assert split_responses(greg.data)[0][1] == b"77"
    xclk = await fetch(camera, "control", "/xclk?xclk=10")
    assert split_responses(xclk.data)[0][0].code == 200
    assert json.loads(camera.camera.status_json())["xclk"] == 10
    for target, code in [("/xclk", 404), ("/pll?mul=1", 200), ("/resolution", 404)]:
        answer = await fetch(camera, "control", target)
        assert split_responses(answer.data)[0][0].code == code


@pytest_twisted.ensureDeferred
async def test_cam_webserver_differences(cameras: list[HttpCameraServer]) -> None:
    camera = await webserver(cameras)
    stream = await fetch(camera, "stream", "/stream")
    assert split_responses(stream.data)[0][0].code == 404  # the stream moved to /
    info = await fetch(camera, "stream", "/info")
    assert json.loads(split_responses(info.data)[0][1])["stream_url"] == camera.url("stream")
    view = await fetch(camera, "stream", "/view")
    assert b"<img" in split_responses(view.data)[0][1]
    status = await fetch(camera, "control", "/status")
    fields = json.loads(split_responses(status.data)[0][1])
    assert fields["lamp"] == 0 and "led_intensity" not in fields
    assert fields["stream_url"] == camera.url("stream", "/")
    lamp = await fetch(camera, "control", "/control?var=lamp&val=100")
    assert split_responses(lamp.data)[0][0].code == 200
    led = await fetch(camera, "control", "/control?var=led_intensity&val=255")
    assert split_responses(led.data)[0][0].code == 500
    assert camera.camera.lamp_level == 511

    client = await connect(camera, "stream")
    client.get("/")
    await client.until(lambda: len(multipart(client.stream(), ESP_BOUNDARY.encode())) >= 2)
    parts = multipart(client.stream(), ESP_BOUNDARY.encode())
    assert client.stream().startswith(DELIMITER)
    assert all(set(p.headers) == {b"content-type", b"content-length"} for p in parts)
    assert all(is_jpeg(p.payload) for p in parts)
    assert brightness(parts[-1].payload) > 60
    head = split_head(client.data)
    assert head is not None and head[0].get(b"X-Framerate") is None

    # /stop ends the stream where it is; the connection stays open (the firmware returns OK).
    await fetch(camera, "control", "/stop")
    await camera.when_streams(0)
    assert not client.closed.called
    client.get("/info")
    await client.until(lambda: b'"cam_name"' in client.data)
    assert camera.camera.streams_served == 1
    client.close()


@pytest_twisted.ensureDeferred
async def test_cam_webserver_before_3_served_the_stream_at_stream(
    cameras: list[HttpCameraServer],
) -> None:
    camera = await webserver(cameras, stream_paths=("/", "/stream"))
    for path in ("/stream", "/"):
        client = await connect(camera, "stream")
        client.get(path)
        await client.until(lambda c=client: len(multipart(c.stream(), ESP_BOUNDARY.encode())) >= 1)  # type: ignore[misc]
        client.close()
        await camera.when_streams(0)


@pytest_twisted.ensureDeferred
async def test_cam_webserver_reboot_drops_everything(cameras: list[HttpCameraServer]) -> None:
    camera = await webserver(cameras, reboot_seconds=0.1)
    stream = await connect(camera, "stream")
    stream.get("/")
    await camera.when_frames(1)
    control = await connect(camera, "control")
    control.get("/control?var=reboot&val=1")
    await defer.gatherResults([stream.closed, control.closed]).addTimeout(10, _reactor())
    assert split_head(control.data) is None  # never answered
    assert camera.camera.reboots == 1


@pytest_twisted.ensureDeferred
async def test_unix_sockets(cameras: list[HttpCameraServer], tmp_path: Path) -> None:
    reactor = _reactor()
    model = CameraWebServer(now=reactor.seconds, sensor=Sensor(framesize=0))
    camera = await listen_esp32_camera(
        reactor,
        f"unix:{tmp_path / 'control.sock'}",
        f"unix:{tmp_path / 'stream.sock'}",
        camera=model,
        fps=25,
    )
    cameras.append(camera)
    status = await fetch(camera, "control", "/status")
    assert json.loads(split_responses(status.data)[0][1])["framesize"] == 0
    client = await connect(camera, "stream")
    client.get("/stream")
    await client.until(lambda: len(stock_frames(client)) >= 2)
    assert camera.url("stream", "/stream") == "http://localhost/stream"
    await camera.set_fault("refuse")
    with pytest.raises(ConnectError):  # the socket file is gone
        await connect(camera, "control")
    await client.closed  # refusing drops the open connections too
    await camera.set_fault(None)
    status = await fetch(camera, "control", "/status")
    assert split_responses(status.data)[0][0].code == 200


@pytest_twisted.ensureDeferred
async def test_basic_auth(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, user="admin", password="s3cret")
    url = camera.url("control", "/status")
    response = await treq.get(url, persistent=False)
    assert response.code == 401
    assert response.headers.getRawHeaders("WWW-Authenticate") == ['Basic realm="democam"']
    await response.content()
    wrong = await treq.get(url, auth=("admin", "nope"), persistent=False)
    assert wrong.code == 401
    await wrong.content()
    right = await treq.get(url, auth=("admin", "s3cret"), persistent=False)
    assert right.code == 200
    assert "led_intensity" in json.loads(await right.content())
    stream = await fetch(camera, "stream", "/stream")
    assert split_responses(stream.data)[0][0].code == 401
    client = await connect(camera, "stream")
    client.get("/stream", "Authorization: Basic YWRtaW46czNjcmV0")
    await client.until(lambda: len(stock_frames(client)) >= 1)
    client.close()


@pytest_twisted.ensureDeferred
async def test_stop_closes_every_connection(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="slow", slow_seconds=30.0, fault_scope="control")
    streaming = await connect(camera, "stream")
    streaming.get("/stream")
    waiting = await connect(camera, "stream")
    waiting.get("/stream")
    slow = await connect(camera, "control")
    slow.get("/status")
    idle = await connect(camera, "control")
    await camera.when(lambda: len(camera.stream.waiting) == 1 and len(camera.control.current) == 1)
    cameras.remove(camera)
    await camera.stop()
    await defer.gatherResults([c.closed for c in (streaming, waiting, slow, idle)])
    assert camera.connection_count() == 0 and not camera.sessions
    assert not any(call.active() for call in camera._timers)


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_leaves_nothing_listening(cameras: list[HttpCameraServer]) -> None:
    first = await stock(cameras)
    busy = first.address("stream").port
    camera = Esp32CameraServer(_reactor())
    with pytest.raises(CannotListenError):
        await camera.listen({"control": LOOPBACK, "stream": f"tcp:{busy}:interface=127.0.0.1"})
    assert camera.ports == {}


# --- faults, on loopback ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fault_stall(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="stall", stall_after=2)
    client = await connect(camera, "stream")
    client.get("/stream")
    await camera.when_frames(2)
    await camera.when_ticks(8)
    assert camera.frames_sent == 2
    await client.until(lambda: len(stock_frames(client)) >= 1)
    assert not client.closed.called
    status = await fetch(camera, "control", "/status")  # scope auto: the video only
    assert split_responses(status.data)[0][0].code == 200
    await camera.set_fault(None)
    await camera.when_frames(4)
    client.close()


@pytest_twisted.ensureDeferred
async def test_fault_close(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="close", close_after=3)
    client = await connect(camera, "stream")
    client.get("/stream")
    await client.closed.addTimeout(10, _reactor())
    body = client.body()
    assert not dechunk(body)[1]  # no last chunk: the connection just closed
    assert client.stream().count(DELIMITER) == 3


@pytest_twisted.ensureDeferred
async def test_fault_wrong_boundary(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="wrong-boundary")
    client = await connect(camera, "stream")
    client.get("/stream")
    await client.until(lambda: client.stream().count(WRONG_BOUNDARY.encode()) >= 2)
    head = split_head(client.data)
    assert head is not None and head[0].get(b"Content-Type") == STOCK_CONTENT_TYPE
    assert ESP_BOUNDARY.encode() not in client.stream()
    assert all(is_jpeg(p.payload) for p in multipart(client.stream(), WRONG_BOUNDARY.encode()))
    client.close()


@pytest_twisted.ensureDeferred
async def test_fault_truncated(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="truncated")
    client = await connect(camera, "stream")
    client.get("/stream")
    await client.until(lambda: len(multipart(client.stream(), ESP_BOUNDARY.encode())) >= 2)
    first, second = multipart(client.stream(), ESP_BOUNDARY.encode())[:2]
    assert first.payload.startswith(b"\xff\xd8") and not is_jpeg(first.payload)
    assert int(first.headers[b"content-length"]) == len(first.payload)  # a JPEG cut off
    assert int(second.headers[b"content-length"]) > len(second.payload)  # a part cut short
    jpeg = await fetch(camera, "control", "/capture")  # scope auto: not the control server
    assert is_jpeg(split_responses(jpeg.data)[0][1])
    client.close()


@pytest_twisted.ensureDeferred
async def test_fault_not_jpeg_then_recovery(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="not-jpeg")
    client = await connect(camera, "stream")
    client.get("/stream")
    await client.until(lambda: len(stock_frames(client)) >= 2)
    assert not any(frame.startswith(b"\xff\xd8") for frame in stock_frames(client))
    await camera.set_fault(None)
    seen = len(stock_frames(client))
    await client.until(lambda: len(stock_frames(client)) >= seen + 2)
    assert is_jpeg(stock_frames(client)[-1])
    client.close()


@pytest_twisted.ensureDeferred
async def test_fault_huge_part(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="huge")
    client = await connect(camera, "stream")
    client.get("/stream")
    await client.until(lambda: len(stock_frames(client)) >= 3, timeout=30)
    frames = stock_frames(client)
    assert len(frames[0]) == HUGE_PART_BYTES > 10_000_000 and is_jpeg(frames[0])
    assert len(frames[1]) < 100_000 and is_jpeg(frames[1])  # once per stream
    client.close()


@pytest_twisted.ensureDeferred
async def test_fault_huge_headers(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="huge-header")
    status = await fetch(camera, "control", "/status")
    [(head, body)] = split_responses(status.data)
    assert len(head.raw) > HUGE_HEADER_BYTES
    assert head.get(b"X-Padding") is not None and json.loads(body)["framesize"] == 1
    await camera.set_fault("huge-part-header")
    client = await connect(camera, "stream")
    client.get("/stream")
    await client.until(lambda: len(stock_frames(client)) >= 2, timeout=30)
    first, second = multipart(client.stream(), ESP_BOUNDARY.encode())[:2]
    assert len(first.headers[b"x-padding"]) > HUGE_HEADER_BYTES - 100
    assert b"x-padding" not in second.headers
    client.close()


@pytest_twisted.ensureDeferred
async def test_fault_black_hole(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="black-hole")
    control = await connect(camera, "control")
    control.get("/status")
    stream = await connect(camera, "stream")
    stream.get("/stream")
    await camera.when(lambda: len(camera.held) == 2)
    assert control.data == stream.data == b""
    assert not control.closed.called
    control.close()
    await camera.when(lambda: len(camera.held) == 1)
    stream.close()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("code", [401, 404, 500])
async def test_fault_status(cameras: list[HttpCameraServer], code: int) -> None:
    camera = await stock(cameras, fault=f"status-{code}")
    for role, target in [("control", "/status"), ("stream", "/stream")]:
        client = await fetch(camera, role, target)
        [(head, _body)] = split_responses(client.data)
        assert head.code == code
        assert (head.get(b"WWW-Authenticate") is not None) == (code == 401)
    await camera.set_fault(None)
    status = await fetch(camera, "control", "/status")
    assert split_responses(status.data)[0][0].code == 200


@pytest_twisted.ensureDeferred
async def test_fault_slow_and_scope(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="slow", slow_seconds=1.0, fault_scope="control")
    reactor = _reactor()
    start = reactor.seconds()
    control = await connect(camera, "control")
    control.get("/status")
    stream = await connect(camera, "stream")
    stream.get("/stream")
    await stream.until(lambda: len(stock_frames(stream)) >= 1)  # the stream is not slowed
    assert control.data == b""
    await control.until(lambda: bool(split_responses(control.data)))
    assert reactor.seconds() - start >= 0.99
    stream.close()


@pytest_twisted.ensureDeferred
async def test_fault_refuse_at_start_and_at_run_time(cameras: list[HttpCameraServer]) -> None:
    camera = await stock(cameras, fault="refuse")
    port = camera.address("control").port
    with pytest.raises(ConnectionRefusedError):
        await connect(camera, "stream")
    await camera.set_fault(None)
    assert camera.address("control").port == port  # back on the same port
    status = await fetch(camera, "control", "/status")
    assert split_responses(status.data)[0][0].code == 200
    camera.faults.name = "refuse"  # also without waiting: the next connect may race it
    await camera.set_fault("refuse")
    with pytest.raises(ConnectionRefusedError):
        await connect(camera, "control")


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--kind", "bogus"],
        ["--kind"],
        ["--kind", "esp32", "--fps", "0"],
        ["--kind", "esp32", "--listen", "unix:/tmp/democam-control.sock"],
        ["--kind", "esp32", "--listen", "nonsense:1", "--stream-listen", "tcp:0"],
        ["--kind", "esp32", "--stream-listen", "nonsense:1"],
        ["--kind", "esp32", "--user", "admin"],
        ["--kind", "esp32", "--fault", "gremlins"],
        ["--kind", "esp32", "--framesize", "FHD"],
        ["--kind", "esp32", "--quality", "64"],
        ["--kind", "esp32", "--lamp", "50"],
        ["--kind", "esp32-cam-webserver", "--lamp", "101"],
        ["--kind", "mjpeg", "--boundary", ""],
        ["--kind", "mjpeg", "--part-header", "nocolon"],
        ["--kind", "jpeg", "--path", "snapshot"],
        ["--kind", "jpeg", "--fps", "10"],
        ["--kind", "jpeg", "--fault-scope", "everywhere"],
    ],
)
def test_bad_options_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "error" in error


def test_every_kind_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for kind in ["esp32", "esp32-cam-webserver", "mjpeg", "jpeg"]:
        with pytest.raises(SystemExit) as exited:
            main(["--kind", kind, "--help"])
        assert exited.value.code == 0
        assert "--fault" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--kind" in capsys.readouterr().out


def _poll(url: str, timeout: float = 20.0) -> bytes:
    """GET ``url`` until the process behind it answers (no event crosses processes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bytes(response.read())
        except urllib.error.HTTPError:
            raise
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _read_stream(port: int, path: str, until: bytes, limit: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: camera\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + limit
        while data.count(until) < 2 and time.monotonic() < deadline:
            data += connection.recv(65536)
        return data


def _log_of(process: subprocess.Popen[bytes]) -> str:
    return Path(process.log_path).read_text()  # type: ignore[attr-defined]


def _free_port_pair() -> int:
    """A free port whose next port is free too (the stock firmware's stream port is +1)."""
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports")


def test_cli_runs_the_esp32_camera() -> None:
    port = _free_port_pair()
    argv = [sys.executable, "-m", "camproxy.democam", "--kind", "esp32"]
    argv += ["--listen", f"tcp:{port}:interface=127.0.0.1", "--framesize", "QQVGA"]
    with running(argv) as process:
        try:
            status = json.loads(_poll(f"http://127.0.0.1:{port}/status"))
        except OSError:
            pytest.fail(f"the camera did not answer; its output:\n{_log_of(process)}")
        assert status["framesize"] == 1
        data = _read_stream(port + 1, "/stream", DELIMITER)  # the stream port is port + 1
        assert data.startswith(STOCK_STREAM_HEAD)
        log = _log_of(process)
        assert f"control at http://127.0.0.1:{port}/" in log
        assert f"stream at http://127.0.0.1:{port + 1}/stream" in log
    assert process.returncode is not None


@pytest.mark.slow
def test_cli_runs_the_other_kinds_with_faults_and_auth(tmp_path: Path) -> None:
    control, stream = free_port(), free_port()
    argv = [sys.executable, "-m", "camproxy.democam", "--kind", "esp32-cam-webserver"]
    argv += ["--listen", f"tcp:{control}:interface=127.0.0.1"]
    argv += ["--stream-listen", f"tcp:{stream}:interface=127.0.0.1", "--no-lamp"]
    argv += ["--user", "u", "--password", "p", "--stream-start-delay", "0"]
    argv += ["--stream-path", "/", "--stream-path", "/stream"]
    with running(argv) as process:
        with pytest.raises(urllib.error.HTTPError) as refused:
            _poll(f"http://127.0.0.1:{control}/status")
        assert refused.value.code == 401
        request = urllib.request.Request(
            f"http://127.0.0.1:{control}/status", headers={"Authorization": "Basic dTpw"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["lamp"] == -1
        assert f"stream at http://127.0.0.1:{stream}/stream" in _log_of(process)
    port = free_port()
    argv = [sys.executable, "-m", "camproxy.democam", "--kind", "mjpeg", "--esphome"]
    argv += ["--listen", f"tcp:{port}:interface=127.0.0.1", "--fault", "not-jpeg"]
    with running(argv) as process:
        _poll_connect(port)
        data = _read_stream(port, "/", b"--" + ESP_BOUNDARY.encode() + b"\r\n")
        assert data.startswith(b"HTTP/1.0 200 OK\r\n")
        assert b"\xff\xd8" not in data
        assert "Fault: not-jpeg" in _log_of(process)
    sock = tmp_path / "snapshot.sock"
    argv = [sys.executable, "-m", "camproxy.democam", "--kind", "jpeg", "--listen", f"unix:{sock}"]
    with running(argv) as process:
        deadline = time.monotonic() + 20
        while "JPEG snapshots at" not in _log_of(process) and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(sock))
            connection.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert connection.recv(100).startswith(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg")


def _poll_connect(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_every_fault_has_a_name_the_cli_takes() -> None:
    from camproxy.democam.httpcam import FAULT_HELP

    assert set(FAULT_HELP) == set(FAULTS)
    assert {
        "stall",
        "wrong-boundary",
        "truncated",
        "not-jpeg",
        "huge",
        "huge-header",
        "close",
        "refuse",
        "black-hole",
        "status-401",
        "status-404",
        "status-500",
        "slow",
    } <= set(FAULTS)
