"""The camera probe: kind, capabilities, frame size and rate, or one line why not."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from camproxy.hub.source import Capabilities, ICameraSource, ISourceListener
from camproxy.sources.http import HttpSourceSettings
from camproxy.sources.probe import ProbeResult, jpeg_size, probe
from camproxy.sources.robocam.link import CameraSettings, RoboCamSource
from tests.httpcams import (
    BOUNDARY,
    CameraServer,
    FakeNetwork,
    Request,
    ServerConnection,
    image_answer,
    part,
    plain_answer,
    real_jpeg,
    sleep,
    stream_head,
)

# -- the frame size ---------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(320, 240), (1600, 1200), (1, 1), (641, 479)])
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_size_from_the_sof_marker(width: int, height: int, progressive: bool) -> None:
    from PIL import Image

    out = io.BytesIO()
    image = Image.new("RGB", (width, height), (10, 200, 10))
    image.save(out, "JPEG", progressive=progressive, exif=b"Exif\x00\x00" + b"\x00" * 64)
    assert jpeg_size(out.getvalue()) == (width, height)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8", b"\xff\xd8\xff\xd9", b"GIF89a", real_jpeg()[:20], b"\xff\xd8\x00\x00"],
)
def test_jpeg_size_of_something_else_is_none(data: bytes) -> None:
    assert jpeg_size(data) is None


def test_probe_result_lines() -> None:
    good = ProbeResult(
        "http://u:***@cam", "esp32", True, Capabilities(light=True), 640, 480, 12.5, 40, 30_000
    )
    assert good.summary() == (
        "esp32, 640x480, 12.5 fps, 29 KiB per frame, controls: light at http://u:***@cam"
    )
    assert good.as_json()["capabilities"] == {"pan_tilt": False, "light": True}
    bad = ProbeResult("http://cam/x", None, False, error="connection refused")
    assert bad.summary() == "camera at http://cam/x: failed: connection refused"
    json.dumps(good.as_json())


# -- on the loopback ---------------------------------------------------------------------


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


FRAME = real_jpeg(320, 240)


def streaming(reactor: Any, interval: float = 0.02) -> CameraServer:
    async def handle(connection: ServerConnection, request: Request) -> None:
        connection.write(stream_head())
        while not connection.gone:
            connection.write(part(FRAME))
            await sleep(reactor, interval)

    return CameraServer(handle)


@pytest_twisted.ensureDeferred
async def test_probe_an_mjpeg_stream(reactor: Any) -> None:
    server = streaming(reactor)
    port = await server.listen(reactor)
    try:
        result = await probe(reactor, f"http://u:secret@127.0.0.1:{port}/video", seconds=0.5)
    finally:
        await server.stop()
    assert result.ok and result.error is None
    assert result.kind == "mjpeg"  # detected from the answer
    assert (result.width, result.height) == (320, 240)
    assert result.fps is not None and 5 < result.fps < 80
    assert result.frame_bytes == len(FRAME)
    assert result.capabilities == Capabilities()
    assert "secret" not in result.url and "secret" not in result.summary()
    assert server.most_at_once == 1 and not server.open


@pytest_twisted.ensureDeferred
async def test_probe_a_jpeg_url_asks_as_fast_as_it_answers(reactor: Any) -> None:
    async def snapshot(connection: ServerConnection, request: Request) -> None:
        await sleep(reactor, 0.05)
        connection.write(image_answer(FRAME))

    server = CameraServer(snapshot)
    port = await server.listen(reactor)
    try:
        result = await probe(reactor, f"http://127.0.0.1:{port}/snapshot.jpg", seconds=0.6)
        paced = await probe(
            reactor,
            f"http://127.0.0.1:{port}/snapshot.jpg",
            "jpeg",
            seconds=0.6,
            settings=HttpSourceSettings("ignored", max_fps=5),
        )
    finally:
        await server.stop()
    assert result.ok and result.kind == "jpeg"
    assert result.fps is not None and 5 < result.fps < 25
    assert paced.ok and paced.fps is not None and paced.fps <= 5.5
    assert server.most_at_once == 1


@pytest_twisted.ensureDeferred
async def test_probe_an_esp32(reactor: Any) -> None:
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from camproxy.sources.http import DirectEndpointFactory

    async def controls(connection: ServerConnection, request: Request) -> None:
        status = {"led_intensity": 0, "framesize": 5}
        connection.write(plain_answer(b"200 OK", json.dumps(status).encode()))

    control_server, stream_server = CameraServer(controls), streaming(reactor)
    control_port = await control_server.listen(reactor)
    stream_port = await stream_server.listen(reactor)

    class TwoPorts(DirectEndpointFactory):
        def endpointForURI(self, uri: Any) -> Any:
            port = control_port if uri.port == 80 else stream_port
            return TCP4ClientEndpoint(reactor, "127.0.0.1", port)

    settings = HttpSourceSettings("ignored", endpoint_factory=TwoPorts(reactor))
    try:
        result = await probe(reactor, "http://esp32cam", seconds=0.3, settings=settings)
    finally:
        await control_server.stop()
        await stream_server.stop()
    assert result.ok and result.kind == "esp32"
    assert result.capabilities == Capabilities(pan_tilt=False, light=True)
    assert (result.width, result.height) == (320, 240)
    assert [r.path for r in control_server.requests] == ["/status"]
    assert [r.path for r in stream_server.requests] == ["/stream"]


@pytest_twisted.ensureDeferred
async def test_probe_a_refused_connection(reactor: Any) -> None:
    server = CameraServer(lambda c, r: succeed(None))  # type: ignore[arg-type,return-value]
    port = await server.listen(reactor)
    await server.stop()  # nothing listens there now
    result = await probe(reactor, f"http://127.0.0.1:{port}/video")
    assert not result.ok
    assert result.error == "connection refused"
    assert result.summary().endswith("failed: connection refused")


@pytest_twisted.ensureDeferred
async def test_probe_a_refused_robocam_answers_at_once(reactor: Any) -> None:
    # The probe stops at the first failed attempt instead of waiting out its 12 s for
    # a first frame while the link retries (the admin page's "test connection" waits).
    server = CameraServer(lambda c, r: succeed(None))  # type: ignore[arg-type,return-value]
    port = await server.listen(reactor)
    await server.stop()
    url = f"ws://127.0.0.1:{port}/ws"

    def robocam(listener: ISourceListener, retry_policy: Any) -> ICameraSource:
        return RoboCamSource(reactor, listener, CameraSettings(url=url), retry_policy=retry_policy)

    started = reactor.seconds()
    result = await probe(reactor, url, first_frame_timeout=30.0, robocam=robocam)
    assert not result.ok
    assert result.error == "connection refused"
    assert reactor.seconds() - started < 10.0


# -- failures, on a clock -------------------------------------------------------------------


def run_probe(
    url: str, answer: Any, *, kind: str | None = None, advance: float = 0.0, seconds: float = 1.0
) -> tuple[ProbeResult, FakeNetwork, Clock]:
    """Probe ``url`` on a Clock; ``answer(network)`` plays the camera."""
    clock = Clock()
    network = FakeNetwork(clock)
    settings = HttpSourceSettings("ignored", endpoint_factory=network)
    results: list[ProbeResult] = []
    probe(clock, url, kind, seconds=seconds, settings=settings).addCallback(results.append)
    answer(network)
    for _ in range(int(advance * 10) + 20):
        if results:
            break
        clock.advance(0.1)
    assert results, "the probe did not finish"
    assert clock.getDelayedCalls() == []
    assert network.live() == []
    return results[0], network, clock


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (plain_answer(b"401 Unauthorized"), "the camera answered 401 Unauthorized: "),
        (plain_answer(b"404 Not Found"), "the camera answered 404 Not Found"),
        (plain_answer(b"500 Internal Server Error"), "the camera answered 500 Internal"),
        (
            plain_answer(b"200 OK", b"<html>", b"text/html"),
            "not an image nor an MJPEG stream (Content-Type text/html)",
        ),
        (image_answer(b"GIF89a...", b"image/gif"), "the answer is not a JPEG"),
    ],
)
def test_probe_failures_in_one_line(answer: bytes, error: str) -> None:
    result, network, _ = run_probe("http://cam/video", lambda net: net.last.send(answer))
    assert not result.ok
    assert result.error is not None and result.error.startswith(error)
    assert "\n" not in result.error
    assert len(network.connections) == 1  # never retried


def test_probe_a_stream_busy_with_another_client() -> None:
    result, _, clock = run_probe("http://cam/video", lambda net: None, advance=6)
    assert result.error is not None and result.error.startswith("stream busy")
    assert 5 <= clock.seconds() < 6


def test_probe_a_connection_that_never_completes() -> None:
    clock = Clock()
    network = FakeNetwork(clock, behaviour={("cam", 80): "hang"})
    results: list[ProbeResult] = []
    settings = HttpSourceSettings("x", endpoint_factory=network)
    probe(clock, "http://cam/video", settings=settings).addCallback(results.append)
    clock.advance(5)
    assert results and results[0].error == "no answer within 5 s"


def test_probe_a_stream_that_sends_no_valid_frame() -> None:
    def wrong_boundary(net: FakeNetwork) -> None:
        net.last.send(stream_head(b"multipart/x-mixed-replace; boundary=elsewhere"))
        net.last.send(part(FRAME))

    result, _, _ = run_probe("http://cam/video", wrong_boundary, advance=6)
    assert result.error == (
        "no valid frame within 5 s of the answer (no part with boundary b'elsewhere' found)"
    )
    assert BOUNDARY not in (result.error or "").encode()


def test_probe_a_stream_that_stalls_during_the_measurement() -> None:
    def two_frames(net: FakeNetwork) -> None:
        net.last.send(stream_head() + part(FRAME))
        net.clock.advance(0.1)
        net.last.send(part(FRAME))

    result, _, _ = run_probe("http://cam/video", two_frames, advance=4, seconds=3.0)
    assert result.ok and result.frames == 2
    assert result.error == "frames stopped: none in the last 2.9 s"


def test_probe_an_undetected_kind_is_none() -> None:
    result, _, _ = run_probe("http://cam/video", lambda net: net.last.send(plain_answer(b"500 X")))
    assert result.kind is None

    def fail_both(net: FakeNetwork) -> None:
        net.last.send(plain_answer(b"500 X"))  # /status
        net.last.send(plain_answer(b"500 X"))  # /stream

    result, _, _ = run_probe("http://cam", fail_both)
    assert result.kind == "esp32" and result.error == "the camera answered 500 X"


def test_probe_a_stream_that_ends_during_the_measurement() -> None:
    def one_frame_then_gone(net: FakeNetwork) -> None:
        net.last.send(stream_head() + part(FRAME))
        net.last.drop()

    result, _, _ = run_probe("http://cam/video", one_frame_then_gone, advance=2)
    assert result.ok and result.frames == 1 and result.fps is None
    assert result.error == "the camera ended the stream"


@pytest.mark.parametrize(
    ("url", "kind", "error"),
    [
        ("ftp://cam/", None, "ws(s):// or http(s)://"),
        ("http://cam/video", "esp32", "base URL"),
        ("http://cam/", "nonsense", "unknown camera kind"),
    ],
)
def test_probe_refuses_what_cannot_be_a_camera(url: str, kind: str | None, error: str) -> None:
    results: list[ProbeResult] = []
    probe(Clock(), url, kind).addCallback(results.append)
    assert not results[0].ok and error in (results[0].error or "")


def test_probe_robocam_without_and_with_its_link() -> None:
    results: list[ProbeResult] = []
    probe(Clock(), "ws://cam:80/ws").addCallback(results.append)
    assert results[0].kind == "robocam" and not results[0].ok
    assert results[0].error == "not probed: ws(s) cameras need the RoboCam link"

    clock = Clock()

    @implementer(ICameraSource)
    class FakeRobocam:
        """Answers each getframe 0.1 s later."""

        kind = "robocam"
        capabilities = Capabilities(pan_tilt=True, light=True)
        paced = True

        def __init__(self, listener: ISourceListener, retry_policy: object) -> None:
            self.listener = listener
            self.opened = False

        def open(self) -> None:
            self.opened = True
            self.listener.source_connected()
            self.request_frame()

        def close(self) -> None:
            self.opened = False

        def request_frame(self) -> None:
            clock.callLater(0.1, lambda: self.opened and self.listener.frame_received(FRAME))

        def move(self, direction: str) -> None:
            pass

        def move_to(self, x: int, y: int) -> None:
            pass

        def query_position(self) -> None:
            pass

        def set_light(self, on: bool) -> Deferred[None]:
            return succeed(None)

    probe(clock, "ws://cam/ws", seconds=1.0, robocam=FakeRobocam).addCallback(results.append)
    clock.advance(0.1)
    for _ in range(11):
        clock.advance(0.1)
    result = results[1]
    assert result.ok and result.kind == "robocam"
    assert result.capabilities == Capabilities(pan_tilt=True, light=True)
    assert result.fps is not None and 9 <= result.fps <= 11
