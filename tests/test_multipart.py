"""The MJPEG push parser: firmware byte streams, arbitrary chunking, garbage and limits."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camproxy.hub.source import is_jpeg
from camproxy.sources.multipart import (
    DEFAULT_MAX_HEADER_SIZE,
    MJPEGParser,
    boundary_from_content_type,
)

#: The boundary both ESP32 firmwares declare (``PART_BOUNDARY`` in their app_httpd.cpp).
ESP_BOUNDARY = b"123456789000000000000987654321"
ESP_CONTENT_TYPE = b"multipart/x-mixed-replace;boundary=" + ESP_BOUNDARY


def jpeg(size: int, seed: int = 0) -> bytes:
    """A JPEG-delimited blob whose inside holds no 0xFF (so no stray FF D9)."""
    inner = bytes((i * 31 + seed * 7 + 1) % 255 for i in range(max(0, size - 4)))
    return b"\xff\xd8" + inner + b"\xff\xd9"


def espressif_stream(frames: list[bytes]) -> bytes:
    """What Espressif's CameraWebServer writes after its headers: for every frame the
    delimiter (CRLF first), the part headers with Content-Length and X-Timestamp, the
    JPEG; never a closing delimiter."""
    out = bytearray()
    for n, frame in enumerate(frames):
        out += b"\r\n--" + ESP_BOUNDARY + b"\r\n"
        out += b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n" % len(frame)
        out += b"X-Timestamp: %d.%06d\r\n\r\n" % (1000 + n, 123456)
        out += frame
    return bytes(out)


def easytarget_stream(frames: list[bytes]) -> bytes:
    """What esp32-cam-webserver writes: one delimiter first, then for every frame its
    headers (Content-Length, no timestamp), the JPEG and the next delimiter."""
    out = bytearray(b"\r\n--" + ESP_BOUNDARY + b"\r\n")
    for frame in frames:
        out += b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(frame)
        out += frame
        out += b"\r\n--" + ESP_BOUNDARY + b"\r\n"
    return bytes(out)


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class Collector:
    def __init__(self, boundary: bytes = ESP_BOUNDARY, **limits: int) -> None:
        self.parts: list[bytes] = []
        self.discards: list[str] = []
        self.parser = MJPEGParser(
            boundary, self.parts.append, on_discard=self.discards.append, **limits
        )
        self.peak = 0

    def feed_all(self, pieces: Iterator[bytes] | list[bytes]) -> Collector:
        for piece in pieces:
            self.parser.feed(piece)
            self.peak = max(self.peak, self.parser.buffered)
        return self


FRAMES = [jpeg(30_000, seed) for seed in range(4)]


# -- the Content-Type -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        (ESP_CONTENT_TYPE, ESP_BOUNDARY),
        (b"multipart/x-mixed-replace; boundary=frame", b"frame"),
        (b'multipart/x-mixed-replace; boundary="my frame"', b"my frame"),
        (b'multipart/x-mixed-replace;boundary="a\\"b"', b'a"b'),
        (b"multipart/x-mixed-replace; boundary=--myboundary", b"myboundary"),
        (b"Multipart/X-Mixed-Replace; BOUNDARY = ffserver ; charset=x", b"ffserver"),
        (b"multipart/x-mixed-replace; charset=utf-8; boundary=b1", b"b1"),
        ("multipart/x-mixed-replace;boundary=text", b"text"),
        (b"multipart/x-mixed-replace", b""),
        (b"image/jpeg", None),
        (b"text/html; boundary=x", None),
        (None, None),
    ],
)
def test_boundary_from_content_type(content_type: bytes | str | None, boundary: bytes) -> None:
    assert boundary_from_content_type(content_type) == boundary


# -- what the firmwares write ----------------------------------------------------------------


@pytest.mark.parametrize("read_size", [1, 7, 1460, 16384, 1 << 20])
@pytest.mark.parametrize("stream", [espressif_stream, easytarget_stream])
def test_firmware_streams_give_exactly_their_frames(stream: object, read_size: int) -> None:
    assert callable(stream)
    got = Collector().feed_all(chunks(stream(FRAMES), read_size))
    assert got.parts == FRAMES
    assert got.discards == []
    # Never much more than one part and one read held.
    assert got.peak <= max(map(len, FRAMES)) + read_size + 256


def test_a_frame_is_delivered_when_its_last_byte_arrives() -> None:
    """CameraWebServer sends the delimiter *before* each part: Content-Length ends the
    part, so a frame does not wait for the next one."""
    got = Collector().feed_all([espressif_stream(FRAMES[:1])])
    assert got.parts == FRAMES[:1]


def test_without_content_length_the_next_boundary_ends_a_part() -> None:
    stream = espressif_stream(FRAMES).replace(b"Content-Length", b"X-Length")
    got = Collector().feed_all(chunks(stream, 1460))
    # The last part has no delimiter after it yet.
    assert got.parts == FRAMES[:-1]
    got.feed_all([b"\r\n--" + ESP_BOUNDARY + b"\r\n"])
    assert got.parts == FRAMES


def test_other_part_headers_are_ignored() -> None:
    frame = FRAMES[0]
    stream = (
        b"--" + ESP_BOUNDARY + b"\r\nX-Timestamp: 1.2\r\ncontent-type:image/jpeg\r\n"
        b"X-Whatever: Content-Length: 5\r\ncontent-length:  %d \r\n\r\n" % len(frame) + frame
    )
    assert Collector().feed_all([stream]).parts == [frame]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: s.replace(b"\r\n", b"\n"), id="LF line ends"),
        pytest.param(lambda s: s.replace(b"--" + ESP_BOUNDARY, b"----" + ESP_BOUNDARY), id="----B"),
        pytest.param(lambda s: s.replace(b"--" + ESP_BOUNDARY, ESP_BOUNDARY), id="no dashes"),
        pytest.param(lambda s: s.replace(b"\r\n--", b"--", 1), id="no CRLF before the first"),
        pytest.param(lambda s: s.replace(b"\r\n\r\n", b"\r\n"), id="no blank line before FFD8"),
    ],
)
def test_common_mistakes_are_tolerated(mangle: object) -> None:
    assert callable(mangle)
    for read_size in (1, 1460):
        got = Collector().feed_all(chunks(mangle(easytarget_stream(FRAMES)), read_size))
        assert got.parts == FRAMES


def test_a_boundary_declared_with_dashes_is_found() -> None:
    boundary = boundary_from_content_type(b"multipart/x-mixed-replace;boundary=--frame")
    assert boundary is not None
    stream = b"--frame\r\nContent-Length: %d\r\n\r\n" % len(FRAMES[0]) + FRAMES[0]
    assert Collector(boundary).feed_all([stream]).parts == FRAMES[:1]


def test_an_undeclared_boundary_is_learned_from_the_body() -> None:
    got = Collector(b"").feed_all(chunks(b"junk\r\n" + easytarget_stream(FRAMES), 100))
    assert got.parts == FRAMES
    assert got.parser.boundary == ESP_BOUNDARY


def test_a_closing_delimiter_ends_parts_and_what_follows_is_skipped() -> None:
    stream = (
        b"--b\r\nContent-Length: %d\r\n\r\n" % len(FRAMES[0]) + FRAMES[0] + b"\r\n--b--\r\n"
        b"epilogue\r\n--b\r\n\r\n" + FRAMES[1] + b"\r\n--b\r\n"
    )
    assert Collector(b"b").feed_all(chunks(stream, 3)).parts == FRAMES[:2]


def test_the_wrong_boundary_yields_nothing_and_holds_little() -> None:
    got = Collector(b"not-the-boundary").feed_all(chunks(espressif_stream(FRAMES * 10), 1460))
    assert got.parts == []
    assert got.peak < 1460 + 64
    assert got.parser.skipped_bytes > 1_000_000


# -- limits -----------------------------------------------------------------------------


def test_a_part_over_the_cap_is_skipped_and_parsing_goes_on() -> None:
    big = jpeg(300_000)
    for stream in (espressif_stream, easytarget_stream):
        for strip_length in (False, True):
            data = stream([FRAMES[0], big, FRAMES[1], FRAMES[2]])
            if strip_length:
                data = data.replace(b"Content-Length", b"X-Length")
            got = Collector(max_part_size=100_000).feed_all(chunks(data, 1460))
            expected = [FRAMES[0], FRAMES[1]] if strip_length else FRAMES[:3]
            if strip_length and stream is easytarget_stream:
                expected = FRAMES[:3]  # its last part is followed by a delimiter
            assert got.parts == expected
            assert len(got.discards) == 1 and "limit" in got.discards[0]
            assert got.peak <= 100_000 + 1460 + 256


def test_a_ten_megabyte_header_line_is_never_buffered() -> None:
    stream = (
        b"\r\n--" + ESP_BOUNDARY + b"\r\nX-Junk: " + b"a" * 10_000_000 + b"\r\n\r\n" + jpeg(100)
    )
    got = Collector().feed_all(chunks(stream + easytarget_stream(FRAMES), 16384))
    assert got.parts == FRAMES
    assert got.discards == [f"part headers over {DEFAULT_MAX_HEADER_SIZE} bytes"]
    assert got.peak <= DEFAULT_MAX_HEADER_SIZE + 16384


def test_many_small_headers_over_the_cap_are_skipped() -> None:
    headers = b"X-A: b\r\n" * 5000
    stream = b"--b\r\n" + headers + b"\r\n" + FRAMES[0] + b"\r\n--b\r\n\r\n" + FRAMES[1]
    got = Collector(b"b").feed_all(chunks(stream + b"\r\n--b\r\n", 1000))
    assert got.parts == [FRAMES[1]]
    assert len(got.discards) == 1


def test_a_content_length_that_covers_a_boundary_is_not_believed() -> None:
    short, good = FRAMES[0][:1000], FRAMES[1]
    stream = (
        b"--b\r\nContent-Length: 5000\r\n\r\n" + short + b"\r\n--b\r\n"
        b"Content-Length: %d\r\n\r\n" % len(good) + good + b"\r\n--b\r\n"
    )
    got = Collector(b"b").feed_all(chunks(stream, 100))
    assert got.parts == [short, good]


@pytest.mark.parametrize("read_size", [64, 1460])
def test_reading_is_linear(read_size: int) -> None:
    """A 4 MB part without Content-Length and a 10 MB header line, in small reads:
    quadratic rescanning would take minutes."""
    started = time.process_time()
    data = b"--b\r\n\r\n" + b"\x00" * 4_000_000 + b"\r\n--b\r\nX: " + b"y" * 10_000_000
    got = Collector(b"b").feed_all(chunks(data, read_size))
    assert len(got.parts) == 1 and len(got.discards) == 1
    assert time.process_time() - started < 10


# -- properties ---------------------------------------------------------------------------

frames_st = st.lists(
    st.integers(min_value=4, max_value=3000).flatmap(
        lambda n: st.binary(min_size=n - 4, max_size=n - 4).map(
            lambda inner: b"\xff\xd8" + inner.replace(b"\xff", b"\x00") + b"\xff\xd9"
        )
    ),
    min_size=1,
    max_size=6,
)


@st.composite
def valid_streams(draw: st.DrawFn) -> tuple[bytes, bytes, list[bytes]]:
    """A well-formed stream in one of the styles cameras use, and its parts."""
    frames = draw(frames_st)
    boundary = draw(st.sampled_from([ESP_BOUNDARY, b"frame", b"--myboundary", b"ffserver"]))
    newline = draw(st.sampled_from([b"\r\n", b"\n"]))
    dashes = draw(st.sampled_from([b"--", b"----", b""]))
    lengths = draw(st.booleans())
    delimiter_first = draw(st.booleans())
    extra = draw(st.sampled_from([b"", b"X-Timestamp: 1.000001", b"Content-Type: image/jpeg"]))
    delimiter = newline + dashes + boundary.lstrip(b"-") + newline
    out = bytearray(draw(st.sampled_from([b"", b"\r\n", b"preamble\r\n"])))
    for frame in frames:
        if delimiter_first or not out.endswith(delimiter):
            out += delimiter
        if extra:
            out += extra + newline
        if lengths:
            out += b"Content-Length: %d" % len(frame) + newline
        out += newline + frame
        if not delimiter_first:
            out += delimiter
    if delimiter_first and not lengths:
        out += delimiter  # without lengths, a part ends at the next delimiter
    return bytes(out), boundary, frames


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_streams(), st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_of_a_valid_stream_yields_exactly_its_parts(
    stream: tuple[bytes, bytes, list[bytes]], cuts: list[int]
) -> None:
    data, boundary, frames = stream
    got = Collector(boundary).feed_all(split(data, cuts))
    assert got.parts == frames
    assert got.discards == []


TOKENS = [
    b"\r\n",
    b"\n",
    b"--",
    b"b0undary",
    b"--b0undary\r\n",
    b"\r\n--b0undary\r\n",
    b"--b0undary--\r\n",
    b"Content-Length: 10\r\n",
    b"Content-Length: 99999999\r\n",
    b"content-length:x\r\n",
    b"\xff\xd8",
    b"\xff\xd9",
    b":",
    b"\x00" * 50,
]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=40)), max_size=60),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_garbage_never_crashes_and_limits_hold(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    got = Collector(b"b0undary", max_part_size=64, max_header_size=48)
    for piece in split(data, cuts):
        got.parser.feed(piece)
        # Never more than a part's cap, plus one read, plus a delimiter line's worth.
        assert got.parser.buffered <= 64 + len(piece) + 128
    assert all(len(part) <= 64 for part in got.parts)
    assert all(part in data for part in got.parts)


@st.composite
def damaged_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[bool]]:
    """Valid parts mixed with damaged ones; returns the stream, the frames, and which
    positions were damaged."""
    frames = draw(frames_st)
    out = bytearray(b"\r\n")
    damaged: list[bool] = []
    for frame in frames:
        kind = draw(
            st.sampled_from(["ok", "ok", "truncated", "long", "nolength", "headers", "huge"])
        )
        damaged.append(kind not in ("ok", "nolength"))
        out += b"--b\r\nContent-Type: image/jpeg\r\n"
        body = frame
        if kind == "truncated":  # fewer bytes than announced
            body = frame[: draw(st.integers(0, len(frame) - 1))]
            out += b"Content-Length: %d\r\n" % len(frame)
        elif kind == "long":  # more bytes than announced
            out += b"Content-Length: %d\r\n" % draw(st.integers(0, len(frame) - 1))
        elif kind == "headers":
            out += b"X-Junk: " + b"j" * 5000 + b"\r\n"
        elif kind == "huge":
            body = b"\xff\xd8" + b"\x01" * 9000 + b"\xff\xd9"
            out += b"Content-Length: %d\r\n" % len(body)
        elif kind == "ok":
            out += b"Content-Length: %d\r\n" % len(frame)
        out += b"\r\n" + body + b"\r\n"
    # A live stream goes on: enough bytes for any length that lied to run out.
    out += b"--b\r\n" + b"\x00" * 9000
    return bytes(out), frames, damaged


@settings(max_examples=300, deadline=None)
@given(damaged_streams(), st.lists(st.integers(min_value=0), max_size=30))
def test_damaged_parts_never_become_frames_and_the_parser_recovers(
    stream: tuple[bytes, list[bytes], list[bool]], cuts: list[int]
) -> None:
    data, frames, damaged = stream
    got = Collector(b"b", max_part_size=8000, max_header_size=4096).feed_all(split(data, cuts))
    # Nothing that looks like a frame is ever spliced from pieces of several parts.
    for part in got.parts:
        if is_jpeg(part):
            assert part in frames
    # A good part is lost only right after a damaged one (whose length may swallow its
    # delimiter).
    for index, frame in enumerate(frames):
        if not damaged[index] and (index == 0 or not damaged[index - 1]):
            assert frame in got.parts
