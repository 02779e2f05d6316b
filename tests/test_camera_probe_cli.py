"""``camproxy camera probe URL`` as a user runs it, against the emulated cameras (issue 14).

Each probe is a real process; the emulators run on the test's reactor, so the probes run
in threads, several at once, while the reactor serves them. A camera that works prints one
line with its kind, frame size, measured frame rate and controls, exit 0; one that does
not prints one line saying why on standard error, exit 1.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import defer, threads
from twisted.internet.protocol import Protocol

from tests.clirun import Result, camproxy
from tests.httpscene import Emulators, base_url, emulators, within
from tests.processes import free_port

__all__ = ["emulators"]  # the fixture, for pytest

SECRET = "Pr0be-secret-pw"
#: ``esp32, 160x120, 14.8 fps, 3 KiB per frame, controls: light at http://...``
SUMMARY = re.compile(
    r"^(?P<kind>[a-z0-9]+), (?P<size>\d+x\d+), (?P<fps>[0-9.]+) fps, \d+ KiB per frame, "
    r"controls: (?P<controls>[a-z_, ]+) at (?P<url>\S+)$"
)


@attrs.frozen
class Case:
    url: str
    args: tuple[str, ...] = ()


def probe_in_thread(cwd: Path, case: Case) -> defer.Deferred[Result]:
    return threads.deferToThread(
        camproxy, cwd, "camera", "probe", case.url, "--seconds", "0.5", *case.args
    )


async def probe_all(cwd: Path, cases: dict[str, Case]) -> dict[str, Result]:
    """Every case probed at once, each in its own process."""
    running = {name: probe_in_thread(cwd, case) for name, case in cases.items()}
    return {name: await done for name, done in running.items()}


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_probe_tells_each_kind(reactor: Any, emulators: Emulators, tmp_path: Path) -> None:
    stock = await emulators.esp32(fps=15)
    lamp = await emulators.cam_webserver(fps=15)
    stream = await emulators.mjpeg(fps=15, path="/video", user="probe", password=SECRET)
    still = await emulators.jpeg(path="/still.jpg")
    video = stream.url("stream", "/video").replace("http://", f"http://probe:{SECRET}@")
    cases = {
        "esp32": Case(base_url(stock)),
        "esp32-cam-webserver": Case(base_url(lamp) + "/"),
        "mjpeg": Case(video),
        "jpeg": Case(still.url("snapshot", "/still.jpg")),
    }
    expected = {
        "esp32": ("esp32", "light"),
        "esp32-cam-webserver": ("esp32", "light"),
        "mjpeg": ("mjpeg", "none"),
        "jpeg": ("jpeg", "none"),
    }
    results = await probe_all(tmp_path, cases)
    for name, result in results.items():
        assert (result.code, result.err) == (0, ""), (name, result)
        lines = result.out.splitlines()
        assert len(lines) == 1, (name, result.out)
        found = SUMMARY.match(lines[0])
        assert found is not None, (name, lines[0])
        assert (found["kind"], found["controls"]) == expected[name], lines[0]
        assert found["size"] == "160x120"
        assert float(found["fps"]) > 0
        assert SECRET not in result.out
    assert "probe:***@" in results["mjpeg"].out
    # A probe is one client like the daemon: one stream at a time, never /capture.
    assert stock.camera.captures == 0 and lamp.camera.images_served == 0
    for server in (stock, lamp, stream, still):
        assert all(len(wire.connections) == 0 for wire in server.servers.values())
    assert still.snapshot.in_flight_max == 1


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_probe_says_why_in_one_line(
    reactor: Any, emulators: Emulators, tmp_path: Path
) -> None:
    locked = await emulators.mjpeg(fps=15, path="/video", user="probe", password=SECRET)
    busy = await emulators.esp32(fps=15)
    # Someone else watches the ESP32's only stream.
    holder = await treq.get(busy.url("stream", "/stream"), unbuffered=True)
    assert holder.code == 200
    await within(reactor, 5.0, busy.when_streams(1))
    video = locked.url("stream", "/video")
    cases = {
        "refused": Case(f"http://127.0.0.1:{free_port()}/video"),
        "no-password": Case(video),
        "wrong-password": Case(video.replace("http://", f"http://probe:not-{SECRET}@")),
        "not-an-image": Case(base_url(busy) + "/status"),
        "busy": Case(base_url(busy)),
    }
    reasons = {
        "refused": "connection refused",
        "no-password": "the camera answered 401 Unauthorized: it wants a password",
        "wrong-password": "the camera answered 401 Unauthorized: wrong user name or password",
        "not-an-image": "not an image nor an MJPEG stream (Content-Type application/json)",
        "busy": "stream busy: the camera took the connection but sent no answer within 5 s",
    }
    try:
        results = await probe_all(tmp_path, cases)
    finally:
        holder.deliverBody(_HangUp())
    for name, result in results.items():
        assert (result.code, result.out) == (1, ""), (name, result)
        line = result.error_line
        assert line.startswith("camproxy camera: "), line
        assert reasons[name] in line, (name, line)
        assert SECRET not in line
    assert "probe:***@" in results["wrong-password"].err
    assert busy.camera.captures == 0
    await within(reactor, 5.0, busy.when_streams(0))


class _HangUp(Protocol):
    """A body sink that hangs up at once."""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.stopProducing()
