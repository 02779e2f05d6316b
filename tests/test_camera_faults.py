"""A misbehaving camera never crashes, stalls or floods the proxy (CONTRACT §1).

Each test starts a healthy demo camera, a daemon and a viewer, turns one fault on, checks
what the proxy does while it lasts, turns it off and checks that video comes back. Always:
``/health`` answers within 100 ms, no invalid frame reaches a viewer, nothing is logged as a
failure, and the log tells the fault in a few warnings, not one per frame.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, TypeVar

import attrs
import pytest
import pytest_twisted
import treq
from PIL import Image
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from zope.interface import implementer

from camproxy.democam.robocam import JUNK_JSON, DemoCamera, listen_black_hole, listen_demo_camera
from camproxy.hub.source import is_jpeg
from tests.conftest import RunningCamera, RunningDaemon, wait_until
from tests.processes import free_port, stop
from tests.wsclient import RecordingViewer, close_viewer

T = TypeVar("T")

#: Short enough for quick tests. Autobahn's timers are whole seconds (txaio's batched timer
#: rounds down), so pings and handshake timeouts stay at a second or more.
FAST_TIMEOUTS: dict[str, Any] = {"frame_timeout": 0.5, "max_fps": 20}
HEALTH_DEADLINE = 0.1
RECOVERY_DEADLINE = 8.0
MAX_WARNINGS = 3


# --- helpers -------------------------------------------------------------------------------


@implementer(ILogObserver)
@attrs.define
class LogCapture:
    """Every log event published while a test runs."""

    events: list[LogEvent] = attrs.Factory(list)
    mark: int = 0

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def start_fault(self) -> None:
        """Count from here on: warnings before the fault are not its fault."""
        self.mark = len(self.events)

    def warnings(self) -> list[str]:
        """Warnings (and worse) from the proxy since :meth:`start_fault`; not the camera's."""
        return [
            formatEvent(event)
            for event in self.events[self.mark :]
            if _level(event) >= _rank(LogLevel.warn)
            and not event.get("log_namespace", "").startswith("camproxy.democam")
        ]

    def failures(self) -> list[str]:
        """Tracebacks logged at any time: each one is a crash somewhere."""
        return [formatEvent(e) for e in self.events if "log_failure" in e]


def _rank(level: LogLevel) -> int:
    return list(LogLevel.iterconstants()).index(level)


def _level(event: LogEvent) -> int:
    level = event.get("log_level")
    return _rank(level) if isinstance(level, type(LogLevel.warn)) else -1


@pytest.fixture
def log() -> Iterator[LogCapture]:
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    yield capture
    globalLogPublisher.removeObserver(capture)


def small_camera() -> DemoCamera:
    return DemoCamera(width=160, height=120, quality=50)


async def within(reactor: Any, seconds: float, waiting: defer.Deferred[T]) -> T:
    return await waiting.addTimeout(seconds, reactor)


async def check_health(reactor: Any, daemon: RunningDaemon) -> dict[str, Any]:
    """``/health`` answers 200 within 100 ms (on the reactor's clock); its document."""
    started = reactor.seconds()
    response = await treq.get(daemon.url + "/health")
    body = await response.text()
    elapsed = reactor.seconds() - started
    assert response.code == 200
    assert elapsed < HEALTH_DEADLINE, f"/health took {elapsed * 1000:.0f} ms"
    document: dict[str, Any] = json.loads(body)
    return document


def assert_all_jpeg(viewer: RecordingViewer) -> None:
    for frame in viewer.frames:
        assert is_jpeg(frame)
        Image.open(io.BytesIO(frame)).verify()


def statuses(viewer: RecordingViewer) -> list[bool]:
    return [e["esp32_connected"] for e in viewer.of_type("camera_status")]


@attrs.define
class Scene:
    camera: RunningCamera
    daemon: RunningDaemon
    viewer: RecordingViewer
    log: LogCapture
    _status_mark: int = 0

    @property
    def knobs(self) -> Any:
        return self.camera.camera

    def start_fault(self) -> None:
        self.log.start_fault()
        self._status_mark = len(statuses(self.viewer))

    def statuses(self) -> list[bool]:
        """The ``camera_status`` values the viewer was sent since the fault began."""
        return statuses(self.viewer)[self._status_mark :]

    async def recovered(self, reactor: Any) -> None:
        """After the fault is off: the link is (back) up and frames flow, soon."""
        await within(reactor, RECOVERY_DEADLINE, self.viewer.wait_frames(3))
        await wait_until(reactor, lambda: self.daemon.hub.connected, RECOVERY_DEADLINE)
        if self.statuses():
            assert self.statuses()[-1] is True
        health = await check_health(reactor, self.daemon)
        assert (health["status"], health["esp32_connected"]) == ("healthy", True)

    async def finish(self) -> None:
        assert_all_jpeg(self.viewer)
        warnings = self.log.warnings()
        assert len(warnings) <= MAX_WARNINGS, "\n".join(warnings)
        assert self.log.failures() == []
        await close_viewer(self.viewer)


async def healthy_scene(
    reactor: Any,
    demo_camera_factory: Any,
    daemon_factory: Any,
    log: LogCapture,
    settings: dict[str, Any] | None = None,
    **knobs: Any,
) -> Scene:
    camera = await demo_camera_factory(camera=small_camera(), frame_interval=0.05, **knobs)
    daemon = await daemon_factory(camera_url=camera.url, **{**FAST_TIMEOUTS, **(settings or {})})
    viewer = await daemon.viewer()
    await within(reactor, 5.0, viewer.wait_frames(2))
    scene = Scene(camera, daemon, viewer, log)
    scene.start_fault()
    return scene


# --- faults within a working link ----------------------------------------------------------


@pytest.mark.parametrize("fault", ["truncated", "not-jpeg"])
@pytest_twisted.ensureDeferred
async def test_broken_frames_are_dropped_and_told_once(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, log: LogCapture, fault: str
) -> None:
    scene = await healthy_scene(reactor, demo_camera_factory, daemon_factory, log)
    hub = scene.daemon.hub
    invalid_before = hub.stats.frames_invalid
    scene.knobs.fault = fault
    await wait_until(reactor, lambda: hub.stats.frames_invalid >= invalid_before + 30)
    await check_health(reactor, scene.daemon)
    frames_during = len(scene.viewer.frames)
    await wait_until(reactor, lambda: hub.stats.frames_invalid >= invalid_before + 40)
    assert len(scene.viewer.frames) == frames_during
    assert False not in scene.statuses()
    warnings = log.warnings()
    assert len(warnings) == 1 and "not a JPEG" in warnings[0]

    scene.knobs.fault = None
    await scene.recovered(reactor)
    await scene.finish()


@pytest.mark.parametrize("fault", ["bad-utf8", "junk-json"])
@pytest_twisted.ensureDeferred
async def test_garbage_text_is_ignored_and_frames_go_on(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, log: LogCapture, fault: str
) -> None:
    scene = await healthy_scene(reactor, demo_camera_factory, daemon_factory, log)
    hub = scene.daemon.hub
    limits, position = hub.limits, hub.position
    scene.knobs.fault = fault
    # Every junk message at least twice, and frames all along.
    await wait_until(reactor, lambda: scene.knobs.faults_sent >= 2 * len(JUNK_JSON))
    await within(reactor, 5.0, scene.viewer.wait_frames(5))
    await check_health(reactor, scene.daemon)
    assert hub.connected and False not in scene.statuses()
    assert (hub.limits, hub.position) == (limits, position)
    updates = scene.viewer.of_type("position_update")
    assert all(isinstance(u["x"], int) and isinstance(u["y"], int) for u in updates)
    assert log.warnings() == []

    scene.knobs.fault = None
    await scene.recovered(reactor)
    await scene.finish()


@pytest_twisted.ensureDeferred
async def test_silent_camera_is_asked_again_and_told_once(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, log: LogCapture
) -> None:
    scene = await healthy_scene(reactor, demo_camera_factory, daemon_factory, log)
    hub = scene.daemon.hub
    timeouts_before = hub.stats.frame_request_timeouts
    scene.knobs.push_frames = False
    scene.knobs.answer_getframe = False
    await wait_until(reactor, lambda: hub.stats.frame_request_timeouts >= timeouts_before + 4)
    health = await check_health(reactor, scene.daemon)
    # The link itself is fine (it answers pings), so the camera still counts as connected.
    assert health["esp32_connected"] is True and False not in scene.statuses()
    warnings = log.warnings()
    assert len(warnings) == 1 and "did not answer a frame request" in warnings[0]

    scene.knobs.answer_getframe = True
    scene.knobs.push_frames = True
    await scene.recovered(reactor)
    await scene.finish()


@pytest_twisted.ensureDeferred
async def test_slow_camera_still_delivers_late_frames(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, log: LogCapture
) -> None:
    scene = await healthy_scene(reactor, demo_camera_factory, daemon_factory, log)
    hub = scene.daemon.hub
    scene.knobs.push_frames = False
    scene.knobs.getframe_delay = 0.8  # longer than frame_timeout: a request is given up
    timeouts_before = hub.stats.frame_request_timeouts
    await wait_until(reactor, lambda: hub.stats.frame_request_timeouts > timeouts_before)
    # The late answers still count; each answers whichever request is outstanding.
    await within(reactor, 5.0, scene.viewer.wait_frames(3))
    await check_health(reactor, scene.daemon)
    assert False not in scene.statuses()
    warnings = log.warnings()
    assert len(warnings) == 1 and "did not answer a frame request" in warnings[0]

    scene.knobs.getframe_delay = 0.0
    scene.knobs.push_frames = True
    await scene.recovered(reactor)
    await scene.finish()


# --- faults that cost the link ---------------------------------------------------------------


async def wait_for_listener(reactor: Any, port: int, timeout: float = 20.0) -> None:
    """Until something accepts TCP connections on 127.0.0.1:``port`` (another process)."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    deadline = reactor.seconds() + timeout
    while True:
        try:
            probe: Any = await endpoint.connect(Factory.forProtocol(Protocol))
        except ConnectError:
            if reactor.seconds() > deadline:
                raise
            await task.deferLater(reactor, 0.05, lambda: None)
        else:
            probe.transport.loseConnection()
            return


@pytest_twisted.ensureDeferred
async def test_oversized_message_fails_the_link_with_1009_and_it_comes_back(
    reactor: Any, daemon_factory: Any, log: LogCapture
) -> None:
    # In its own process (as a real camera is): writing 10 MiB messages would otherwise
    # stall the reactor /health is timed on. This also runs the command line's --fault.
    number = free_port()
    argv = [sys.executable, "-m", "camproxy.democam", "--fault", "huge", "--size", "160x120"]
    argv += ["--listen", f"tcp:{number}:interface=127.0.0.1"]
    huge = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    camera_port: Any = None
    try:
        await wait_for_listener(reactor, number)
        # The first failure comes ~150 ms after the link opens, maybe before the viewer
        # is in; later ones repeat its warning, which is said once a minute.
        log.start_fault()
        daemon = await daemon_factory(camera_url=f"ws://127.0.0.1:{number}/ws", **FAST_TIMEOUTS)
        viewer = await daemon.viewer()
        # Connected (it answers), then failed on the huge message, again and again.
        await wait_until(reactor, lambda: daemon.hub.stats.camera_disconnects >= 3, 15.0)
        await check_health(reactor, daemon)
        assert viewer.frames == [] and daemon.hub.stats.frames_invalid == 0
        assert statuses(viewer).count(False) >= 2  # viewers are told each time
        warnings = log.warnings()
        assert warnings and all("code=1009" in warning for warning in warnings), warnings

        # The camera is replaced by a well-behaved one on the same address.
        stop(huge)
        camera_port, camera = await listen_demo_camera(
            reactor, f"tcp:{number}:interface=127.0.0.1", camera=small_camera()
        )
        scene = Scene(RunningCamera(camera_port, camera), daemon, viewer, log)
        await scene.recovered(reactor)
        await scene.finish()
    finally:
        stop(huge)
        if camera_port is not None:
            camera.drop_all()
            await defer.maybeDeferred(camera_port.stopListening)


@pytest_twisted.ensureDeferred
async def test_flapping_camera_is_followed_and_told_once(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, log: LogCapture
) -> None:
    scene = await healthy_scene(reactor, demo_camera_factory, daemon_factory, log)
    scene.knobs.flap_interval = 0.5
    await within(reactor, 15.0, scene.viewer.wait_for(lambda v: scene.statuses().count(False) >= 3))
    await check_health(reactor, scene.daemon)
    # Every drop was followed by a reconnect the viewers were told of.
    assert scene.statuses()[:5] == [False, True, False, True, False]

    scene.knobs.flap_interval = None
    await scene.recovered(reactor)
    await scene.finish()


@pytest_twisted.ensureDeferred
async def test_half_open_camera_is_dropped_by_ping_timeout(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, log: LogCapture
) -> None:
    scene = await healthy_scene(
        reactor, demo_camera_factory, daemon_factory, log, settings={"camera_ping_interval": 1.0}
    )
    scene.knobs.half_open = True
    await within(reactor, 10.0, scene.viewer.wait_event("camera_status", esp32_connected=False))
    status_count = len(scene.statuses())
    connects = scene.knobs.connects
    # It reconnects, completes the handshake, hears nothing, and drops it again...
    await wait_until(reactor, lambda: scene.knobs.connects >= connects + 2, 15.0)
    health = await check_health(reactor, scene.daemon)
    assert (health["status"], health["esp32_connected"]) == ("degraded", False)
    # ...without ever telling viewers the silent camera was back.
    assert len(scene.statuses()) == status_count

    scene.knobs.half_open = False
    await scene.recovered(reactor)
    await scene.finish()


@pytest_twisted.ensureDeferred
async def test_camera_over_its_client_limit_never_flaps_the_status(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, log: LogCapture
) -> None:
    scene = await healthy_scene(reactor, demo_camera_factory, daemon_factory, log)
    scene.knobs.client_limit = 0
    scene.knobs.drop_all()
    await within(reactor, 5.0, scene.viewer.wait_event("camera_status", esp32_connected=False))
    refusals = scene.knobs.refusals
    await wait_until(reactor, lambda: scene.knobs.refusals >= refusals + 3)
    health = await check_health(reactor, scene.daemon)
    assert (health["status"], health["esp32_connected"]) == ("degraded", False)
    assert scene.statuses() == [False]
    scene.viewer.send_json({"type": "servo_command", "command": "up"})
    await within(reactor, 5.0, scene.viewer.wait_event("error"))

    scene.knobs.client_limit = 5
    await scene.recovered(reactor)
    await scene.finish()


@pytest_twisted.ensureDeferred
async def test_black_hole_camera_times_out_and_a_real_one_on_its_port_is_used(
    reactor: Any, daemon_factory: Any, log: LogCapture
) -> None:
    hole_port, hole = await listen_black_hole(reactor, "tcp:0:interface=127.0.0.1")
    address = hole_port.getHost()
    assert isinstance(address, IPv4Address)
    number = address.port
    camera_port: Any = None
    try:
        daemon = await daemon_factory(
            camera_url=f"ws://127.0.0.1:{number}/ws",
            camera_connect_timeout=1.5,
            **FAST_TIMEOUTS,
        )
        viewer = await daemon.viewer()
        await within(reactor, 5.0, viewer.wait_event("hello", esp32_connected=False))
        log.start_fault()
        await wait_until(reactor, lambda: hole.accepted >= 3, 15.0)
        assert hole.bytes_received > 0  # it was sent a handshake it never answered
        health = await check_health(reactor, daemon)
        assert (health["status"], health["esp32_connected"]) == ("degraded", False)
        assert statuses(viewer) == []

        # The camera reboots into working order, on the same address.
        hole.drop_all()
        await defer.maybeDeferred(hole_port.stopListening)
        camera_port, camera = await listen_demo_camera(
            reactor, f"tcp:{number}:interface=127.0.0.1", camera=small_camera()
        )
        scene = Scene(RunningCamera(camera_port, camera), daemon, viewer, log)
        await within(reactor, RECOVERY_DEADLINE, viewer.wait_event("camera_status"))
        await scene.recovered(reactor)
        await scene.finish()
    finally:
        hole.drop_all()
        await defer.maybeDeferred(hole_port.stopListening)
        if camera_port is not None:
            camera.drop_all()
            await defer.maybeDeferred(camera_port.stopListening)
