"""CONTRACT §6: ``--max-fps`` and ``--idle-close`` set ``default``'s values and the defaults of
cameras that have none of their own; a camera's own values win."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from camproxy.accounts.access import Level
from camproxy.accounts.cameras import CameraChanges, CameraRecord
from camproxy.config import Config
from camproxy.fleet import CameraSpec
from camproxy.tap import camera_spec
from tests.conftest import RunningDaemon

DAEMON = Config(max_fps=7.0, idle_close=45.0)


def record(
    name: str, *, max_fps: float | None = None, idle_close: float | None = None
) -> CameraRecord:
    return CameraRecord(
        id=f"id-{name}",
        name=name,
        title=f"Title of {name}",
        url="http://127.0.0.1:9/",
        kind="esp32",
        max_fps=max_fps,
        idle_close=idle_close,
        access=Level.VIEW,
        control="exclusive",
        created_at=1.0,
        updated_at=2.0,
    )


@pytest.mark.parametrize("name", ["default", "garden"])
def test_a_camera_without_its_own_values_takes_the_daemons(name: str) -> None:
    spec = camera_spec(record(name), DAEMON)
    assert (spec.max_fps, spec.idle_close) == (7.0, 45.0)
    # The daemon's options differ from CameraSpec's own defaults, so this tells "taken
    # from the options" from "left to the spec".
    bare = CameraSpec(name=name, url="http://127.0.0.1:9/")
    assert (bare.max_fps, bare.idle_close) != (7.0, 45.0)


def test_a_cameras_own_values_win_each_on_its_own() -> None:
    both = camera_spec(record("door", max_fps=2.5, idle_close=0.0), DAEMON)
    assert (both.max_fps, both.idle_close) == (2.5, 0.0)  # 0: never close, not "unset"
    only_fps = camera_spec(record("door", max_fps=3.0), DAEMON)
    assert (only_fps.max_fps, only_fps.idle_close) == (3.0, 45.0)
    only_idle = camera_spec(record("door", idle_close=5.0), DAEMON)
    assert (only_idle.max_fps, only_idle.idle_close) == (7.0, 5.0)


def test_the_rest_of_the_record_is_carried_over() -> None:
    spec = camera_spec(record("garden"), DAEMON)
    assert spec == CameraSpec(
        name="garden",
        url="http://127.0.0.1:9/",
        title="Title of garden",
        kind="esp32",
        max_fps=7.0,
        idle_close=45.0,
        access=Level.VIEW,
        control="exclusive",
    )


def pacing(daemon: RunningDaemon, name: str) -> tuple[float, float]:
    """The frame rate and idle delay the running camera ``name`` uses."""
    hub = daemon.camera(name).hub
    return round(1.0 / hub.min_interval, 6), hub.idle_close


@pytest_twisted.ensureDeferred
async def test_the_daemons_options_reach_the_running_cameras(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url, max_fps=4.0, idle_close=12.0)
    cameras = daemon.accounts.cameras
    await cameras.add("garden", "http://127.0.0.1:9/")
    await cameras.add("door", "http://127.0.0.1:9/", max_fps=2.0, idle_close=0.0)
    await daemon.service.getServiceNamed("camera-watcher").check()
    assert pacing(daemon, "default") == (4.0, 12.0)
    assert pacing(daemon, "garden") == (4.0, 12.0)
    assert pacing(daemon, "door") == (2.0, 0.0)
    # Handing a setting back to the daemon ("camera set door --max-fps default").
    await cameras.set("door", CameraChanges(daemon_defaults=frozenset({"max_fps"})))
    await daemon.service.getServiceNamed("camera-watcher").check()
    assert pacing(daemon, "door") == (4.0, 0.0)
