"""The hub's rules, driven by a fake clock: pacing, idle close, fan-out, commands."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from camproxy.hub.commands import GetPosition, LightCommand, PositionCommand, ServoCommand
from camproxy.hub.hub import CameraHub, ICameraLink, IRequester, IViewer
from tests.fakes import JPEG, FakeLink, FakeViewer


def make_hub(
    max_fps: float = 10, idle_close: float = 30, connect: bool = True
) -> tuple[Clock, CameraHub, FakeLink]:
    clock = Clock()
    hub = CameraHub(clock, max_fps=max_fps, idle_close=idle_close, request_timeout=2.0)
    link = FakeLink(hub, connect_on_open=connect)
    hub.start(link)
    return clock, hub, link


def test_fakes_provide_the_interfaces() -> None:
    _, _hub, link = make_hub()
    assert verifyObject(ICameraLink, link)
    assert verifyObject(IViewer, FakeViewer())
    assert verifyObject(IRequester, FakeViewer())


def test_connects_at_start_and_asks_limits_and_position() -> None:
    _, _hub, link = make_hub()
    assert link.is_open
    assert link.sent[:2] == ["get_limits", "get_pos"]


def test_no_getframe_without_viewers() -> None:
    clock, _hub, link = make_hub()
    clock.advance(10)
    assert link.count("getframe") == 0


def test_first_viewer_gets_a_frame_requested_at_once() -> None:
    _clock, hub, link = make_hub()
    hub.attach(FakeViewer())
    assert link.count("getframe") == 1


def test_at_most_one_outstanding_getframe() -> None:
    clock, hub, link = make_hub()
    hub.attach(FakeViewer())
    clock.pump([0.1] * 19)  # 1.9 s without an answer
    assert link.count("getframe") == 1


def test_unanswered_request_is_abandoned_after_timeout() -> None:
    clock, hub, link = make_hub()
    hub.attach(FakeViewer())
    clock.advance(1.99)
    assert link.count("getframe") == 1
    clock.advance(0.01)
    assert link.count("getframe") == 2
    assert hub.stats.frame_request_timeouts == 1


def test_next_request_waits_one_frame_interval_after_the_frame() -> None:
    clock, hub, link = make_hub(max_fps=10)
    hub.attach(FakeViewer())
    clock.advance(0.03)
    hub.frame_received(JPEG)
    assert link.count("getframe") == 1
    clock.advance(0.099)
    assert link.count("getframe") == 1
    clock.advance(0.001)
    assert link.count("getframe") == 2


def test_pushed_frames_also_pace_requests() -> None:
    """A pushed frame resets the interval; the camera is never asked above max_fps."""
    clock, hub, link = make_hub(max_fps=5)
    hub.attach(FakeViewer())
    requests_before = link.count("getframe")
    for _ in range(50):  # a camera pushing every 50 ms for 2.5 s
        hub.frame_received(JPEG)
        clock.advance(0.05)
    assert link.count("getframe") == requests_before


def test_request_rate_never_exceeds_max_fps_with_an_instant_camera() -> None:
    clock, hub, link = make_hub(max_fps=25)
    hub.attach(FakeViewer())
    for _ in range(1000):
        if link.sent[-1] == "getframe":
            link.sent.append("answered")
            hub.frame_received(JPEG)
        clock.advance(0.001)
    assert link.count("getframe") <= 25 + 1


def test_frames_fan_out_once_each_to_every_viewer() -> None:
    _clock, hub, _link = make_hub()
    viewers = [FakeViewer() for _ in range(3)]
    for viewer in viewers:
        hub.attach(viewer)
    hub.frame_received(JPEG)
    assert [len(v.frames) for v in viewers] == [1, 1, 1]
    assert len({id(v.frames[0]) for v in viewers}) == 1
    assert viewers[0].frames[0].data is JPEG


def test_invalid_frames_never_reach_viewers() -> None:
    _clock, hub, _link = make_hub()
    viewer = FakeViewer()
    hub.attach(viewer)
    for bad in (b"", b"\xff\xd8\xff", b"GIF89a", JPEG[:-1], b"\x00" + JPEG):
        hub.frame_received(bad)
    assert viewer.frames == []
    assert hub.stats.frames_invalid == 5


def test_client_count_goes_to_everyone_on_change() -> None:
    _clock, hub, _link = make_hub()
    first, second = FakeViewer(), FakeViewer()
    hub.attach(first)
    hub.attach(second)
    hub.detach(second)
    assert [e["count"] for e in first.of_type("client_count")] == [1, 2, 1]


def test_idle_close_and_reopen() -> None:
    clock, hub, link = make_hub(idle_close=30)
    viewer = FakeViewer()
    hub.attach(viewer)
    hub.detach(viewer)
    clock.advance(29.9)
    assert link.is_open
    clock.advance(0.1)
    assert not link.is_open
    assert not hub.wants_camera
    hub.attach(FakeViewer())
    assert link.is_open and link.opens == 2


def test_idle_close_zero_keeps_the_link() -> None:
    clock, hub, link = make_hub(idle_close=0)
    clock.advance(3600)
    assert link.is_open and hub.wants_camera


def test_link_idle_closes_after_start_without_viewers() -> None:
    clock, _hub, link = make_hub(idle_close=5)
    clock.advance(5)
    assert not link.is_open


def test_viewer_returning_cancels_idle_close() -> None:
    clock, hub, link = make_hub(idle_close=5)
    clock.advance(4)
    hub.attach(FakeViewer())
    clock.advance(10)
    assert link.is_open


def test_camera_status_broadcast() -> None:
    _clock, hub, link = make_hub(connect=False)
    viewer = FakeViewer()
    hub.attach(viewer)
    link.connect()
    hub.camera_disconnected()
    assert [e["esp32_connected"] for e in viewer.of_type("camera_status")] == [True, False]


def test_no_requests_while_disconnected() -> None:
    clock, hub, link = make_hub(connect=False)
    hub.attach(FakeViewer())
    clock.advance(10)
    assert link.count("getframe") == 0
    link.connect()
    assert link.count("getframe") == 1


def test_commands_translate_to_firmware_dialect() -> None:
    clock, hub, link = make_hub()
    viewer = FakeViewer()
    hub.attach(viewer)
    link.sent.clear()
    hub.execute(ServoCommand("up"), viewer)
    hub.execute(PositionCommand(90, 45), viewer)
    hub.execute(GetPosition(), viewer)
    hub.execute(LightCommand(True), viewer)
    assert link.sent == ["up", '{"x":90,"y":45}', "get_pos", "get_pos", "light_on"]
    assert viewer.of_type("light_update")[-1] == {"type": "light_update", "state": True}
    clock.advance(1.0)
    assert link.sent[-1] == "get_pos"


def test_commands_refused_while_camera_down() -> None:
    _clock, hub, link = make_hub(connect=False)
    viewer = FakeViewer()
    hub.attach(viewer)
    assert not hub.execute(ServoCommand("up"), viewer)
    assert viewer.of_type("error")
    assert "up" not in link.sent


def test_viewer_without_control_is_refused_but_may_ask_position() -> None:
    _clock, hub, link = make_hub()
    watcher = FakeViewer(may_control=False)
    hub.attach(watcher)
    assert not hub.execute(ServoCommand("up"), watcher)
    assert not hub.execute(LightCommand(True), watcher)
    assert hub.execute(GetPosition(), watcher)
    assert "up" not in link.sent and "light_on" not in link.sent
    assert len(watcher.of_type("error")) == 2


def test_out_of_bounds_goes_to_the_requester_only() -> None:
    _clock, hub, _link = make_hub()
    mover, other = FakeViewer(), FakeViewer()
    hub.attach(mover)
    hub.attach(other)
    hub.execute(PositionCommand(10, 10), mover)
    hub.text_received("Position out of bounds")
    assert mover.of_type("error")[0]["message"] == "Position out of bounds"
    assert other.of_type("error") == []


def test_position_and_limits_from_camera() -> None:
    _clock, hub, _link = make_hub()
    viewer = FakeViewer()
    hub.attach(viewer)
    hub.text_received('{"min_x":10,"max_x":170,"min_y":5,"max_y":85}')
    hub.text_received('{"x":100,"y":40}')
    hub.text_received('{"client_count":3}')
    hub.text_received("garbage \ufffd")
    assert hub.limits.max_x == 170
    assert viewer.of_type("position_update")[-1] == {"type": "position_update", "x": 100, "y": 40}


def test_a_failing_viewer_does_not_stop_the_others() -> None:
    _clock, hub, _link = make_hub()

    class Broken(FakeViewer):
        def send_frame(self, frame: object) -> None:
            raise ConnectionError("closing")

    broken, healthy = Broken(), FakeViewer()
    hub.attach(broken)
    hub.attach(healthy)
    hub.frame_received(JPEG)
    assert len(healthy.frames) == 1
    assert hub.viewer_count == 1


def test_next_frame_wakes_an_idle_link_and_fires() -> None:
    clock, hub, link = make_hub(idle_close=1)
    clock.advance(1)
    assert not link.is_open
    waiting = hub.next_frame()
    assert link.is_open and link.count("getframe") == 1
    hub.frame_received(JPEG)
    assert waiting.result.data == JPEG


def test_stop_leaves_no_timers() -> None:
    clock, hub, _link = make_hub(idle_close=5)
    hub.attach(FakeViewer())
    hub.execute(PositionCommand(1, 1), FakeViewer())
    hub.stop()
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("fps", [1, 10, 25])
def test_requests_follow_max_fps(fps: float) -> None:
    clock, hub, link = make_hub(max_fps=fps)
    hub.attach(FakeViewer())
    answered = 0
    for _ in range(2000):  # 2 s in 1 ms steps; the camera answers instantly
        if link.count("getframe") > answered:
            answered += 1
            hub.frame_received(JPEG)
        clock.advance(0.001)
    assert abs(answered - 2 * fps) <= 1
