"""Every camera kind end to end (CONTRACT §6 and §7, issue 14): a whole daemon on 127.0.0.1
watching the emulated firmwares of :mod:`camproxy.democam`.

For each kind: viewers of ``/cam/NAME/ws`` get the very frames the emulator sent, in order;
``snapshot.jpg`` and ``stream.mjpg`` work; ``hello`` and ``/api/cameras`` carry the kind's
capabilities; commands the kind cannot do are refused before they reach the camera; there
is one connection to the camera's video however many watch, none while nobody does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import threads
from twisted.logger import formatEvent, globalLogPublisher

from camproxy.accounts.cameras import CameraChanges
from camproxy.democam.httpcam import ESPHOME_STREAM, STOCK_STREAM, HttpCameraServer
from camproxy.democam.mjpeg import GENERIC_STREAM, MultipartStyle
from tests.clirun import camproxy
from tests.conftest import RunningDaemon
from tests.httpscene import (
    Emulators,
    Headers,
    HealthWatch,
    Peaks,
    RecordedFrames,
    apply_changes,
    assert_valid_frames,
    base_url,
    camera_viewer,
    cookie,
    emulators,
    get,
    listed,
    record,
    statuses,
    wait_until,
    within,
)
from tests.test_camera_faults import LogCapture
from tests.test_integrations import PartCollector
from tests.wsclient import RecordingViewer, close_viewer

__all__ = ["emulators"]  # the fixture, for pytest

#: Seconds without viewers before a link closes, in these tests.
IDLE = 0.6
NO_CONTROLS = {"pan_tilt": False, "light": False}
LIGHT_ONLY = {"pan_tilt": False, "light": True}
PAN_TILT_COMMANDS: list[dict[str, Any]] = [
    {"type": "servo_command", "command": "up"},
    {"type": "position_command", "x": 90, "y": 45},
    {"type": "get_position"},
]
LIGHT_COMMAND = {"type": "light_command", "state": True}


@pytest.fixture
def log() -> Iterator[LogCapture]:
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    yield capture
    globalLogPublisher.removeObserver(capture)


async def start_daemon(emulators: Emulators, daemon_factory: Any, **settings: Any) -> RunningDaemon:
    """A daemon whose ``default`` is a small MJPEG camera nobody watches (its link closes
    for idleness half a second after start); the cameras under test are added by name."""
    quiet = await emulators.mjpeg(fps=5, path="/quiet")
    return await daemon_factory(
        camera_url=quiet.url("stream", "/quiet"), idle_close=0.5, **settings
    )


async def add_camera(
    daemon: RunningDaemon, name: str, url: str, kind: str | None, **more: Any
) -> None:
    more.setdefault("idle_close", IDLE)
    await daemon.accounts.cameras.add(name, url, kind, **more)
    await apply_changes(daemon)


def in_order(frames: list[bytes], recorded: RecordedFrames) -> list[int]:
    """Where each frame is among those the camera sent; fails for one it never sent."""
    index = {frame: number for number, frame in enumerate(recorded.made)}
    missing = [number for number, frame in enumerate(frames) if frame not in index]
    assert not missing, f"frames {missing} were never sent by the camera"
    positions = [index[frame] for frame in frames]
    assert positions == sorted(set(positions)), "frames out of order or repeated"
    return positions


def assert_sent_by(frames: list[bytes], recorded: RecordedFrames, *, stream: bool = True) -> None:
    """Valid frames that the camera sent; for a ``stream``, in order and never twice (two
    snapshots may well be the same newest frame)."""
    assert frames
    assert_valid_frames(frames)
    if stream:
        in_order(frames, recorded)
    else:
        assert set(frames) <= set(recorded.made), "a snapshot the camera never sent"


async def mjpeg_parts(
    daemon: RunningDaemon, name: str, headers: Headers, count: int
) -> list[bytes]:
    """``count`` parts of ``/cam/NAME/stream.mjpg``; the stream is closed after them."""
    response = await treq.get(
        daemon.url + f"/cam/{name}/stream.mjpg", headers=headers, unbuffered=True
    )
    assert response.code == 200
    content_type = response.headers.getRawHeaders("Content-Type")[0]
    collector = PartCollector(wanted=count)
    response.deliverBody(collector)
    await within(daemon.reactor, 10.0, collector.done)
    bodies = []
    for part in collector.parts(content_type):
        assert part.get_content_type() == "image/jpeg"
        body = part.get_payload(decode=True)
        assert isinstance(body, bytes) and int(part["Content-Length"]) == len(body)
        bodies.append(body)
    assert len(bodies) >= count
    return bodies


async def snapshot(daemon: RunningDaemon, name: str, headers: Headers) -> bytes:
    response = await treq.get(daemon.url + f"/cam/{name}/snapshot.jpg", headers=headers)
    body: bytes = await response.content()
    assert response.code == 200, body
    assert response.headers.getRawHeaders("Content-Type") == ["image/jpeg"]
    return body


async def refused(reactor: Any, viewer: RecordingViewer, message: dict[str, Any]) -> str:
    """Send ``message`` and return the ``error`` it gets."""
    errors = len(viewer.of_type("error"))
    viewer.send_json(message)
    await within(reactor, 5.0, viewer.wait_for(lambda v: len(v.of_type("error")) > errors))
    text: str = viewer.of_type("error")[errors]["message"]
    return text


def requests_to(server: HttpCameraServer) -> list[str]:
    """Every request target the emulator was sent (all its servers)."""
    return [request.target for wire in server.servers.values() for request in wire.requests]


@attrs.define
class Watching:
    """Three viewers, a snapshot and an MJPEG client on one camera, checked."""

    viewers: list[RecordingViewer]
    headers: Headers
    #: The emulator's video connections (or requests) ever opened, when the first came.
    opened: int


async def watch_everything(
    daemon: RunningDaemon,
    name: str,
    recorded: RecordedFrames,
    streams: Callable[[], int],
    *,
    kind: str,
    capabilities: dict[str, bool],
) -> Watching:
    """What every kind must do for its viewers; returns them still watching.

    ``streams()`` counts the emulator's video connections ever opened."""
    reactor = daemon.reactor
    first = await camera_viewer(daemon, name, "viewer-0")
    await within(reactor, 10.0, first.wait_frames(1))
    opened = streams()
    viewers = [first] + [await camera_viewer(daemon, name, f"viewer-{n}") for n in (1, 2)]
    for viewer in viewers:
        hello = viewer.of_type("hello")[0]
        assert (hello["camera"], hello["kind"]) == (name, kind)
        assert hello["capabilities"] == capabilities
    for viewer in viewers:
        await within(reactor, 10.0, viewer.wait_frames(4))
    headers = await cookie(daemon)
    pictures = [await snapshot(daemon, name, headers) for _ in range(2)]
    assert_sent_by(pictures, recorded, stream=False)
    assert_sent_by(await mjpeg_parts(daemon, name, headers, 3), recorded)
    for viewer in viewers:
        assert_sent_by(viewer.frames, recorded)
    hub = daemon.camera(name).hub
    await wait_until(reactor, lambda: hub.viewer_count == 3, 5.0, "the MJPEG client gone")
    entry = await listed(daemon, name)
    assert (entry["kind"], entry["capabilities"]) == (kind, capabilities)
    assert entry["esp32_connected"] is True and entry["clients"] == 3
    return Watching(viewers, headers, opened)


async def refuse_what_it_cannot_do(
    reactor: Any, viewers: list[RecordingViewer], commands: list[dict[str, Any]]
) -> None:
    for number, message in enumerate(commands):
        viewer = viewers[number % len(viewers)]
        assert await refused(reactor, viewer, message), message
    for viewer in viewers:
        assert viewer.of_type("position_update") == []
        assert [u["state"] for u in viewer.of_type("light_update")] in ([], [False])


async def idle_close_and_reopen(
    reactor: Any,
    daemon: RunningDaemon,
    name: str,
    watching: Watching,
    streams: Callable[[], int],
    *,
    paced: bool = False,
) -> RecordingViewer:
    """The last viewer leaves: the link closes ``IDLE`` s later, and ``/health`` stays
    healthy meanwhile; the next viewer opens it again. ``streams()`` counts the
    emulator's video connections ever opened (for a ``paced`` camera: its requests)."""
    for viewer in watching.viewers:
        await close_viewer(viewer)
    hub = daemon.camera(name).hub
    await wait_until(reactor, lambda: not hub.link_open, IDLE + 5.0, "idle close")
    opened = streams()
    health = HealthWatch(reactor, daemon)
    await wait_until(reactor, lambda: len(health.timings) >= 8, 10.0, "/health answers")
    await health.stop()
    assert {document["status"] for document in health.documents} == {"healthy"}
    assert streams() == opened, "the camera was asked for video while nobody watched"
    viewer = await camera_viewer(daemon, name, "latecomer")
    await within(reactor, 10.0, viewer.wait_frames(3))
    if paced:
        assert streams() > opened
    else:
        assert streams() == opened + 1
    return viewer


async def a_snapshot_wakes_the_link(
    reactor: Any,
    daemon: RunningDaemon,
    name: str,
    recorded: RecordedFrames,
    streams: Callable[[], int],
) -> None:
    """With nobody watching, a snapshot opens the link for one frame (one stream, or
    one request), which closes ``IDLE`` s later."""
    hub = daemon.camera(name).hub
    await wait_until(reactor, lambda: not hub.link_open, IDLE + 5.0, "idle close")
    opened = streams()
    picture = await snapshot(daemon, name, await cookie(daemon))
    assert_sent_by([picture], recorded, stream=False)
    await wait_until(reactor, lambda: not hub.link_open, IDLE + 5.0, "idle close again")
    assert streams() == opened + 1


def more_than(count: int, kind: str) -> Callable[[RecordingViewer], bool]:
    """A viewer has more than ``count`` messages of type ``kind``."""
    return lambda viewer: len(viewer.of_type(kind)) > count


async def switch_light(reactor: Any, viewers: list[RecordingViewer], state: bool) -> None:
    """The first viewer switches the light; every viewer is told."""
    updates = [len(v.of_type("light_update")) for v in viewers]
    viewers[0].send_json({"type": "light_command", "state": state})
    for viewer, before in zip(viewers, updates, strict=True):
        await within(reactor, 5.0, viewer.wait_for(more_than(before, "light_update")))
        assert viewer.of_type("light_update")[-1]["state"] is state
        assert len(viewer.of_type("light_update")) == before + 1


# --- esp32 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("firmware", "variable", "on_value"),
    [("stock", "led_intensity", 255), ("cam-webserver", "lamp", 100)],
)
@pytest_twisted.ensureDeferred
async def test_esp32_end_to_end(
    reactor: Any,
    emulators: Emulators,
    daemon_factory: Any,
    log: LogCapture,
    firmware: str,
    variable: str,
    on_value: int,
) -> None:
    server = await emulators.firmware(firmware, fps=20)
    model: Any = server.camera
    recorded = record(model)
    peaks = Peaks(server, "stream", reactor)
    daemon = await start_daemon(emulators, daemon_factory)
    await add_camera(daemon, "porch", base_url(server) + "/", "esp32")
    source: Any = daemon.camera("porch").source
    await wait_until(reactor, lambda: source.capabilities.light, 5.0, "/status read")

    def streams() -> int:
        return server.streams_total

    watching = await watch_everything(
        daemon, "porch", recorded, streams, kind="esp32", capabilities=LIGHT_ONLY
    )
    viewers = watching.viewers
    await refuse_what_it_cannot_do(reactor, viewers, PAN_TILT_COMMANDS)
    assert set(requests_to(server)) <= {"/status", "/stream", "/"}
    # The snapshots came from the stream: /capture (which fires the flash) was never used.
    assert (getattr(model, "captures", 0), model.flashes, getattr(model, "images_served", 0)) == (
        0,
        0,
        0,
    )

    # The light, through /control, told to every viewer.
    for state, value in ((True, on_value), (False, 0), (True, on_value)):
        await switch_light(reactor, viewers, state)
        assert model.controls[-1] == (variable, value)
        assert getattr(model, "led_duty" if variable == "led_intensity" else "lamp") == value
    if variable == "led_intensity":
        assert model.led_level == 255  # it shines while the stream runs

    # A /control that fails: an error to the one who asked, no light_update to anyone.
    server.faults.scope = "control"
    await server.set_fault("status-500")
    updates = [len(v.of_type("light_update")) for v in viewers]
    controls = len(model.controls)
    message = await refused(reactor, viewers[1], {"type": "light_command", "state": False})
    assert "500" in message, message
    for viewer in viewers:  # a refused command answers in order: a barrier per socket
        await refused(reactor, viewer, {"type": "get_position"})
    assert [len(v.of_type("light_update")) for v in viewers] == updates
    assert len(model.controls) == controls
    await server.set_fault(None)
    server.faults.scope = "auto"

    # One stream all along, however many watched; none while nobody does.
    assert server.streams_total == watching.opened
    assert (peaks.streams, peaks.connections) == (1, 1)
    latecomer = await idle_close_and_reopen(reactor, daemon, "porch", watching, streams)
    assert_sent_by(latecomer.frames, recorded)
    await close_viewer(latecomer)
    await a_snapshot_wakes_the_link(reactor, daemon, "porch", recorded, streams)
    assert (peaks.streams, peaks.connections) == (1, 1)
    assert (getattr(model, "captures", 0), getattr(model, "images_served", 0)) == (0, 0)
    assert log.failures() == []


# --- mjpeg -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mjpeg_end_to_end(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture
) -> None:
    server = await emulators.mjpeg(fps=20, path="/video")
    recorded = record(server.camera)
    peaks = Peaks(server, "stream", reactor)
    daemon = await start_daemon(emulators, daemon_factory)
    await add_camera(daemon, "drive", server.url("stream", "/video"), "mjpeg")

    def streams() -> int:
        return server.streams_total

    watching = await watch_everything(
        daemon, "drive", recorded, streams, kind="mjpeg", capabilities=NO_CONTROLS
    )
    await refuse_what_it_cannot_do(reactor, watching.viewers, [*PAN_TILT_COMMANDS, LIGHT_COMMAND])
    assert set(requests_to(server)) == {"/video"}
    assert server.streams_total == watching.opened
    assert (peaks.streams, peaks.connections) == (1, 1)

    latecomer = await idle_close_and_reopen(reactor, daemon, "drive", watching, streams)
    assert_sent_by(latecomer.frames, recorded)
    await close_viewer(latecomer)
    await a_snapshot_wakes_the_link(reactor, daemon, "drive", recorded, streams)
    assert (peaks.streams, peaks.connections) == (1, 1)
    assert log.failures() == []


FRAMINGS = {
    # go2rtc-like: "multipart/x-mixed-replace; boundary=frame", chunked, Content-Length.
    "unquoted": GENERIC_STREAM,
    # mjpg-streamer-like, quoted, no space, no Content-Length, extra part headers.
    "quoted-without-length": MultipartStyle(
        boundary="boundarydonotcross",
        quote=True,
        content_length=False,
        timestamp=True,
        part_headers=(("X-Frame-Note", "--boundarydonotcross is not here"),),
        headers=(),
    ),
    # ESPHome: HTTP/1.0, the body ends with the connection, boundary after each part.
    "esphome": ESPHOME_STREAM,
    "esphome-without-length": attrs.evolve(ESPHOME_STREAM, content_length=False, quote=True),
    # Espressif's CameraWebServer stream, as a plain MJPEG URL.
    "stock-firmware": STOCK_STREAM,
}


@pytest_twisted.ensureDeferred
async def test_every_mjpeg_framing_is_relayed_byte_for_byte(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture
) -> None:
    daemon = await start_daemon(emulators, daemon_factory)
    recordings: dict[str, RecordedFrames] = {}
    for name, style in FRAMINGS.items():
        server = await emulators.mjpeg(fps=15, style=style, path="/mjpeg")
        recordings[name] = record(server.camera)
        await daemon.accounts.cameras.add(name, server.url("stream", "/mjpeg"), "mjpeg")
    await apply_changes(daemon)
    viewers = {name: await camera_viewer(daemon, name) for name in FRAMINGS}
    for viewer in viewers.values():
        await within(reactor, 10.0, viewer.wait_frames(5))
    for name, viewer in viewers.items():
        assert_sent_by(viewer.frames, recordings[name])
        positions = in_order(viewer.frames, recordings[name])
        # A viewer that keeps up gets every frame, none skipped (at most the first few
        # went out before it joined).
        assert positions[-1] - positions[0] + 1 == len(positions), name
        await close_viewer(viewer)
    assert log.failures() == []


# --- jpeg ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_jpeg_end_to_end(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture
) -> None:
    max_fps = 8
    server = await emulators.jpeg(path="/still.jpg")
    recorded = record(server.camera)
    peaks = Peaks(server, "snapshot", reactor)
    daemon = await start_daemon(emulators, daemon_factory)
    await add_camera(daemon, "yard", server.url("snapshot", "/still.jpg"), "jpeg", max_fps=max_fps)

    def requests() -> int:
        return server.snapshot.requests_total

    watching = await watch_everything(
        daemon, "yard", recorded, requests, kind="jpeg", capabilities=NO_CONTROLS
    )
    await refuse_what_it_cannot_do(reactor, watching.viewers, [*PAN_TILT_COMMANDS, LIGHT_COMMAND])
    # A window of paced requests, three viewers and an MJPEG client watching.
    mjpeg = await treq.get(
        daemon.url + "/cam/yard/stream.mjpg", headers=watching.headers, unbuffered=True
    )
    collector = PartCollector(wanted=10**6)
    mjpeg.deliverBody(collector)
    started, before = reactor.seconds(), len(peaks.request_times)
    await within(reactor, 15.0, watching.viewers[0].wait_frames(max_fps))
    elapsed = reactor.seconds() - started
    transport: Any = collector.transport
    transport.stopProducing()
    made = len(peaks.request_times) - before
    assert made >= max_fps / 2 * elapsed, f"{made} requests in {elapsed:.1f} s"
    assert peaks.most_requests_in_a_second() <= max_fps + 1, peaks.request_times
    # The next request no sooner than 1/max_fps after the previous answer (which is quick).
    assert peaks.shortest_gap() >= 1 / max_fps - 0.02, peaks.request_times
    assert server.snapshot.in_flight_max == 1 and peaks.connections == 1
    assert set(requests_to(server)) == {"/still.jpg"}

    latecomer = await idle_close_and_reopen(reactor, daemon, "yard", watching, requests, paced=True)
    assert_sent_by(latecomer.frames, recorded)
    await close_viewer(latecomer)
    await a_snapshot_wakes_the_link(reactor, daemon, "yard", recorded, requests)
    assert server.snapshot.in_flight_max == 1 and peaks.connections == 1
    assert peaks.most_requests_in_a_second() <= max_fps + 1
    assert peaks.shortest_gap() >= 1 / max_fps - 0.02, peaks.request_times
    assert log.failures() == []


# --- detected kinds --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_url_without_a_kind_is_told_by_its_first_answer(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture
) -> None:
    stream = await emulators.mjpeg(fps=15, path="/live")
    still = await emulators.jpeg(path="/image")
    recordings = {"streamed": record(stream.camera), "still": record(still.camera)}
    daemon = await start_daemon(emulators, daemon_factory)
    await daemon.accounts.cameras.add("streamed", stream.url("stream", "/live"), max_fps=10)
    await daemon.accounts.cameras.add("still", still.url("snapshot", "/image"), max_fps=10)
    await apply_changes(daemon)
    for name, kind in (("streamed", "mjpeg"), ("still", "jpeg")):
        source: Any = daemon.camera(name).source
        await wait_until(reactor, lambda: bool(source.detected), 5.0, f"{name} detected")  # noqa: B023
        entry = await listed(daemon, name)
        assert (entry["kind"], entry["capabilities"]) == (kind, NO_CONTROLS)
        viewer = await camera_viewer(daemon, name)
        assert viewer.of_type("hello")[0]["kind"] == kind
        await within(reactor, 10.0, viewer.wait_frames(4))
        assert_sent_by(viewer.frames, recordings[name])
        assert await refused(reactor, viewer, LIGHT_COMMAND)
        await close_viewer(viewer)
    assert log.failures() == []


@pytest_twisted.ensureDeferred
async def test_a_new_url_or_kind_reconnects_one_stream_at_a_time(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture
) -> None:
    """CONTRACT §6: the viewers stay and hear the link go down and up; the old stream is
    gone before the new one opens (the camera serves one client); removing the camera
    closes its viewers and its link."""
    server = await emulators.mjpeg(fps=20, path="/v", single_client=True)
    recorded = record(server.camera)
    peaks = Peaks(server, "stream", reactor)
    daemon = await start_daemon(emulators, daemon_factory)
    url = server.url("stream", "/v")
    await add_camera(daemon, "gate", url, "mjpeg")
    viewer = await camera_viewer(daemon, "gate")
    await within(reactor, 5.0, viewer.wait_frames(3))
    streams = server.streams_total
    changes = [
        CameraChanges(url=url + "?profile=1"),
        CameraChanges(detect_kind=True),
        CameraChanges(url=url.replace("http://", "http://someone:pw@")),
        CameraChanges(kind="mjpeg"),
    ]
    for number, change in enumerate(changes, start=1):
        told = len(statuses(viewer))
        await daemon.accounts.cameras.set("gate", change)
        await apply_changes(daemon)
        await within(reactor, 5.0, viewer.wait_for(more_than(told + 1, "camera_status")))
        assert statuses(viewer)[told:] == [False, True], change
        await within(reactor, 5.0, viewer.wait_frames(3))
        assert server.streams_total == streams + number
    assert_sent_by(viewer.frames, recorded)
    assert (peaks.streams, peaks.connections) == (1, 1)

    await daemon.accounts.cameras.remove("gate")
    await apply_changes(daemon)
    _clean, code, _reason = await within(reactor, 5.0, viewer.closed)
    assert code == 4004
    await within(reactor, 5.0, server.when(lambda: server.connection_count() == 0))
    assert log.failures() == []


# --- credentials -----------------------------------------------------------------------------

USER = "operator"
SECRET = "Hunter2-s3cret-pw"
#: With characters a URL must escape (``%40``, ``%3A``, ``%2F``, ``%23``, ``%20``).
ODD_SECRET = "p@ss:w/rd #7"


def where_secret_shows(capture: LogCapture, secrets: list[str]) -> list[str]:
    """Log events that hold a secret, formatted or in any of their fields."""
    leaks = []
    for event in capture.events:
        texts = [formatEvent(event)]
        for key, value in event.items():
            if key not in ("log_logger", "log_source", "log_observer"):
                texts.append(repr(value))
        failure = event.get("log_failure")
        if failure is not None:
            texts.append(failure.getTraceback())
        if any(secret in text for text in texts for secret in secrets):
            leaks.append(formatEvent(event))
    return leaks


@pytest_twisted.ensureDeferred
async def test_credentials_are_sent_and_never_shown(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture, tmp_path: Any
) -> None:
    stream = await emulators.mjpeg(fps=15, path="/video", user=USER, password=SECRET)
    esp = await emulators.esp32(fps=15, user=USER, password=ODD_SECRET)
    recorded = record(stream.camera)
    daemon = await start_daemon(emulators, daemon_factory)
    await daemon.user("boss", admin=True)
    right = stream.url("stream", "/video").replace("http://", f"http://{USER}:{SECRET}@")
    wrong = stream.url("stream", "/video").replace("http://", f"http://{USER}:not-{SECRET}@")
    await daemon.accounts.cameras.add("locked", right, "mjpeg")
    await daemon.accounts.cameras.add("mistyped", wrong, "mjpeg")
    escaped = quote(ODD_SECRET, safe="")
    await daemon.accounts.cameras.add("esp", base_url(esp, f"{USER}:{escaped}@"), "esp32")
    await apply_changes(daemon)

    # The right password: HTTP Basic on every request, video and light.
    locked = await camera_viewer(daemon, "locked")
    await within(reactor, 10.0, locked.wait_frames(3))
    assert_sent_by(locked.frames, recorded)
    basic = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    granted = [r for r in stream.stream.requests if r.header("Authorization") == basic]
    assert granted, "no request carried the credentials"
    esp_source: Any = daemon.camera("esp").source
    await wait_until(reactor, lambda: esp_source.capabilities.light, 5.0, "/status read")
    lit = await camera_viewer(daemon, "esp")
    assert lit.of_type("hello")[0]["capabilities"] == LIGHT_ONLY
    await within(reactor, 10.0, lit.wait_frames(2))
    await switch_light(reactor, [lit], True)
    assert esp.camera.led_duty == 255
    odd = "Basic " + base64.b64encode(f"{USER}:{ODD_SECRET}".encode()).decode()
    for wire in (esp.control, esp.stream):
        assert wire.requests and all(r.header("Authorization") == odd for r in wire.requests)

    # A wrong one: down, and the log says why.
    mistyped = await camera_viewer(daemon, "mistyped")
    await wait_until(
        reactor,
        lambda: any("wrong user name or password" in w for w in log.warnings()),
        10.0,
        "the reason in the log",
    )
    assert mistyped.of_type("hello")[0]["esp32_connected"] is False
    assert mistyped.frames == [] and True not in statuses(mistyped)
    assert (await listed(daemon, "mistyped"))["esp32_connected"] is False
    message = await refused(reactor, mistyped, LIGHT_COMMAND)

    # The password is nowhere to be seen: not in what users, admins and scripts get...
    secrets = [SECRET, ODD_SECRET, escaped, basic.split()[1], odd.split()[1]]
    shown = [json.dumps(v.events) for v in (locked, lit, mistyped)] + [message]
    for user in ("viewer", "boss"):
        headers = await cookie(daemon, user)
        for path in (
            "/api/cameras",
            "/",
            "/cam/locked/",
            "/cam/mistyped/",
            "/cam/esp/",
            "/api/cameras/mistyped/status",
            "/health",
        ):
            code, body = await get(daemon, path, headers)
            assert code == 200, path
            shown.append(body.decode("utf-8", "replace"))
    database = str(daemon.config.database)
    for args in (["list"], ["list", "--json"]):
        done = await threads.deferToThread(
            camproxy, tmp_path, "camera", *args, "--database", database
        )
        assert done.code == 0, done
        assert f"{USER}:***@" in done.out
        shown += [done.out, done.err]
    assert [secret for secret in secrets if any(secret in text for text in shown)] == []
    # ...nor in the log, formatted or in any field of any event.
    for viewer in (locked, lit, mistyped):
        await close_viewer(viewer)
    assert where_secret_shows(log, secrets) == []
    assert log.failures() == []
