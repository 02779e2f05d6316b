"""Emulated HTTP cameras beside a whole daemon on 127.0.0.1, for the end-to-end tests of the
camera kinds (CONTRACT §7) and their faults.

The emulators of :mod:`camproxy.democam` run on the test's reactor. What they sent is
recorded (:class:`RecordedFrames`), so a test can say that every frame a viewer got is one
the camera sent, byte for byte; :class:`Peaks` keeps the most streams and connections that
were open at once and when each request came; :class:`HealthWatch` times ``/health`` over
and over while a fault lasts.
"""

from __future__ import annotations

import gc
import io
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import attrs
import pytest_twisted
import treq
from PIL import Image
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError

from camproxy.democam.esp32 import (
    CameraWebServer,
    Esp32CameraServer,
    Esp32CamWebserver,
    Esp32CamWebserverServer,
    Sensor,
    listen_esp32_cam_webserver,
    listen_esp32_camera,
)
from camproxy.democam.httpcam import HttpCameraServer, PatternFrames
from camproxy.democam.mjpeg import (
    JpegServer,
    MjpegServer,
    PatternCamera,
    listen_jpeg_camera,
    listen_mjpeg_camera,
)
from camproxy.web.auth import SESSION_COOKIE
from tests.conftest import RunningDaemon
from tests.processes import free_port
from tests.wsclient import RecordingViewer, connect_viewer

T = TypeVar("T")

#: The contract's bound on ``/health`` (CONTRACT §2 and issue 14), on the reactor's clock.
HEALTH_DEADLINE = 0.1
#: Small pictures: 160x120 is ESP32's QQVGA (framesize 1).
QQVGA = 1
LOOPBACK = "interface=127.0.0.1"

Headers = dict[bytes | str, bytes | str]


# --- what the cameras sent -------------------------------------------------------------------


@attrs.define
class RecordedFrames(PatternFrames):
    """The emulator's pictures, each kept as it left the model (before any fault)."""

    made: list[bytes] = attrs.Factory(list)

    def render(self, width: int, height: int, quality: int, light: bool) -> bytes:
        jpeg = super().render(width, height, quality, light)
        self.made.append(jpeg)
        return jpeg


def record(model: CameraWebServer | Esp32CamWebserver | PatternCamera) -> RecordedFrames:
    """Keep every picture ``model`` makes from now on."""
    recorded = RecordedFrames(model.frames.now)
    model.frames = recorded
    return recorded


@attrs.define
class Peaks:
    """The most streams and connections an emulator had at once, and its requests' times."""

    server: HttpCameraServer
    role: str
    clock: Any
    streams: int = 0
    connections: int = 0
    request_times: list[float] = attrs.Factory(list)
    _requests_seen: int = 0

    def __attrs_post_init__(self) -> None:
        self._requests_seen = self.wire.requests_total
        # A condition that never holds is re-checked on every change of the emulator.
        self.server.when(self._observe)
        self._observe()

    @property
    def wire(self) -> Any:
        return self.server.servers[self.role]

    def _observe(self) -> bool:
        self.streams = max(self.streams, self.server.streams_active)
        self.connections = max(self.connections, len(self.wire.connections))
        total = self.wire.requests_total
        now = self.clock.seconds()
        self.request_times += [now] * (total - self._requests_seen)
        self._requests_seen = total
        return False

    def shortest_gap(self) -> float:
        """The least time between two requests in a row."""
        times = self.request_times
        return min((b - a for a, b in itertools.pairwise(times)), default=float("inf"))

    def most_requests_in_a_second(self) -> int:
        """The most requests that came within any one second."""
        times = self.request_times
        return max(
            (sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times)),
            default=0,
        )


def small_camera() -> PatternCamera:
    """The generic cameras' pictures: 160x120, as the ESP32s' QQVGA."""
    return PatternCamera(width=160, height=120, quality=50)


# --- starting emulators ----------------------------------------------------------------------


def no_clients(server: HttpCameraServer) -> Callable[[], bool]:
    """Whether nobody is connected to ``server``."""
    return lambda: server.connection_count() == 0


@attrs.define
class Emulators:
    """Starts emulated cameras on 127.0.0.1 and stops them all at the end."""

    reactor: Any
    started: list[HttpCameraServer] = attrs.Factory(list)

    async def esp32(self, **knobs: Any) -> Esp32CameraServer:
        """Espressif's ``CameraWebServer`` (see :meth:`firmware`)."""
        server = await self.firmware("stock", **knobs)
        assert isinstance(server, Esp32CameraServer)
        return server

    async def cam_webserver(self, **knobs: Any) -> Esp32CamWebserverServer:
        """easytarget's ``esp32-cam-webserver`` (see :meth:`firmware`)."""
        server = await self.firmware("cam-webserver", **knobs)
        assert isinstance(server, Esp32CamWebserverServer)
        return server

    async def firmware(
        self, firmware: str, **knobs: Any
    ) -> Esp32CameraServer | Esp32CamWebserverServer:
        """An ESP32 web server on a port P and its stream on P + 1, as the firmware has it;
        ``firmware`` is ``stock`` or ``cam-webserver``; small pictures."""
        sensor = Sensor(framesize=QQVGA, quality=30)
        listen: Callable[..., defer.Deferred[Any]]
        if firmware == "stock":
            knobs.setdefault("camera", CameraWebServer(sensor=sensor))
            listen = listen_esp32_camera
        else:
            knobs.setdefault("camera", Esp32CamWebserver(sensor=sensor))
            knobs.setdefault("stream_start_delay", 0.05)
            listen = listen_esp32_cam_webserver
        for _attempt in range(30):
            port = free_port()
            try:
                server = await listen(self.reactor, f"tcp:{port}:{LOOPBACK}", **knobs)
            except CannotListenError:
                continue  # P + 1 was taken: try another pair
            self.started.append(server)
            assert isinstance(server, Esp32CameraServer | Esp32CamWebserverServer)
            return server
        raise RuntimeError("no two free ports in a row on 127.0.0.1")

    async def mjpeg(self, **knobs: Any) -> MjpegServer:
        knobs.setdefault("camera", small_camera())
        server = await listen_mjpeg_camera(self.reactor, f"tcp:0:{LOOPBACK}", **knobs)
        self.started.append(server)
        return server

    async def jpeg(self, **knobs: Any) -> JpegServer:
        knobs.setdefault("camera", small_camera())
        server = await listen_jpeg_camera(self.reactor, f"tcp:0:{LOOPBACK}", **knobs)
        self.started.append(server)
        return server

    async def stop(self) -> None:
        """Stop every emulator; fails if a client was still connected to one (the daemons
        are stopped by then, and must have closed their links to the cameras)."""
        left: list[str] = []
        for server in self.started:
            try:
                await within(self.reactor, 3.0, server.when(no_clients(server)))
            except defer.TimeoutError:
                left.append(f"{type(server).__name__}: {server.connection_count()} connections")
        for server in self.started:
            await server.stop()
        assert left == [], f"still connected after the test: {left}"


@pytest_twisted.async_yield_fixture
async def emulators(reactor: Any) -> AsyncIterator[Emulators]:
    """Emulated HTTP cameras, stopped after the test (and after its daemons, when the
    test asks for this fixture before ``daemon_factory``)."""
    running = Emulators(reactor)
    yield running
    gc.unfreeze()  # a HealthWatch left running by a failed test
    await running.stop()


def base_url(server: HttpCameraServer, userinfo: str = "") -> str:
    """``http://127.0.0.1:PORT`` of an ESP32 emulator's control server."""
    return server.url("control", "").replace("http://", f"http://{userinfo}")


# --- viewers and requests ------------------------------------------------------------------------


async def within(reactor: Any, seconds: float, waiting: defer.Deferred[T]) -> T:
    return await waiting.addTimeout(seconds, reactor)


async def wait_until(
    reactor: Any, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll a condition that has no event to wait on, bounded."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what}: not met within {timeout:g} s")
        await task.deferLater(reactor, 0.02, lambda: None)


async def cookie(daemon: RunningDaemon, name: str = "viewer") -> Headers:
    return {"Cookie": f"{SESSION_COOKIE}={await daemon.session(name)}"}


async def camera_viewer(
    daemon: RunningDaemon, camera: str, name: str = "viewer"
) -> RecordingViewer:
    """A logged-in viewer of ``/cam/CAMERA/ws``, past its ``hello``."""
    headers = {"Cookie": f"{SESSION_COOKIE}={await daemon.session(name)}"}
    viewer = await connect_viewer(
        daemon.reactor, daemon.port, headers=headers, path=f"/cam/{camera}/ws"
    )
    await within(daemon.reactor, 5.0, viewer.wait_event("hello"))
    return viewer


async def get(
    daemon: RunningDaemon, path: str, headers: Headers | None = None
) -> tuple[int, bytes]:
    response = await treq.get(daemon.url + path, headers=headers or {})
    return response.code, await response.content()


async def listed(daemon: RunningDaemon, name: str) -> dict[str, Any]:
    """The camera ``name`` as ``/api/cameras`` shows it."""
    code, body = await get(daemon, "/api/cameras", await cookie(daemon))
    assert code == 200
    found = [camera for camera in json.loads(body) if camera["name"] == name]
    assert len(found) == 1, body
    entry: dict[str, Any] = found[0]
    return entry


def assert_valid_frames(frames: list[bytes]) -> None:
    """Every frame starts ``FF D8``, ends ``FF D9`` and decodes with Pillow."""
    for number, frame in enumerate(frames):
        assert frame[:2] == b"\xff\xd8" and frame[-2:] == b"\xff\xd9", f"frame {number}"
        with Image.open(io.BytesIO(frame)) as image:
            image.load()


def frame_times(reactor: Any, viewer: RecordingViewer) -> list[float]:
    """From now on, when each frame reached ``viewer`` (on the reactor's clock)."""
    times: list[float] = []
    seen = [len(viewer.frames)]

    def note(watched: RecordingViewer) -> bool:
        while seen[0] < len(watched.frames):
            times.append(reactor.seconds())
            seen[0] += 1
        return False  # never done: it watches until the viewer goes

    viewer.wait_for(note)
    return times


def statuses(viewer: RecordingViewer) -> list[bool]:
    return [event["esp32_connected"] for event in viewer.of_type("camera_status")]


async def apply_changes(daemon: RunningDaemon) -> None:
    """What the camera watcher does every two seconds, now."""
    await daemon.service.getServiceNamed("camera-watcher").check()


# --- /health, over and over ------------------------------------------------------------------


class HealthWatch:
    """Times ``/health`` every few tens of milliseconds until stopped.

    Meanwhile the objects that exist when it starts are kept out of the garbage
    collector's sight (``gc.freeze``): this process also holds pytest, the emulators and
    every test module's imports, some 170,000 objects whose full collections take 0.1 to
    0.4 s on a busy machine and would be charged to the daemon. What is timed is what the
    daemon does while a camera misbehaves.
    """

    def __init__(self, reactor: Any, daemon: RunningDaemon, interval: float = 0.05) -> None:
        gc.collect()
        gc.freeze()
        self._reactor = reactor
        self._url = daemon.url + "/health"
        self._interval = interval
        self._stopping = False
        self.timings: list[float] = []
        self.documents: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._loop = defer.Deferred.fromCoroutine(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            started = self._reactor.seconds()
            try:
                response = await treq.get(self._url)
                body = await response.content()
            except Exception as problem:  # the daemon went away (a test failed first)
                self.errors.append(repr(problem))
                return
            self.timings.append(self._reactor.seconds() - started)
            if response.code != 200:
                self.errors.append(f"/health answered {response.code}")
            self.documents.append(json.loads(body))
            await task.deferLater(self._reactor, self._interval, lambda: None)

    @property
    def latest(self) -> dict[str, Any]:
        return self.documents[-1] if self.documents else {}

    def saw(self, status: str) -> bool:
        return any(document["status"] == status for document in self.documents)

    async def stop(self) -> None:
        """Stop, and check that every answer came within the deadline."""
        self._stopping = True
        await self._loop
        gc.unfreeze()
        assert self.errors == []
        assert self.timings, "/health was never asked"
        slowest = max(self.timings)
        worst = ", ".join(f"{t * 1000:.0f}" for t in sorted(self.timings)[-3:])
        assert slowest < HEALTH_DEADLINE, (
            f"/health took {slowest * 1000:.0f} ms (the slowest: {worst} ms "
            f"of {len(self.timings)} answers)"
        )
