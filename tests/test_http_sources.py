"""The HTTP camera sources (CONTRACT §7): esp32, mjpeg, jpeg and detection.

Most tests run on a ``Clock`` and an in-memory network (``tests.httpcams.FakeNetwork``):
the test plays the camera byte by byte. The loopback tests at the end run small real
servers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.logger._format import formatEvent
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from zope.interface.verify import verifyObject

from camproxy.hub.source import Capabilities, CommandFailed, ICameraSource
from camproxy.sources.esp32 import Esp32Source
from camproxy.sources.http import HttpSourceSettings, basic_credentials
from camproxy.sources.httpcam import HttpCameraSource, JPEGSource, MJPEGSource
from camproxy.sources.kinds import default_kind, make_source, url_problem
from camproxy.trust import load_ca_file
from tests.httpcams import (
    BOUNDARY,
    CameraServer,
    FakeConnection,
    FakeNetwork,
    RecordingListener,
    Request,
    ServerConnection,
    image_answer,
    jpeg,
    part,
    plain_answer,
    response_head,
    stream_head,
)

RETRY = 0.5
FRAMES = [jpeg(3000, seed) for seed in range(5)]


def no_jitter(attempt: int) -> float:
    """First retry within a second, then up to five, as the real policy but exact."""
    return min(RETRY * 2**attempt, 4.5)


class Rig:
    """A source on a Clock and a FakeNetwork, with a recording listener."""

    def __init__(self, cls: Any, url: str, **settings: Any) -> None:
        self.clock = Clock()
        self.net = FakeNetwork(self.clock)
        self.listener = RecordingListener()
        self.settings = HttpSourceSettings(url, endpoint_factory=self.net, **settings)
        self.source = cls(self.clock, self.listener, self.settings, retry_policy=no_jitter)

    @property
    def last(self) -> FakeConnection:
        return self.net.last

    def stream(self, *frames: bytes, head: bytes | None = None) -> FakeConnection:
        connection = self.last
        connection.send(stream_head() if head is None else head)
        for frame in frames:
            connection.send(part(frame))
        return connection

    def finish(self) -> None:
        """Close the source; nothing may be left scheduled."""
        self.source.close()
        self.clock.advance(0)
        assert self.clock.getDelayedCalls() == []
        assert self.net.live() == []


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


# -- URLs, settings, kinds --------------------------------------------------------------


def test_basic_credentials_are_percent_decoded() -> None:
    from hyperlink import URL

    value = basic_credentials(URL.from_text("http://b%40b:p%3Ass@cam/"))
    assert value == b"Basic " + base64.b64encode(b"b@b:p:ss")
    assert basic_credentials(URL.from_text("http://cam/")) is None


def test_stall_timeout_is_five_seconds_or_three_frame_intervals() -> None:
    assert HttpSourceSettings("http://c/").effective_stall_timeout == 5.0
    assert HttpSourceSettings("http://c/", max_fps=10).effective_stall_timeout == 5.0
    assert HttpSourceSettings("http://c/", max_fps=0.2).effective_stall_timeout == 15.0


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("ws://192.168.1.100:80/ws", "robocam"),
        ("wss://cam/ws", "robocam"),
        ("http://192.168.1.50", "esp32"),
        ("http://192.168.1.50/", "esp32"),
        ("https://user:pw@cam:8080/", "esp32"),
        ("http://cam:8080/video", None),
        ("http://cam/?action=stream", None),
        ("http://cam/snapshot.jpg", None),
    ],
)
def test_default_kind(url: str, kind: str | None) -> None:
    assert default_kind(url) == kind


@pytest.mark.parametrize(
    ("url", "kind", "problem"),
    [
        ("ftp://cam/", None, "ws(s):// or http(s)://"),
        ("not a url", None, "not a URL"),
        ("http://cam/stream", "esp32", "base URL"),
        ("http://cam/?a=1", "esp32", "base URL"),
        ("http://cam/", "robocam", "ws(s) URL"),
        ("ws://cam/ws", "mjpeg", "http(s) URL"),
        ("http://cam/", "webcam", "unknown camera kind"),
        ("http://u:secret@cam/x", "esp32", "***"),
    ],
)
def test_url_problems(url: str, kind: str | None, problem: str) -> None:
    found = url_problem(url, kind)
    assert found is not None and problem in found
    assert "secret" not in found


def test_make_source_builds_each_kind() -> None:
    clock, listener = Clock(), RecordingListener()

    def build(url: str, kind: str | None = None, **options: Any) -> ICameraSource:
        return make_source(clock, listener, HttpSourceSettings(url), kind, **options)

    assert isinstance(build("http://cam"), Esp32Source)
    assert isinstance(build("http://cam/video", "mjpeg"), MJPEGSource)
    assert isinstance(build("http://cam/still", "jpeg"), JPEGSource)
    detecting = build("http://cam/video")
    assert type(detecting) is HttpCameraSource
    assert detecting.kind == "mjpeg" and not detecting.paced
    # An explicit kind beats the URL's default.
    assert isinstance(build("http://cam/", "mjpeg"), MJPEGSource)
    with pytest.raises(ValueError, match="RoboCam"):
        build("ws://cam/ws")
    sentinel: Any = object()

    def robocam(got: Any, _policy: Any) -> Any:
        return sentinel if got is listener else None

    assert build("ws://cam/ws", robocam=robocam) is sentinel
    with pytest.raises(ValueError, match="base URL"):
        build("http://cam/stream", "esp32")


@pytest.mark.parametrize("cls", [MJPEGSource, JPEGSource, HttpCameraSource, Esp32Source])
def test_sources_provide_the_interface(cls: Any) -> None:
    rig = Rig(cls, "http://cam")
    assert verifyObject(ICameraSource, rig.source)
    assert rig.source.capabilities == Capabilities(pan_tilt=False, light=False)
    assert rig.net.connections == []  # nothing before open


# -- mjpeg ----------------------------------------------------------------------------------


def test_mjpeg_relays_every_valid_frame_byte_for_byte() -> None:
    rig = Rig(MJPEGSource, "http://cam:8080/video.mjpg")
    rig.source.open()
    assert rig.last.path == "/video.mjpg"
    assert rig.last.port == 8080
    rig.stream(*FRAMES)
    assert rig.listener.kinds == ["connected"] + ["frame"] * 5
    assert rig.listener.frames == FRAMES
    assert rig.source.connected and not rig.source.paced and rig.source.kind == "mjpeg"
    rig.finish()
    assert rig.listener.kinds[-1] == "disconnected"


def test_connected_only_from_the_first_valid_frame() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    connection = rig.stream()
    connection.send(part(b"not a jpeg") + part(FRAMES[0][:-2]))
    assert rig.listener.events == []
    assert not rig.source.connected
    connection.send(part(FRAMES[1]))
    assert rig.listener.kinds == ["connected", "frame"]
    assert rig.source.stats.invalid == 2
    rig.finish()


def test_invalid_parts_never_reach_the_listener(logs: list[str]) -> None:
    rig = Rig(MJPEGSource, "http://cam/video", max_frame_bytes=10_000)
    rig.source.open()
    connection = rig.stream(FRAMES[0])
    bad = [
        b"\x00" * 100,  # not a JPEG
        FRAMES[1][:1500],  # truncated
        b"\xff\xd8" + b"\x01" * 20_000 + b"\xff\xd9",  # over the limit
        b"",  # empty
        FRAMES[2][2:],  # no start marker
    ]
    for blob in bad:
        connection.send(part(blob))
        connection.send(part(blob, length=False))
    connection.send(part(FRAMES[3]))
    assert rig.listener.frames == [FRAMES[0], FRAMES[3]]
    assert rig.source.connected
    assert any("not a JPEG" in line for line in logs)
    rig.finish()


def test_a_stream_that_stalls_with_the_socket_open_is_dropped_and_retried() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    first = rig.stream(FRAMES[0])
    rig.clock.advance(4.9)
    first.send(part(FRAMES[1]))  # a frame resets the watchdog
    rig.clock.advance(4.9)
    assert rig.source.connected and not first.lost
    rig.clock.advance(0.1)
    assert rig.listener.kinds == ["connected", "frame", "frame", "disconnected"]
    assert first.lost and first.transport.disconnected  # aborted, not waited for
    assert rig.source.last_error == "stalled: no valid frame for 5 s"
    assert len(rig.net.connections) == 1
    rig.clock.advance(RETRY)  # first retry within a second
    assert len(rig.net.connections) == 2
    rig.stream(FRAMES[2])
    assert rig.listener.kinds[-2:] == ["connected", "frame"]
    rig.finish()


def test_stall_timeout_follows_a_slow_max_fps() -> None:
    rig = Rig(MJPEGSource, "http://cam/video", max_fps=0.25)  # 3 / 0.25 = 12 s
    rig.source.open()
    rig.stream(FRAMES[0])
    rig.clock.advance(11.9)
    assert rig.source.connected
    rig.clock.advance(0.1)
    assert not rig.source.connected
    rig.finish()


def test_the_watchdog_counts_only_valid_frames() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    connection = rig.stream(FRAMES[0])
    for _ in range(10):
        rig.clock.advance(1)
        if not connection.lost:
            connection.send(part(b"garbage"))
    assert not rig.source.connected
    assert rig.listener.kinds == ["connected", "frame", "disconnected"]
    rig.finish()


def test_a_camera_that_accepts_and_never_answers(logs: list[str]) -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    silent = rig.last
    rig.clock.advance(5)
    assert silent.lost
    assert rig.source.last_error is not None and "stream busy" in rig.source.last_error
    assert rig.listener.events == []
    assert any("stream busy" in line for line in logs)
    rig.clock.advance(RETRY)
    assert len(rig.net.connections) == 2
    rig.finish()


def test_a_connection_that_never_completes_times_out() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.net.behaviour[("cam", 80)] = "hang"
    rig.source.open()
    rig.clock.advance(5)
    assert rig.source.last_error == "no answer within 5 s"
    rig.finish()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (plain_answer(b"401 Unauthorized"), "401 Unauthorized: it wants a password"),
        (plain_answer(b"404 Not Found"), "404 Not Found"),
        (plain_answer(b"500 Internal Server Error"), "500 Internal Server Error"),
        (plain_answer(b"200 OK", b"<html>", b"text/html"), "not an MJPEG stream"),
        (image_answer(FRAMES[0]), "not an MJPEG stream (Content-Type image/jpeg)"),
        (stream_head(b"multipart/x-mixed-replace;boundary=other") + part(FRAMES[0]), None),
    ],
)
def test_http_errors_are_reported_and_retried_with_backoff(
    answer: bytes, reason: str | None, logs: list[str]
) -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    delays = []
    for attempt in range(6):
        rig.last.send(answer)
        if reason is None:  # wrong boundary: nothing valid, so the watchdog drops it
            rig.clock.advance(5)
        assert rig.listener.events == []
        assert rig.last.lost
        delay = rig.clock.getDelayedCalls()[0].getTime() - rig.clock.seconds()
        delays.append(delay)
        rig.clock.advance(delay)
        assert len(rig.net.connections) == attempt + 2
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.5, 4.5]
    last_error = rig.source.last_error or ""
    if reason is None:
        assert "no part with boundary" in last_error
    else:
        assert reason in last_error
    assert any(last_error in line for line in logs)
    # Rate-limited: one line per distinct complaint, not one per attempt.
    assert sum(last_error in line for line in logs) == 1
    rig.finish()


def test_a_refused_connection() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.net.behaviour[("cam", 80)] = "refuse"
    rig.source.open()
    assert rig.source.last_error == "connection refused"
    rig.finish()


def test_the_stream_ending_drops_the_link_and_retries() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    connection = rig.stream(FRAMES[0])
    connection.drop(Failure(ResponseDone()))
    assert rig.listener.kinds == ["connected", "frame", "disconnected"]
    rig.clock.advance(RETRY)
    rig.stream(FRAMES[1])
    assert rig.listener.kinds[-2:] == ["connected", "frame"]
    rig.finish()


def test_close_stops_everything_and_reports_once() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.close()  # closing a closed source is harmless
    rig.source.open()
    rig.source.open()  # and opening an open one
    assert len(rig.net.connections) == 1
    rig.stream(FRAMES[0])
    rig.finish()
    assert rig.listener.kinds == ["connected", "frame", "disconnected"]
    rig.clock.advance(60)
    assert len(rig.net.connections) == 1


def test_close_during_backoff_and_during_the_request() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    rig.last.send(plain_answer(b"500 Oops"))
    rig.finish()  # during the backoff
    rig.source.open()
    assert len(rig.net.connections) == 2
    rig.finish()  # while waiting for the answer
    assert rig.listener.events == []


def test_only_one_video_connection_ever_even_when_closes_are_slow() -> None:
    """The next connection waits until the previous one is really gone."""
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.net.close_at_once = False
    rig.source.open()
    first = rig.stream(FRAMES[0])
    rig.source.close()
    rig.source.open()
    assert first.close_requested and not first.lost
    assert len(rig.net.connections) == 1  # not while the first is still open
    first.drop()
    assert len(rig.net.connections) == 2
    second = rig.stream(FRAMES[1])
    rig.clock.advance(5)  # stalls: aborted, and the retry waits for the close
    assert second.close_requested and not second.lost
    rig.clock.advance(10)
    assert len(rig.net.connections) == 2
    second.drop()
    rig.clock.advance(0)
    assert len(rig.net.connections) == 3
    assert rig.net.most_live[80] == 1
    rig.net.close_at_once = True
    rig.last.drop()
    rig.finish()
    assert rig.source._video.tracker.most_at_once == 1


def test_a_part_over_the_limit_is_skipped_and_the_stream_goes_on(logs: list[str]) -> None:
    rig = Rig(MJPEGSource, "http://cam/video", max_frame_bytes=50_000)
    rig.source.open()
    connection = rig.stream(FRAMES[0])
    connection.send(part(jpeg(200_000)))
    connection.send(part(FRAMES[1]))
    assert rig.listener.frames == FRAMES[:2]
    assert rig.source.stats.discarded == 1
    assert any("over the 50000 bytes limit" in line for line in logs)
    rig.finish()


def test_a_ten_megabyte_header_line_is_skipped() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    connection = rig.stream(FRAMES[0])
    connection.send(b"\r\n--" + BOUNDARY + b"\r\nX-Junk: ")
    for _ in range(640):
        connection.send(b"j" * 16384)
    connection.send(b"\r\n\r\n" + FRAMES[1] + part(FRAMES[2]))
    assert rig.listener.frames == [FRAMES[0], FRAMES[2]]
    parser = rig.source._parser
    assert parser is not None and parser.buffered < 70_000
    rig.finish()


def test_a_missing_content_length_uses_the_next_boundary() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    connection = rig.stream()
    connection.send(part(FRAMES[0], length=False) + part(FRAMES[1], length=False))
    assert rig.listener.frames == [FRAMES[0]]
    connection.send(b"\r\n--" + BOUNDARY + b"\r\n")
    assert rig.listener.frames == FRAMES[:2]
    rig.finish()


def test_a_chunked_stream_like_the_esp32_httpd_sends() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    head = response_head(
        headers={
            b"Content-Type": b"multipart/x-mixed-replace;boundary=" + BOUNDARY,
            b"Transfer-Encoding": b"chunked",
        }
    )
    rig.last.send(head)
    for frame in FRAMES[:3]:
        for piece in (b"\r\n--" + BOUNDARY + b"\r\n", part(frame)[len(BOUNDARY) + 6 :]):
            rig.last.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
    assert rig.listener.frames == FRAMES[:3]
    rig.finish()


# -- credentials and redirects --------------------------------------------------------------


def test_basic_credentials_are_sent_and_never_logged(logs: list[str]) -> None:
    rig = Rig(MJPEGSource, "http://admin:hunter2@cam/video")
    rig.source.open()
    request = rig.last.request
    assert request is not None
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"admin:hunter2").decode(
        "ascii"
    )
    assert "hunter2" not in request.path
    rig.last.send(plain_answer(b"401 Unauthorized"))
    assert (
        rig.source.last_error == "the camera answered 401 Unauthorized: wrong user name or password"
    )
    rig.clock.advance(RETRY)
    rig.stream(FRAMES[0])
    rig.finish()
    assert logs and all("hunter2" not in line for line in logs)
    assert any("admin:***@cam" in line for line in logs)
    assert "hunter2" not in repr(rig.source.redacted_url)


def redirect(location: bytes, status: bytes = b"302 Found") -> bytes:
    return response_head(status, {b"Location": location}, length=0)


def test_a_redirect_on_the_same_host_keeps_the_credentials() -> None:
    rig = Rig(MJPEGSource, "http://u:pw@cam/video")
    rig.source.open()
    rig.last.send(redirect(b"/real/stream?x=1"))
    assert len(rig.net.connections) == 2
    follow = rig.last
    request = follow.request
    assert request is not None and request.path == "/real/stream?x=1"
    assert "authorization" in request.headers
    rig.stream(FRAMES[0])
    assert rig.listener.frames == FRAMES[:1]
    rig.finish()


@pytest.mark.parametrize(
    "location",
    [b"http://other-host/video", b"http://cam:8081/video", b"https://cam/video"],
)
def test_a_redirect_elsewhere_loses_the_credentials(location: bytes) -> None:
    rig = Rig(MJPEGSource, "http://u:pw@cam/video")
    rig.source.open()
    rig.last.send(redirect(location, b"307 Temporary Redirect"))
    request = rig.last.request
    assert request is not None
    assert "authorization" not in request.headers
    rig.finish()


def test_redirects_are_bounded() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    for _ in range(4):
        rig.last.send(redirect(b"/video"))
    assert rig.source.last_error == "more than 3 redirects"
    assert len(rig.net.connections) == 4
    rig.finish()


def test_a_redirect_to_another_scheme_is_refused() -> None:
    rig = Rig(MJPEGSource, "http://cam/video")
    rig.source.open()
    rig.last.send(redirect(b"ftp://cam/video"))
    assert rig.source.last_error == "redirect to a ftp URL"
    rig.finish()


# -- jpeg -------------------------------------------------------------------------------------


def test_jpeg_fetches_one_image_per_request() -> None:
    rig = Rig(JPEGSource, "http://cam/snapshot.jpg")
    source = rig.source
    assert source.paced and source.kind == "jpeg"
    source.open()  # fetches by itself until connected
    rig.last.send(image_answer(FRAMES[0]))
    assert rig.listener.kinds == ["connected", "frame"]
    source.request_frame()
    assert len(rig.net.connections) == 2
    source.request_frame()  # one is in flight: ignored
    source.request_frame()
    assert len(rig.net.connections) == 2
    rig.last.send(image_answer(FRAMES[1]))
    assert rig.listener.frames == FRAMES[:2]
    assert len(rig.net.connections) == 2  # nothing more until asked
    rig.clock.advance(30)
    assert source.connected  # a camera not asked for frames is not down
    rig.finish()


def test_jpeg_failures_answer_the_request_then_the_link_goes_down() -> None:
    rig = Rig(JPEGSource, "http://cam/snapshot.jpg")
    rig.source.open()
    rig.last.send(image_answer(FRAMES[0]))
    answers = [
        plain_answer(b"500 Internal Server Error"),
        image_answer(b"<html>oops</html>", b"text/html"),
        plain_answer(b"404 Not Found"),
    ]
    for answer in answers:  # at 1, 2 and 3 s
        rig.clock.advance(1)
        rig.source.request_frame()
        rig.last.send(answer)
        assert rig.listener.kinds[-1] == "request_failed"
        assert rig.source.connected
    rig.clock.advance(2)
    rig.source.request_frame()
    rig.clock.advance(1)  # 5 s since the first unanswered request (at 1 s)
    rig.last.send(plain_answer(b"500 Internal Server Error"))
    assert rig.listener.kinds[-1] == "disconnected"
    assert rig.listener.frames == FRAMES[:1]
    assert rig.source.stats.invalid == 1
    # Down: the source retries by itself, with backoff, until an image comes.
    rig.clock.advance(RETRY)
    rig.last.send(image_answer(FRAMES[1]))
    assert rig.listener.kinds[-2:] == ["connected", "frame"]
    rig.finish()


def test_a_slow_jpeg_server_stalls_nothing() -> None:
    rig = Rig(JPEGSource, "http://cam/snapshot.jpg")
    rig.source.open()
    rig.last.send(image_answer(FRAMES[0]))
    rig.source.request_frame()
    slow = rig.last
    rig.clock.advance(3)  # three seconds without an answer: still one request
    rig.source.request_frame()
    assert len(rig.net.connections) == 2
    slow.send(image_answer(FRAMES[1])[:100])
    rig.clock.advance(1.5)
    slow.send(image_answer(FRAMES[1])[100:])
    assert rig.listener.frames == FRAMES[:2]
    rig.finish()


def test_a_jpeg_request_that_never_completes_counts_as_down_after_five_seconds() -> None:
    rig = Rig(JPEGSource, "http://cam/snapshot.jpg")
    rig.source.open()
    rig.last.send(image_answer(FRAMES[0]))
    rig.source.request_frame()
    rig.last.send(image_answer(FRAMES[1])[:200])
    rig.clock.advance(5)
    assert rig.listener.kinds == ["connected", "frame", "disconnected"]
    assert rig.last.lost
    assert rig.source.last_error == "the image did not come within 5 s of the request"
    rig.clock.advance(RETRY)
    silent = rig.last  # takes the connection, never answers
    rig.clock.advance(5)
    assert silent.lost
    assert rig.source.last_error == "the camera took the connection but sent no answer within 5 s"
    rig.finish()


def test_an_image_announced_over_the_limit_is_not_read() -> None:
    rig = Rig(JPEGSource, "http://cam/snapshot.jpg", max_frame_bytes=1000)
    rig.source.open()
    rig.last.send(response_head(headers={b"Content-Type": b"image/jpeg"}, length=10_000_000))
    assert rig.last.lost
    assert rig.source.last_error == "answer of 10000000 bytes, over the 1000 bytes limit"
    rig.clock.advance(RETRY)
    rig.last.send(response_head(headers={b"Content-Type": b"image/jpeg"}) + b"x" * 5000)
    assert rig.last.lost
    assert rig.source.last_error == "answer over the 1000 bytes limit"
    rig.finish()


def test_jpeg_request_frame_does_nothing_while_closed_or_down() -> None:
    rig = Rig(JPEGSource, "http://cam/snapshot.jpg")
    rig.source.request_frame()
    assert rig.net.connections == []
    rig.source.open()
    rig.last.send(plain_answer(b"503 Busy"))
    rig.source.request_frame()  # down: the backoff decides, not the hub
    assert len(rig.net.connections) == 1
    rig.finish()


# -- detection --------------------------------------------------------------------------------


def test_detects_a_stream_and_keeps_the_decision() -> None:
    rig = Rig(HttpCameraSource, "http://cam/video")
    source = rig.source
    assert source.kind == "mjpeg" and not source.detected
    source.open()
    connection = rig.stream(FRAMES[0])
    assert source.detected and source.kind == "mjpeg" and not source.paced
    assert rig.listener.kinds == ["capabilities", "connected", "frame"]
    connection.drop()
    rig.clock.advance(RETRY)
    rig.last.send(image_answer(FRAMES[1]))  # the decision stands
    assert source.kind == "mjpeg"
    assert source.last_error == "not an MJPEG stream (Content-Type image/jpeg)"
    assert rig.listener.count("capabilities") == 1
    rig.finish()


def test_detects_a_still_image_and_keeps_the_decision() -> None:
    rig = Rig(HttpCameraSource, "http://cam/cgi-bin/snapshot.cgi")
    source = rig.source
    source.open()
    rig.last.send(image_answer(FRAMES[0]))
    assert source.kind == "jpeg" and source.paced
    assert rig.listener.kinds == ["capabilities", "connected", "frame"]
    source.request_frame()
    rig.last.send(image_answer(FRAMES[1]))
    assert rig.listener.frames == FRAMES[:2]
    rig.finish()


def test_an_answer_of_neither_kind_is_not_a_decision() -> None:
    rig = Rig(HttpCameraSource, "http://cam/index.html")
    rig.source.open()
    rig.last.send(plain_answer(b"200 OK", b"<html>", b"text/html; charset=utf-8"))
    assert not rig.source.detected
    assert rig.source.last_error == (
        "not an image nor an MJPEG stream (Content-Type text/html; charset=utf-8)"
    )
    rig.clock.advance(RETRY)
    rig.stream(FRAMES[0])
    assert rig.source.detected and rig.listener.frames == FRAMES[:1]
    rig.finish()


# -- esp32 -------------------------------------------------------------------------------------

CAMERAWEBSERVER_STATUS = {"framesize": 8, "quality": 12, "led_intensity": 0, "xclk": 20}
EASYTARGET_STATUS = {"lamp": 0, "autolamp": 0, "min_frame_time": 0, "framesize": 9}


def answer_status(connection: FakeConnection, status: dict[str, Any] | bytes) -> None:
    body = status if isinstance(status, bytes) else json.dumps(status).encode()
    connection.send(plain_answer(b"200 OK", body, b"application/json"))


def test_esp32_reads_status_then_streams_from_the_next_port(logs: list[str]) -> None:
    rig = Rig(Esp32Source, "http://u:pw@cam")
    source = rig.source
    assert source.kind == "esp32" and not source.paced
    source.open()
    status = rig.last
    assert (status.port, status.path) == (80, "/status")
    request = status.request
    assert request is not None and request.headers["authorization"].startswith("Basic ")
    answer_status(status, CAMERAWEBSERVER_STATUS)
    assert source.capabilities == Capabilities(pan_tilt=False, light=True)
    assert rig.listener.kinds == ["capabilities"]
    stream = rig.last
    assert (stream.port, stream.path) == (81, "/stream")
    assert "authorization" in (stream.request or Request("", "", {})).headers
    rig.stream(FRAMES[0], FRAMES[1])
    assert rig.listener.kinds == ["capabilities", "connected", "frame", "frame"]
    assert all("/capture" not in c.path for c in rig.net.connections)
    rig.finish()
    assert all("pw" not in line for line in logs)


@pytest.mark.parametrize(
    ("base", "control_port", "stream_port"),
    [("http://cam:8080/", 8080, 8081), ("https://cam", 443, 444), ("http://cam:80", 80, 81)],
)
def test_esp32_ports(base: str, control_port: int, stream_port: int) -> None:
    rig = Rig(Esp32Source, base)
    rig.source.open()
    assert rig.last.port == control_port
    assert rig.last.scheme == base.split(":")[0]
    answer_status(rig.last, CAMERAWEBSERVER_STATUS)
    assert rig.last.port == stream_port
    rig.finish()


def test_esp32_switches_its_led_through_control() -> None:
    rig = Rig(Esp32Source, "http://cam")
    rig.source.open()
    answer_status(rig.last, CAMERAWEBSERVER_STATUS)
    rig.stream(FRAMES[0])
    results: list[Any] = []
    rig.source.set_light(True).addBoth(results.append)
    control = rig.last
    assert (control.port, control.path) == (80, "/control?var=led_intensity&val=255")
    control.send(plain_answer(b"200 OK"))
    assert results == [None]
    rig.source.set_light(False).addBoth(results.append)
    assert rig.last.path == "/control?var=led_intensity&val=0"
    rig.last.send(plain_answer(b"500 Internal Server Error"))
    failure = results[-1]
    assert isinstance(failure, Failure) and failure.check(CommandFailed)
    assert str(failure.value) == "/control answered 500 Internal Server Error"
    # The light changes nothing of the stream: still one connection to it.
    assert len(rig.net.live(81)) == 1 and rig.source.connected
    assert rig.net.most_live[81] == 1
    rig.finish()


def test_esp32_control_that_never_answers_fails_the_command() -> None:
    rig = Rig(Esp32Source, "http://cam")
    rig.source.open()
    answer_status(rig.last, CAMERAWEBSERVER_STATUS)
    results: list[Any] = []
    rig.source.set_light(True).addBoth(results.append)
    rig.clock.advance(5)
    assert isinstance(results[0], Failure) and results[0].check(CommandFailed)
    assert "no answer within 5 s" in str(results[0].value)
    rig.net.behaviour[("cam", 80)] = "refuse"
    rig.source.set_light(True).addBoth(results.append)
    assert str(results[1].value) == "/control failed: connection refused"
    rig.finish()


def test_esp32_cam_webserver_lamp_and_stream_at_root() -> None:
    rig = Rig(Esp32Source, "http://cam")
    source = rig.source
    source.open()
    answer_status(rig.last, EASYTARGET_STATUS)
    assert source.capabilities.light and source.light_variable == "lamp"
    rig.last.send(plain_answer(b"404 Not Found"))
    assert rig.last.path == "/"  # tried again at / on the same port
    assert rig.last.port == 81
    assert len(rig.net.live(81)) == 1
    rig.stream(FRAMES[0])
    assert rig.listener.frames == FRAMES[:1]
    results: list[Any] = []
    source.set_light(True).addBoth(results.append)
    assert rig.last.path == "/control?var=lamp&val=100"
    rig.last.send(plain_answer(b"200 OK"))
    source.set_light(False).addBoth(results.append)
    assert rig.last.path == "/control?var=lamp&val=0"
    rig.last.send(plain_answer(b"200 OK"))
    assert results == [None, None]
    # A reconnect goes straight to where the stream was found.
    rig.net.live(81)[0].drop()
    rig.clock.advance(RETRY)
    answer_status(rig.last, EASYTARGET_STATUS)
    assert rig.last.path == "/"
    rig.finish()


def test_esp32_404_at_both_paths() -> None:
    rig = Rig(Esp32Source, "http://cam")
    rig.source.open()
    answer_status(rig.last, CAMERAWEBSERVER_STATUS)
    rig.last.send(plain_answer(b"404 Not Found"))
    rig.last.send(plain_answer(b"404 Not Found"))
    assert rig.source.last_error == "the camera answered 404 Not Found at /stream and /"
    rig.finish()


@pytest.mark.parametrize(
    ("status", "light", "variable"),
    [
        ({"led_intensity": -1}, False, None),  # CameraWebServer built without the LED
        ({"lamp": -1, "autolamp": 0}, False, None),  # esp32-cam-webserver without a lamp
        ({"led_intensity": 128}, True, "led_intensity"),
        ({"lamp": 50, "led_intensity": 0}, True, "led_intensity"),
        ({"lamp": 0}, True, "lamp"),
        ({"lamp": True}, False, None),
        ({}, False, None),
        (b"[1, 2]", False, None),
        (b"not json", False, None),
    ],
)
def test_esp32_light_capability_from_status(
    status: dict[str, Any] | bytes, light: bool, variable: str | None
) -> None:
    rig = Rig(Esp32Source, "http://cam")
    rig.source.open()
    answer_status(rig.last, status)
    assert rig.source.capabilities.light is light
    assert rig.source.light_variable == variable
    assert rig.listener.count("capabilities") == (1 if light else 0)
    assert rig.last.port == 81  # the stream is opened whatever /status said
    if not light:
        results: list[Any] = []
        rig.source.set_light(True).addBoth(results.append)
        assert isinstance(results[0], Failure) and results[0].check(CommandFailed)
    rig.finish()


def test_esp32_status_failures_do_not_stop_the_video(logs: list[str]) -> None:
    rig = Rig(Esp32Source, "http://cam")
    rig.source.open()
    rig.last.send(plain_answer(b"404 Not Found"))
    assert rig.last.port == 81
    rig.stream(FRAMES[0])
    assert rig.listener.frames == FRAMES[:1]
    assert any("cannot read /status (/status answered 404 Not Found)" in x for x in logs)
    rig.finish()


def test_esp32_status_that_never_answers_times_out_then_streams() -> None:
    rig = Rig(Esp32Source, "http://cam")
    rig.source.open()
    rig.clock.advance(5)
    assert rig.last.port == 81
    rig.finish()


def test_esp32_light_capability_is_kept_when_status_fails_later() -> None:
    rig = Rig(Esp32Source, "http://cam")
    rig.source.open()
    answer_status(rig.last, CAMERAWEBSERVER_STATUS)
    rig.stream(FRAMES[0]).drop()
    rig.clock.advance(RETRY)
    rig.last.send(plain_answer(b"500 Internal Server Error"))
    assert rig.source.capabilities.light
    rig.finish()


def test_esp32_never_opens_a_second_stream() -> None:
    """The firmware serves one stream client; a second would wait forever. Through stalls,
    a busy stream, closes and reopens, there is at most one stream connection."""
    rig = Rig(Esp32Source, "http://cam")
    rig.net.close_at_once = False
    source = rig.source
    source.open()
    answer_status(rig.last, CAMERAWEBSERVER_STATUS)
    rig.net.to(80)[-1].drop()
    busy = rig.last
    rig.clock.advance(5)  # the stream server never answers: busy
    assert source.last_error is not None and source.last_error.startswith("stream busy")
    rig.clock.advance(10)
    assert rig.net.to(81) == [busy]  # the retry waits until the busy one is closed
    busy.drop()
    rig.clock.advance(RETRY)
    answer_status(rig.last, CAMERAWEBSERVER_STATUS)
    rig.net.to(80)[-1].drop()
    rig.stream(FRAMES[0])
    source.close()
    source.open()
    source.close()
    source.open()
    assert len(rig.net.to(81)) == 2
    for connection in rig.net.live():
        connection.drop()
    answer_status(rig.last, CAMERAWEBSERVER_STATUS)
    rig.net.to(80)[-1].drop()
    assert len(rig.net.to(81)) == 3
    rig.stream(FRAMES[1])
    streams = rig.net.to(81)
    for index, connection in enumerate(streams[:-1]):
        assert connection.lost, f"stream connection {index} still open"
    assert source._video.tracker.most_at_once == 1
    assert rig.net.most_live[81] == 1
    rig.net.close_at_once = True
    for connection in rig.net.live():
        connection.drop()
    rig.finish()


def test_esp32_nothing_while_closed() -> None:
    rig = Rig(Esp32Source, "http://cam")
    rig.clock.advance(100)
    assert rig.net.connections == []
    rig.source.request_frame()  # a no-op for a stream
    assert rig.net.connections == []


# -- loopback --------------------------------------------------------------------------------


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


async def wait_for(reactor: Any, predicate: Any, timeout: float = 10.0) -> None:
    """Poll ``predicate`` on the reactor, bounded."""
    from twisted.internet.task import deferLater

    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("timed out waiting")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


def mjpeg_server(reactor: Any, frames: list[bytes], *, interval: float = 0.02) -> CameraServer:
    """An ESP32-like stream server: chunked, endless, one frame every ``interval``."""

    async def handle(connection: ServerConnection, request: Request) -> None:
        from tests.httpcams import sleep

        connection.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary="
            + BOUNDARY
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        n = 0
        while not connection.gone:
            connection.write_chunk(part(frames[n % len(frames)]))
            n += 1
            await sleep(reactor, interval)

    return CameraServer(handle)


@pytest_twisted.ensureDeferred
async def test_loopback_mjpeg_stream(reactor: Any) -> None:
    server = mjpeg_server(reactor, FRAMES)
    port = await server.listen(reactor)
    listener = RecordingListener()
    source = MJPEGSource(reactor, listener, HttpSourceSettings(f"http://127.0.0.1:{port}/s"))
    try:
        source.open()
        await wait_for(reactor, lambda: len(listener.frames) >= 10)
        assert listener.frames[:5] == FRAMES
        assert server.most_at_once == 1
    finally:
        source.close()
        await wait_for(reactor, lambda: not server.open)
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_loopback_stall_is_detected_and_the_link_retried(reactor: Any) -> None:
    async def stall_after_two(connection: ServerConnection, request: Request) -> None:
        connection.write(stream_head())
        connection.write(part(FRAMES[0]) + part(FRAMES[1]))
        # ... then nothing, socket open.

    server = CameraServer(stall_after_two)
    port = await server.listen(reactor)
    listener = RecordingListener()
    settings = HttpSourceSettings(f"http://127.0.0.1:{port}/", stall_timeout=0.3)
    source = MJPEGSource(reactor, listener, settings, retry_policy=lambda n: 0.05)
    try:
        source.open()
        await wait_for(reactor, lambda: listener.count("disconnected") >= 2)
        assert listener.kinds[:4] == ["connected", "frame", "frame", "disconnected"]
        assert server.total >= 2 and server.most_at_once == 1
    finally:
        source.close()
        await wait_for(reactor, lambda: not server.open)
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_loopback_ten_megabyte_header_line(reactor: Any) -> None:
    async def huge_header(connection: ServerConnection, request: Request) -> None:
        from tests.httpcams import sleep

        connection.write(stream_head() + part(FRAMES[0]) + b"\r\n--" + BOUNDARY + b"\r\nX: ")
        for _ in range(160):
            connection.write(b"h" * 65536)
            await sleep(reactor, 0)
        connection.write(b"\r\n\r\n" + FRAMES[1] + part(FRAMES[2]))

    server = CameraServer(huge_header)
    port = await server.listen(reactor)
    listener = RecordingListener()
    source = MJPEGSource(reactor, listener, HttpSourceSettings(f"http://127.0.0.1:{port}/"))
    try:
        source.open()
        await wait_for(reactor, lambda: len(listener.frames) >= 2)
        assert listener.frames == [FRAMES[0], FRAMES[2]]
        assert source.stats.discarded == 1
    finally:
        source.close()
        await wait_for(reactor, lambda: not server.open)
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_loopback_slow_jpeg_server(reactor: Any) -> None:
    async def slow(connection: ServerConnection, request: Request) -> None:
        from tests.httpcams import sleep

        await sleep(reactor, 0.3)
        answer = image_answer(FRAMES[len(server.requests) % 5])
        connection.write(answer[:500])
        await sleep(reactor, 0.3)
        connection.write(answer[500:])

    server = CameraServer(slow)
    port = await server.listen(reactor)
    listener = RecordingListener()
    source = JPEGSource(reactor, listener, HttpSourceSettings(f"http://127.0.0.1:{port}/x.jpg"))
    try:
        source.open()
        await wait_for(reactor, lambda: len(listener.frames) == 1)
        for _ in range(3):
            source.request_frame()
            source.request_frame()
        await wait_for(reactor, lambda: len(listener.frames) == 2)
        assert len(server.requests) == 2
        assert server.most_at_once == 1
    finally:
        source.close()
        await wait_for(reactor, lambda: not server.open)
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_loopback_redirect_to_another_host_loses_credentials(reactor: Any) -> None:
    seen: list[Request] = []

    async def target(connection: ServerConnection, request: Request) -> None:
        seen.append(request)
        connection.write(stream_head() + part(FRAMES[0]))

    other = CameraServer(target)
    other_port = await other.listen(reactor)

    async def redirector(connection: ServerConnection, request: Request) -> None:
        seen.append(request)
        if request.path == "/same":
            location = b"/stream"
        else:
            location = b"http://localhost:%d/stream" % other_port
        if request.path == "/stream":
            connection.write(stream_head() + part(FRAMES[1]))
            return
        connection.write(response_head(b"302 Found", {b"Location": location}, length=0))

    first = CameraServer(redirector)
    port = await first.listen(reactor)
    try:
        for path, host in (("/same", "127.0.0.1"), ("/away", "localhost")):
            listener = RecordingListener()
            url = f"http://alice:wonder@127.0.0.1:{port}{path}"
            source = MJPEGSource(reactor, listener, HttpSourceSettings(url))
            source.open()
            await wait_for(reactor, lambda listener=listener: len(listener.frames) >= 1)
            source.close()
            final = seen[-1]
            assert final.headers["host"].startswith(host)
            assert ("authorization" in final.headers) is (host == "127.0.0.1")
    finally:
        await wait_for(reactor, lambda: not first.open and not other.open)
        await first.stop()
        await other.stop()


@pytest_twisted.ensureDeferred
async def test_loopback_https_checked_against_a_ca_file(reactor: Any, tmp_path: Any) -> None:
    from twisted.internet.endpoints import serverFromString

    from tests.certs import make_self_signed

    certs = make_self_signed(tmp_path)

    async def handle(connection: ServerConnection, request: Request) -> None:
        connection.write(stream_head() + part(FRAMES[0]))

    server = CameraServer(handle)
    listening = await serverFromString(reactor, certs.endpoint()).listen(server)
    port = listening.getHost().port
    try:
        trusted = RecordingListener()
        settings = HttpSourceSettings(
            f"https://localhost:{port}/", trust_root=load_ca_file(certs.cert)
        )
        source = MJPEGSource(reactor, trusted, settings)
        source.open()
        await wait_for(reactor, lambda: len(trusted.frames) == 1)
        source.close()

        untrusted = RecordingListener()
        settings = HttpSourceSettings(f"https://localhost:{port}/")  # system CAs only
        source = MJPEGSource(reactor, untrusted, settings)
        source.open()
        await wait_for(reactor, lambda: source.last_error is not None)
        source.close()
        assert untrusted.frames == []
        assert (source.last_error or "").startswith("TLS failed")
    finally:
        await wait_for(reactor, lambda: not server.open)
        await listening.stopListening()


def esp32_servers(
    reactor: Any, status: dict[str, Any], *, stream_path: str = "/stream"
) -> tuple[CameraServer, CameraServer]:
    """A two-port ESP32 web server: controls, and a stream server that serves one client
    at a time (a second one waits, unanswered, as on the firmware)."""
    lights: list[str] = []

    async def control(connection: ServerConnection, request: Request) -> None:
        if request.path == "/status":
            connection.write(plain_answer(b"200 OK", json.dumps(status).encode()))
        elif request.path.startswith("/control?"):
            lights.append(request.path)
            connection.write(plain_answer(b"200 OK"))
        else:
            connection.write(plain_answer(b"404 Not Found"))
        connection.finish()

    busy: list[ServerConnection] = []

    async def stream(connection: ServerConnection, request: Request) -> None:
        from tests.httpcams import sleep

        if request.path != stream_path:
            connection.write(plain_answer(b"404 Not Found"))
            connection.finish()
            return
        while busy and not busy[0].gone:
            await sleep(reactor, 0.01)  # the one stream handler is taken
        busy[:] = [connection]
        connection.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary="
            + BOUNDARY
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        n = 0
        while not connection.gone:
            connection.write_chunk(part(FRAMES[n % 5]))
            n += 1
            await sleep(reactor, 0.02)

    controls = CameraServer(control)
    controls.lights = lights  # type: ignore[attr-defined]
    return controls, CameraServer(stream)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize(
    ("status", "stream_path", "variable"),
    [
        (CAMERAWEBSERVER_STATUS, "/stream", "led_intensity"),
        (EASYTARGET_STATUS, "/", "lamp"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_loopback_esp32(
    reactor: Any,
    tmp_path: Any,
    status: dict[str, Any],
    stream_path: str,
    variable: str,
    transport: str,
) -> None:
    """The firmware's PORT and PORT+1, routed as the demo routes its emulated cameras."""
    from camproxy.sources.http import RoutedEndpointFactory

    controls, stream = esp32_servers(reactor, status, stream_path=stream_path)
    if transport == "tcp":
        control_at = f"tcp:127.0.0.1:{await controls.listen(reactor)}"
        stream_at = f"tcp:127.0.0.1:{await stream.listen(reactor)}"
    else:
        control_at = "unix:path=" + await controls.listen_unix(reactor, f"{tmp_path}/c.sock")
        stream_at = "unix:path=" + await stream.listen_unix(reactor, f"{tmp_path}/s.sock")
    routes = RoutedEndpointFactory(
        reactor, {("democam-esp32", 80): control_at, ("democam-esp32", 81): stream_at}
    )
    listener = RecordingListener()
    settings = HttpSourceSettings("http://democam-esp32:80", endpoint_factory=routes)
    source = Esp32Source(reactor, listener, settings, retry_policy=lambda n: 0.05)
    try:
        source.open()
        await wait_for(reactor, lambda: len(listener.frames) >= 3)
        assert source.capabilities.light and source.light_variable == variable
        await source.set_light(True)
        await source.set_light(False)
        assert controls.lights == [  # type: ignore[attr-defined]
            f"/control?var={variable}&val={255 if variable == 'led_intensity' else 100}",
            f"/control?var={variable}&val=0",
        ]
        for _ in range(3):  # idle close and reopen, quickly
            source.close()
            source.open()
        before = len(listener.frames)
        await wait_for(reactor, lambda: len(listener.frames) >= before + 3)
        assert stream.most_at_once == 1
        assert all("/capture" not in r.path for r in controls.requests)
    finally:
        source.close()
        await source.when_closed()
        await wait_for(reactor, lambda: not stream.open and not controls.open)
        await controls.stop()
        await stream.stop()


def test_listener_deferred_type() -> None:
    # set_light's Deferred is a real Deferred (the hub adds callbacks to it).
    rig = Rig(MJPEGSource, "http://cam/v")
    light = rig.source.set_light(True)
    assert isinstance(light, Deferred)
    light.addErrback(lambda f: None)
