"""HTTP cameras that misbehave never crash, stall or fool the daemon (CONTRACT §7, issue 14).

Each test runs a daemon with two emulated cameras: ``default``, a healthy MJPEG camera
with a viewer, and ``faulty``, whose emulator is switched into one fault while a viewer
watches. Throughout the fault ``/health`` is timed over and over (each answer within
100 ms); afterwards, always: every frame any viewer got is a valid JPEG the camera sent,
``default`` kept its full frame rate, nothing was logged as a failure, the log told the
fault in a few lines, and once the fault is cleared the camera comes back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher

from camproxy.democam.httpcam import HttpCameraServer
from camproxy.democam.mjpeg import MjpegServer
from tests.conftest import RunningDaemon
from tests.httpscene import (
    Emulators,
    HealthWatch,
    Peaks,
    RecordedFrames,
    apply_changes,
    assert_valid_frames,
    base_url,
    camera_viewer,
    emulators,
    frame_times,
    record,
    statuses,
    wait_until,
    within,
)
from tests.test_camera_faults import LogCapture
from tests.wsclient import RecordingViewer, close_viewer

__all__ = ["emulators"]  # the fixture, for pytest

REFERENCE_FPS = 20.0
#: CONTRACT §7: an HTTP camera without a valid frame for 5 s is down.
STALL_SECONDS = 5.0
RECOVERY_DEADLINE = 10.0
#: A fault is told in a few lines, never one per frame or per attempt.
MAX_WARNINGS = 4


@pytest.fixture
def log() -> Iterator[LogCapture]:
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    yield capture
    globalLogPublisher.removeObserver(capture)


@attrs.define
class Scene:
    """A daemon, a healthy ``default`` camera and a ``faulty`` one, a viewer of each."""

    reactor: Any
    daemon: RunningDaemon
    reference: MjpegServer
    reference_viewer: RecordingViewer
    camera: HttpCameraServer
    recorded: RecordedFrames
    viewer: RecordingViewer
    log: LogCapture
    health: HealthWatch | None = None
    _marks: dict[str, Any] = attrs.Factory(dict)

    @property
    def source(self) -> Any:
        return self.daemon.camera("faulty").source

    @property
    def hub(self) -> Any:
        return self.daemon.camera("faulty").hub

    def statuses(self) -> list[bool]:
        """``camera_status`` values the faulty camera's viewer got since the fault began."""
        return statuses(self.viewer)[self._marks.get("statuses", 0) :]

    def frames_since_fault(self) -> list[bytes]:
        return self.viewer.frames[self._marks["frames"] :]

    async def start_fault(self, fault: str | None, *, reboot: bool = False) -> None:
        """Switch the fault on (``None``: the test makes its own trouble); ``reboot``:
        then drop every connection, as a camera that restarts into the fault (so the next
        stream or answer has it from its start)."""
        self.log.start_fault()
        self._marks = {
            "statuses": len(statuses(self.viewer)),
            "frames": len(self.viewer.frames),
            "reference_sent": self.reference.frames_sent,
            "reference_got": len(self.reference_viewer.frames),
            "at": self.reactor.seconds(),
            "failures": self.source.stats.failures,
        }
        self.health = HealthWatch(self.reactor, self.daemon)
        if fault is not None:
            await self.camera.set_fault(fault)
        if reboot:
            self.camera.drop_all()

    async def reboot(self) -> None:
        """The camera restarts, still faulty: every connection is dropped."""
        self.camera.drop_all()

    async def failed_attempts(self, count: int, timeout: float = 10.0) -> None:
        """Until the source failed ``count`` more times since the fault began."""
        target = self._marks["failures"] + count
        await wait_until(
            self.reactor, lambda: self.source.stats.failures >= target, timeout, "failed attempts"
        )

    async def degraded(self) -> None:
        """Until ``/health`` said ``degraded`` (the camera is wanted and cannot be had)."""
        health = self.health
        assert health is not None
        await wait_until(self.reactor, lambda: health.saw("degraded"), 10.0, "/health degraded")

    async def clear_fault(self) -> None:
        """Switch the fault off; check ``/health``'s timings and ``default``'s frame rate
        over the fault."""
        await self.camera.set_fault(None)
        assert self.health is not None
        await self.health.stop()
        elapsed = self.reactor.seconds() - self._marks["at"]
        sent = self.reference.frames_sent - self._marks["reference_sent"]
        got = len(self.reference_viewer.frames) - self._marks["reference_got"]
        # The daemon relayed every frame the reference camera sent (a frame or two may be
        # on their way). How many it sent depends on this process, which also runs the
        # faulty emulator (writing 11 MiB parts, say): only a floor is asked of it.
        assert got >= 0.9 * sent - 2, f"default: {got} of {sent} frames relayed"
        assert sent >= 0.25 * REFERENCE_FPS * elapsed, f"{sent} frames in {elapsed:.1f} s"

    async def recovered(self) -> None:
        """Video is back: frames flow, the viewers were told, ``/health`` is healthy."""
        reactor = self.reactor
        await within(reactor, RECOVERY_DEADLINE, self.viewer.wait_frames(3))
        await wait_until(reactor, lambda: self.hub.connected, RECOVERY_DEADLINE, "connected")
        if self.statuses():
            assert self.statuses()[-1] is True
        watch = HealthWatch(reactor, self.daemon)
        await wait_until(reactor, lambda: len(watch.timings) >= 2, 5.0, "/health")
        await watch.stop()
        assert watch.latest["status"] == "healthy"

    async def finish(self) -> None:
        """What holds after every fault."""
        for viewer in (self.viewer, self.reference_viewer):
            assert_valid_frames(viewer.frames)
        made = set(self.recorded.made)
        assert all(frame in made for frame in self.viewer.frames), "a frame never sent"
        warnings = self.log.warnings()
        assert len(warnings) <= MAX_WARNINGS, "\n".join(warnings)
        assert self.log.failures() == []
        await close_viewer(self.viewer)
        await close_viewer(self.reference_viewer)


async def scene(
    reactor: Any,
    emulators: Emulators,
    daemon_factory: Any,
    log: LogCapture,
    kind: str = "mjpeg",
    settings: dict[str, Any] | None = None,
    **knobs: Any,
) -> Scene:
    reference = await emulators.mjpeg(fps=REFERENCE_FPS, path="/reference")
    if kind == "mjpeg":
        knobs.setdefault("fps", 20.0)
        camera: HttpCameraServer = await emulators.mjpeg(path="/video", **knobs)
        url = camera.url("stream", "/video")
    elif kind == "esp32":
        camera = await emulators.esp32(fps=20.0, **knobs)
        url = base_url(camera)
    else:
        camera = await emulators.jpeg(path="/still.jpg", **knobs)
        url = camera.url("snapshot", "/still.jpg")
    recorded = record(camera.camera)  # type: ignore[attr-defined]
    daemon = await daemon_factory(
        camera_url=reference.url("stream", "/reference"), **(settings or {})
    )
    await daemon.accounts.cameras.add("faulty", url, kind, max_fps=10)
    await apply_changes(daemon)
    reference_viewer = await camera_viewer(daemon, "default", "watcher")
    viewer = await camera_viewer(daemon, "faulty")
    for watching in (reference_viewer, viewer):
        await within(reactor, 5.0, watching.wait_frames(3))
    return Scene(reactor, daemon, reference, reference_viewer, camera, recorded, viewer, log)


# --- the stream stops ------------------------------------------------------------------------


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_stream_that_stalls_is_down_after_five_seconds_and_retried(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture
) -> None:
    s = await scene(reactor, emulators, daemon_factory, log)
    s.camera.faults.stall_after = 0  # a new stream sends its head, then nothing either
    streams = s.camera.streams_total
    await s.start_fault("stall")
    started = reactor.seconds()
    times = frame_times(reactor, s.viewer)
    await within(
        reactor,
        STALL_SECONDS + 5.0,
        s.viewer.wait_event("camera_status", esp32_connected=False),
    )
    silence = reactor.seconds() - (times[-1] if times else started)
    assert STALL_SECONDS - 0.5 <= silence <= STALL_SECONDS + 3.0, f"down after {silence:.1f} s"
    assert s.statuses() == [False]
    await s.degraded()
    # Retried: a new stream, stalled as well; the socket of the old one is gone.
    await wait_until(reactor, lambda: s.camera.streams_total > streams, 5.0, "a new stream")
    assert s.camera.streams_active == 1 and len(s.camera.servers["stream"].connections) == 1
    warnings = log.warnings()
    assert any("stalled: no valid frame for 5 s" in w for w in warnings), warnings

    await s.clear_fault()
    await s.recovered()
    await s.finish()


# --- parts that are not frames ---------------------------------------------------------------


@pytest.mark.parametrize("fault", ["truncated", "not-jpeg", "wrong-boundary"])
@pytest_twisted.ensureDeferred
async def test_broken_parts_never_reach_a_viewer(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture, fault: str
) -> None:
    s = await scene(reactor, emulators, daemon_factory, log)
    await s.start_fault(fault)
    # In the running stream...
    sent = s.camera.frames_sent
    await within(reactor, 5.0, s.camera.when_frames(sent + 10))
    # ...and in a stream that has it from its first part on.
    streams = s.camera.streams_total
    await s.reboot()
    await wait_until(reactor, lambda: s.camera.streams_total > streams, 5.0, "a new stream")
    sent = s.camera.frames_sent
    await within(reactor, 5.0, s.camera.when_frames(sent + 10))
    await within(reactor, 5.0, s.viewer.wait_event("camera_status", esp32_connected=False))
    await s.degraded()
    assert True not in s.statuses()
    if fault != "wrong-boundary":
        assert s.source.stats.invalid > 0
    # Of the broken parts, only whole frames sent before the fault may have come through.
    assert all(frame in set(s.recorded.made) for frame in s.frames_since_fault())

    await s.clear_fault()
    await s.recovered()
    await s.finish()


@pytest.mark.parametrize("fault", ["huge", "huge-part-header"])
@pytest_twisted.ensureDeferred
async def test_oversized_parts_are_skipped_and_the_stream_goes_on(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture, fault: str
) -> None:
    s = await scene(reactor, emulators, daemon_factory, log)
    await s.start_fault(fault)
    await wait_until(reactor, lambda: s.source.stats.discarded >= 1, 10.0, "a part skipped")
    await within(reactor, 5.0, s.viewer.wait_frames(5))
    assert s.statuses() == []  # one oversized part costs no link
    # A stream that starts with one.
    await s.reboot()
    await wait_until(reactor, lambda: s.source.stats.discarded >= 2, 10.0, "another skipped")
    await within(reactor, 5.0, s.viewer.wait_frames(5))
    assert s.statuses() == [False, True]
    limit = s.daemon.config.max_frame_bytes
    assert all(len(frame) <= limit for frame in s.viewer.frames)

    await s.clear_fault()
    await s.recovered()
    await s.finish()


# --- answers that are not streams ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("status-401", "401 Unauthorized: it wants a password"),
        ("status-404", "404 Not Found"),
        ("status-500", "500 Internal Server Error"),
        ("huge-header", "the answer broke off in its head"),
        ("refuse", "connection refused"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_camera_that_answers_no_stream_is_down_until_it_does(
    reactor: Any,
    emulators: Emulators,
    daemon_factory: Any,
    log: LogCapture,
    fault: str,
    reason: str,
) -> None:
    s = await scene(reactor, emulators, daemon_factory, log)
    await s.start_fault(fault, reboot=True)
    await within(reactor, 5.0, s.viewer.wait_event("camera_status", esp32_connected=False))
    await s.failed_attempts(2)
    await s.degraded()
    assert s.statuses() == [False]
    warnings = log.warnings()
    assert any(reason in w for w in warnings), warnings

    await s.clear_fault()
    await s.recovered()
    await s.finish()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_camera_that_accepts_and_never_answers(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture
) -> None:
    s = await scene(reactor, emulators, daemon_factory, log)
    await s.start_fault("black-hole", reboot=True)
    await within(reactor, 5.0, s.viewer.wait_event("camera_status", esp32_connected=False))
    await within(reactor, 5.0, s.camera.when(lambda: len(s.camera.held) == 1))
    await s.degraded()
    held_at = reactor.seconds()
    # One connection at a time: the held one is given up before the next is opened.
    connections = s.camera.servers["stream"].connections_total
    await s.failed_attempts(2, timeout=STALL_SECONDS + 5.0)
    waited = reactor.seconds() - held_at
    assert STALL_SECONDS - 0.5 <= waited <= STALL_SECONDS + 3.0, f"gave up after {waited:.1f} s"
    await within(
        reactor,
        5.0,
        s.camera.when(lambda: s.camera.servers["stream"].connections_total > connections),
    )
    assert len(s.camera.servers["stream"].connections) == 1
    warnings = log.warnings()
    assert any("sent no answer within 5 s" in w for w in warnings), warnings

    await s.clear_fault()
    s.camera.drop_all()  # the held exchange would never be answered, fault or not
    await s.recovered()
    await s.finish()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_an_esp32_whose_only_stream_another_client_holds(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture
) -> None:
    """The firmware serves one stream: a second client's request waits unanswered. The
    daemon gives its waiting request up after 5 s, says why, waits in line again with
    one connection, and has the stream as soon as the other client leaves."""
    s = await scene(reactor, emulators, daemon_factory, log, kind="esp32")
    stream = s.camera.servers["stream"]
    peaks = Peaks(s.camera, "stream", reactor)
    await s.start_fault(None, reboot=True)
    holder = await treq.get(s.camera.url("stream", "/stream"), unbuffered=True)
    await within(reactor, 5.0, s.viewer.wait_event("camera_status", esp32_connected=False))
    await within(reactor, 5.0, s.camera.when(lambda: len(stream.waiting) == 1))
    await s.degraded()
    await s.failed_attempts(2, timeout=STALL_SECONDS + 5.0)
    warnings = log.warnings()
    assert any("stream busy" in w for w in warnings), warnings
    await within(reactor, 5.0, s.camera.when(lambda: len(stream.waiting) == 1))
    assert s.statuses() == [False] and s.camera.streams_active == 1
    assert peaks.connections == 2  # the other client's, and the daemon's one in line

    holder.deliverBody(HangUp())
    await s.clear_fault()
    await s.recovered()
    assert s.camera.camera.captures == 0  # type: ignore[attr-defined]
    await s.finish()


class HangUp(Protocol):
    """A response body reader that hangs up at once."""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.stopProducing()


# --- JPEG cameras -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_slow_jpeg_server_delays_only_its_own_frames(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture
) -> None:
    s = await scene(
        reactor,
        emulators,
        daemon_factory,
        log,
        kind="jpeg",
        settings={"frame_timeout": 0.5},
        slow_seconds=0.8,
    )
    await s.start_fault("slow")
    times = frame_times(reactor, s.viewer)
    await within(reactor, 10.0, s.viewer.wait_frames(3))
    gaps = [later - earlier for earlier, later in zip(times[-3:], times[-2:], strict=False)]
    assert all(gap >= 0.7 for gap in gaps), gaps  # each one late, none given up
    assert s.statuses() == [] and s.hub.connected
    assert s.camera.servers["snapshot"].in_flight_max == 1
    warnings = log.warnings()
    assert any("did not answer a frame request" in w for w in warnings), warnings

    await s.clear_fault()
    await within(reactor, 5.0, s.viewer.wait_frames(5))
    await s.recovered()
    await s.finish()


@pytest.mark.parametrize("fault", ["not-jpeg", "truncated", "huge"])
@pytest_twisted.ensureDeferred
async def test_a_jpeg_camera_answering_no_image(
    reactor: Any, emulators: Emulators, daemon_factory: Any, log: LogCapture, fault: str
) -> None:
    s = await scene(reactor, emulators, daemon_factory, log, kind="jpeg")
    await s.start_fault(fault)
    await s.failed_attempts(5)
    assert all(frame in set(s.recorded.made) for frame in s.frames_since_fault())
    assert len(s.frames_since_fault()) <= 1  # at most the answer on its way at the switch
    assert s.camera.servers["snapshot"].in_flight_max == 1

    await s.clear_fault()
    await s.recovered()
    await s.finish()
