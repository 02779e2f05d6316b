"""Tests for the generic emulated cameras: the MJPEG stream server and the JPEG snapshot server."""

from __future__ import annotations

import re
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer
from twisted.internet.task import Clock

from camproxy.democam.httpcam import ESP_BOUNDARY, HttpCameraServer, MultipartStyle
from camproxy.democam.mjpeg import (
    ESPHOME_STREAM,
    GENERIC_STREAM,
    JpegServer,
    MjpegServer,
    PatternCamera,
    listen_jpeg_camera,
    listen_mjpeg_camera,
)
from tests.test_democam_http import (
    LOOPBACK,
    RawClient,
    _reactor,
    cameras,
    connect,
    dechunk,
    fetch,
    image,
    is_jpeg,
    multipart,
    split_head,
    split_responses,
    wire,
)

__all__ = ["cameras"]  # the fixture, shared with test_democam_http


def small() -> PatternCamera:
    return PatternCamera(now=_reactor().seconds, width=160, height=120)


async def mjpeg(cameras: list[HttpCameraServer], **knobs: Any) -> MjpegServer:
    knobs.setdefault("camera", small())
    knobs.setdefault("fps", 25.0)
    camera = await listen_mjpeg_camera(_reactor(), LOOPBACK, **knobs)
    cameras.append(camera)
    return camera


async def jpeg(cameras: list[HttpCameraServer], **knobs: Any) -> JpegServer:
    knobs.setdefault("camera", small())
    camera = await listen_jpeg_camera(_reactor(), LOOPBACK, **knobs)
    cameras.append(camera)
    return camera


def body_of(client: RawClient, style: MultipartStyle) -> bytes:
    return client.stream() if style.chunked else client.body()


def test_pattern_camera_pictures_differ_and_are_checked() -> None:
    camera = PatternCamera(width=64, height=48)
    first, second = camera.picture(), camera.picture()
    assert is_jpeg(first) and first != second and camera.pictures == 2
    assert image(first).size == (64, 48)
    assert image(first).info["comment"].startswith(b"democam frame 1 at ")  # a JPEG comment
    with pytest.raises(ValueError):
        PatternCamera(width=8)
    with pytest.raises(ValueError):
        PatternCamera(quality=0)
    with pytest.raises(ValueError):
        MjpegServer(Clock(), path="stream")
    with pytest.raises(ValueError):
        MjpegServer(Clock(), fps=0)


def test_esphome_stream_bytes_on_a_fake_clock() -> None:
    clock = Clock()
    camera = MjpegServer(
        clock,
        PatternCamera(now=clock.seconds, width=32, height=32),
        style=ESPHOME_STREAM,
        fps=10,
    )
    protocol, transport = wire(camera, "stream")
    protocol.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    head = (
        b"HTTP/1.0 200 OK\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n"
        b"Content-Type: multipart/x-mixed-replace;boundary=" + ESP_BOUNDARY.encode() + b"\r\n\r\n"
        b"--" + ESP_BOUNDARY.encode() + b"\r\n"
    )
    data = transport.value()
    assert data.startswith(head)
    part = data[len(head) :]
    match = re.match(rb"Content-Type: image/jpeg\r\nContent-Length: (\d+)\r\n\r\n", part)
    assert match is not None
    length = int(match.group(1))
    jpeg_bytes = part[match.end() : match.end() + length]
    assert is_jpeg(jpeg_bytes)
    assert part[match.end() + length :] == b"\r\n--" + ESP_BOUNDARY.encode() + b"\r\n"
    camera.faults.name = "close"
    camera.faults.close_after = 1
    clock.advance(0.1)
    assert transport.disconnecting  # close-delimited: the end of the body is the close
    protocol.connectionLost(None)
    assert clock.getDelayedCalls() == []


STYLES = {
    "generic": GENERIC_STREAM,
    "esphome": ESPHOME_STREAM,
    "quoted": MultipartStyle(boundary="my boundary?", quote=True, space=True),
    "no-length": MultipartStyle(boundary="--x--", content_length=False, headers=()),
    "extra-headers": MultipartStyle(
        boundary="b", part_headers=(("X-Source", "democam"), ("X-Frame", "n")), timestamp=True
    ),
    "close-delimited": MultipartStyle(
        boundary="frame", chunked=False, boundary_first=True, content_length=False
    ),
    "boundary-after": MultipartStyle(boundary="after", boundary_first=False, leading_crlf=False),
}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("name", list(STYLES))
async def test_mjpeg_variants(cameras: list[HttpCameraServer], name: str) -> None:
    style = STYLES[name]
    camera = await mjpeg(cameras, style=style, path="/video.mjpg")
    client = await connect(camera, "stream")
    client.get("/video.mjpg")
    boundary = style.boundary.encode()
    await client.until(lambda: len(multipart(body_of(client, style), boundary)) >= 3)
    parsed = split_head(client.data)
    assert parsed is not None
    head = parsed[0]
    assert head.get(b"Content-Type") == style.content_type.encode()
    assert (head.get(b"Transfer-Encoding") == b"chunked") == style.chunked
    assert head.status_line == (b"HTTP/1.1 200 OK" if style.chunked else b"HTTP/1.0 200 OK")
    parts = multipart(body_of(client, style), boundary)
    for part in parts:
        assert part.headers[b"content-type"] == b"image/jpeg"
        assert (b"content-length" in part.headers) == style.content_length
        if style.content_length:
            assert int(part.headers[b"content-length"]) == len(part.payload)
        for header, value in style.part_headers:
            assert part.headers[header.lower().encode()] == value.encode()
        assert is_jpeg(part.payload)
        assert image(part.payload).size == (160, 120)
    if style.timestamp:
        assert all(re.fullmatch(rb"\d+\.\d{6}", p.headers[b"x-timestamp"]) for p in parts)
    assert len({part.payload for part in parts}) == len(parts)
    client.close()
    await camera.when_streams(0)


@pytest_twisted.ensureDeferred
async def test_mjpeg_serves_many_clients_unless_single(cameras: list[HttpCameraServer]) -> None:
    camera = await mjpeg(cameras)
    clients = [await connect(camera, "stream") for _ in range(3)]
    for client in clients:
        client.get("/")
    await camera.when_streams(3)
    for client in clients:
        await client.until(lambda c=client: len(multipart(c.stream(), b"frame")) >= 1)  # type: ignore[misc]
        client.close()
    await camera.when_streams(0)

    single = await mjpeg(cameras, style=ESPHOME_STREAM, single_client=True)
    first, second = await connect(single, "stream"), await connect(single, "stream")
    first.get("/")
    second.get("/")
    await single.when(lambda: len(single.stream.waiting) == 1)
    await single.when_frames(4)
    assert single.streams_active == 1 and b"" in (first.data, second.data)
    served = first if first.data else second
    served.close()
    other = second if served is first else first
    await other.until(lambda: len(multipart(other.body(), ESP_BOUNDARY.encode())) >= 1)
    other.close()


@pytest_twisted.ensureDeferred
async def test_mjpeg_wrong_path_is_404(cameras: list[HttpCameraServer]) -> None:
    camera = await mjpeg(cameras, path="/stream")
    client = await fetch(camera, "stream", "/")
    assert split_responses(client.data)[0][0].code == 404
    await client.closed


@pytest_twisted.ensureDeferred
async def test_mjpeg_faults_not_chunked(cameras: list[HttpCameraServer]) -> None:
    camera = await mjpeg(cameras, style=ESPHOME_STREAM, fault="truncated")
    client = await connect(camera, "stream")
    client.get("/")
    boundary = ESP_BOUNDARY.encode()
    await client.until(lambda: len(multipart(client.body(), boundary)) >= 2)
    first, second = multipart(client.body(), boundary)[:2]
    assert not is_jpeg(first.payload) and int(first.headers[b"content-length"]) == len(
        first.payload
    )
    assert int(second.headers[b"content-length"]) > len(second.payload)
    await camera.set_fault("stall")
    await camera.when_ticks(camera.stream_ticks + 5)
    seen = len(client.data)
    await camera.when_ticks(camera.stream_ticks + 5)
    assert len(client.data) == seen and not client.closed.called
    client.close()


@pytest_twisted.ensureDeferred
async def test_jpeg_server(cameras: list[HttpCameraServer]) -> None:
    camera = await jpeg(cameras, path="/snapshot.jpg")
    url = camera.url("snapshot", "/snapshot.jpg")
    bodies = []
    for _ in range(2):
        response = await treq.get(url, persistent=False)
        assert response.code == 200
        assert response.headers.getRawHeaders("Content-Type") == ["image/jpeg"]
        bodies.append(await response.content())
    assert all(is_jpeg(body) for body in bodies) and bodies[0] != bodies[1]
    client = await fetch(camera, "snapshot", "/snapshot.jpg")
    [(head, body)] = split_responses(client.data)
    assert head.raw == (
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
        b"Content-Disposition: inline; filename=capture.jpg\r\n\r\n" % len(body)
    )
    missing = await fetch(camera, "snapshot", "/")
    assert split_responses(missing.data)[0][0].code == 404
    assert camera.camera.pictures == 3
    assert camera.snapshot.requests_total == len(camera.snapshot.requests) == 4


@pytest_twisted.ensureDeferred
async def test_jpeg_slow_answers_and_concurrency(cameras: list[HttpCameraServer]) -> None:
    reactor = _reactor()
    camera = await jpeg(cameras, fault="slow", slow_seconds=0.3)
    start = reactor.seconds()
    clients = [await connect(camera, "snapshot") for _ in range(2)]
    for client in clients:
        client.get("/")
    for client in clients:
        await client.until(lambda c=client: bool(split_responses(c.data)))  # type: ignore[misc]
    assert reactor.seconds() - start >= 0.29
    assert camera.snapshot.in_flight_max == 2  # a generic server answers both at once

    single = await jpeg(cameras, fault="slow", slow_seconds=0.2, single_client=True)
    start = reactor.seconds()
    clients = [await connect(single, "snapshot") for _ in range(2)]
    for client in clients:
        client.get("/")
    for client in clients:
        await client.until(lambda c=client: bool(split_responses(c.data)))  # type: ignore[misc]
    assert reactor.seconds() - start >= 0.39  # one after the other
    assert single.snapshot.in_flight_max == 1


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("fault", ["not-jpeg", "huge", "truncated", "stall", "close"])
async def test_jpeg_faults(cameras: list[HttpCameraServer], fault: str) -> None:
    camera = await jpeg(cameras, fault=fault)
    client = await connect(camera, "snapshot")
    client.get("/")
    if fault == "stall":
        await client.until(lambda: split_head(client.data) is not None)
        await camera.when(lambda: camera.snapshot.in_flight == 1)
        head, rest = split_head(client.data) or (None, b"")
        assert head is not None and int(head.get(b"Content-Length") or 0) > len(rest)
        assert not client.closed.called
        client.close()
        return
    await client.closed.addTimeout(30, _reactor()) if fault in ("truncated", "close") else None
    if fault == "close":
        assert client.data == b""
        return
    if fault == "truncated":
        parsed = split_head(client.data)
        assert parsed is not None
        head, rest = parsed
        assert int(head.get(b"Content-Length") or 0) > len(rest) and rest.startswith(b"\xff\xd8")
        return
    await client.until(lambda: bool(split_responses(client.data)), timeout=30)
    [(head, body)] = split_responses(client.data)
    if fault == "huge":
        assert len(body) > 10_000_000 and is_jpeg(body)
    else:
        assert not body.startswith(b"\xff\xd8")
    client.close()


@pytest_twisted.ensureDeferred
async def test_jpeg_auth_and_status_faults(cameras: list[HttpCameraServer]) -> None:
    camera = await jpeg(cameras, user="cam", password="pw")
    url = camera.url("snapshot")
    denied = await treq.get(url, persistent=False)
    assert denied.code == 401 and denied.headers.getRawHeaders("WWW-Authenticate")
    await denied.content()
    allowed = await treq.get(url, auth=("cam", "pw"), persistent=False)
    assert allowed.code == 200 and is_jpeg(await allowed.content())
    await camera.set_fault("status-500")
    failing = await treq.get(url, auth=("cam", "pw"), persistent=False)
    assert failing.code == 500
    await failing.content()
    await camera.set_fault("black-hole")
    client = await connect(camera, "snapshot")
    client.get("/")
    await camera.when(lambda: len(camera.held) == 1)
    assert client.data == b""
    client.close()


@pytest_twisted.ensureDeferred
async def test_mjpeg_on_a_unix_socket(cameras: list[HttpCameraServer], tmp_path: Any) -> None:
    camera = await listen_mjpeg_camera(
        _reactor(), f"unix:{tmp_path / 'stream.sock'}", camera=small(), fps=25
    )
    cameras.append(camera)
    client = await connect(camera, "stream")
    client.get("/")
    await client.until(lambda: len(multipart(client.stream(), b"frame")) >= 2)
    assert dechunk(client.body())[1] is False
    client.close()
    await defer.gatherResults([client.closed, camera.when_streams(0)])
