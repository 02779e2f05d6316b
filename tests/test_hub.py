"""The hub's rules, driven by a fake clock: pacing, idle close, fan-out, commands."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from camproxy.hub.commands import (
    GetPosition,
    LightCommand,
    PositionCommand,
    ReleaseControl,
    ServoCommand,
)
from camproxy.hub.events import CloseReason, Refusal
from camproxy.hub.hub import CameraHub
from camproxy.hub.source import Capabilities, ICameraSource, Limits
from camproxy.hub.viewer import IRequester, IViewer
from tests.fakes import JPEG, FakeSource, FakeViewer


def make_hub(
    max_fps: float = 10, idle_close: float = 30, connect: bool = True
) -> tuple[Clock, CameraHub, FakeSource]:
    clock = Clock()
    hub = CameraHub(clock, max_fps=max_fps, idle_close=idle_close, request_timeout=2.0)
    link = FakeSource(hub, connect_on_open=connect)
    hub.start(link)
    return clock, hub, link


def test_fakes_provide_the_interfaces() -> None:
    _, _hub, link = make_hub()
    assert verifyObject(ICameraSource, link)
    assert verifyObject(IViewer, FakeViewer())
    assert verifyObject(IRequester, FakeViewer())


def test_connects_at_start() -> None:
    _, hub, link = make_hub()
    assert link.is_open and hub.connected


def test_no_getframe_without_viewers() -> None:
    clock, _hub, link = make_hub()
    clock.advance(10)
    assert link.count("request_frame") == 0


def test_first_viewer_gets_a_frame_requested_at_once() -> None:
    _clock, hub, link = make_hub()
    hub.attach(FakeViewer())
    assert link.count("request_frame") == 1


def test_at_most_one_outstanding_getframe() -> None:
    clock, hub, link = make_hub()
    hub.attach(FakeViewer())
    clock.pump([0.1] * 19)  # 1.9 s without an answer
    assert link.count("request_frame") == 1


def test_unanswered_request_is_abandoned_after_timeout() -> None:
    clock, hub, link = make_hub()
    hub.attach(FakeViewer())
    clock.advance(1.99)
    assert link.count("request_frame") == 1
    clock.advance(0.01)
    assert link.count("request_frame") == 2
    assert hub.stats.frame_request_timeouts == 1


def test_next_request_waits_one_frame_interval_after_the_frame() -> None:
    clock, hub, link = make_hub(max_fps=10)
    hub.attach(FakeViewer())
    clock.advance(0.03)
    hub.frame_received(JPEG)
    assert link.count("request_frame") == 1
    clock.advance(0.099)
    assert link.count("request_frame") == 1
    clock.advance(0.001)
    assert link.count("request_frame") == 2


def test_pushed_frames_also_pace_requests() -> None:
    """A pushed frame resets the interval; the camera is never asked above max_fps."""
    clock, hub, link = make_hub(max_fps=5)
    hub.attach(FakeViewer())
    requests_before = link.count("request_frame")
    for _ in range(50):  # a camera pushing every 50 ms for 2.5 s
        hub.frame_received(JPEG)
        clock.advance(0.05)
    assert link.count("request_frame") == requests_before


def test_request_rate_never_exceeds_max_fps_with_an_instant_camera() -> None:
    clock, hub, link = make_hub(max_fps=25)
    hub.attach(FakeViewer())
    for _ in range(1000):
        if link.sent[-1] == "request_frame":
            link.sent.append("answered")
            hub.frame_received(JPEG)
        clock.advance(0.001)
    assert link.count("request_frame") <= 25 + 1


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
    clock, hub, _link = make_hub()
    first, second = FakeViewer(), FakeViewer()
    hub.attach(first)
    clock.advance(1)
    hub.attach(second)
    clock.advance(1)
    hub.detach(second)
    assert [e["count"] for e in first.of_type("client_count")] == [1, 2, 1]
    assert [e["count"] for e in second.of_type("client_count")] == [2]


def test_a_burst_of_joins_is_folded_into_one_count() -> None:
    """CONTRACT §3: one client_count with the final number within 250 ms of the last change."""
    clock, hub, _link = make_hub()
    first = FakeViewer()
    hub.attach(first)
    crowd = [FakeViewer() for _ in range(500)]
    for viewer in crowd:
        hub.attach(viewer)
        clock.advance(0.0001)
    clock.advance(0.25)
    counts = [e["count"] for e in first.of_type("client_count")]
    assert counts[-1] == 501
    assert len(counts) <= 3
    # Every newcomer knows the count; all of them end with the final one.
    assert all(v.of_type("client_count")[-1]["count"] == 501 for v in crowd)
    # O(N) messages for N joins, not O(N²).
    assert sum(len(v.of_type("client_count")) for v in crowd) <= 3 * len(crowd)


def test_a_folded_count_that_returns_to_the_last_sent_is_not_repeated() -> None:
    clock, hub, _link = make_hub()
    first = FakeViewer()
    hub.attach(first)
    passing = FakeViewer()
    hub.attach(passing)
    hub.detach(passing)
    clock.advance(1)
    assert [e["count"] for e in first.of_type("client_count")] == [1]


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
    hub.source_disconnected()
    assert [e["esp32_connected"] for e in viewer.of_type("camera_status")] == [True, False]


def test_no_requests_while_disconnected() -> None:
    clock, hub, link = make_hub(connect=False)
    hub.attach(FakeViewer())
    clock.advance(10)
    assert link.count("request_frame") == 0
    link.connect()
    assert link.count("request_frame") == 1


def test_commands_reach_the_source_as_semantic_requests() -> None:
    _clock, hub, link = make_hub()
    viewer = FakeViewer()
    hub.attach(viewer)
    link.sent.clear()
    hub.execute(ServoCommand("up"), viewer)
    hub.execute(PositionCommand(90, 45), viewer)
    hub.execute(GetPosition(), viewer)
    hub.execute(LightCommand(True), viewer)
    assert link.sent == ["move:up", "move_to:90,45", "query_position", "light:on"]
    assert viewer.of_type("light_update")[-1] == {"type": "light_update", "state": True}


def test_commands_refused_while_camera_down() -> None:
    _clock, hub, link = make_hub(connect=False)
    viewer = FakeViewer()
    hub.attach(viewer)
    assert not hub.execute(ServoCommand("up"), viewer)
    assert viewer.of_type("error")
    assert "move:up" not in link.sent


def test_viewer_without_control_is_refused_but_may_ask_position() -> None:
    _clock, hub, link = make_hub()
    watcher = FakeViewer(may_control=False)
    hub.attach(watcher)
    assert not hub.execute(ServoCommand("up"), watcher)
    assert not hub.execute(LightCommand(True), watcher)
    assert hub.execute(GetPosition(), watcher)
    assert "move:up" not in link.sent and "light:on" not in link.sent
    assert len(watcher.of_type("error")) == 2


def test_out_of_bounds_goes_to_the_requester_only() -> None:
    _clock, hub, _link = make_hub()
    mover, other = FakeViewer(), FakeViewer()
    hub.attach(mover)
    hub.attach(other)
    hub.execute(PositionCommand(10, 10), mover)
    hub.position_refused()
    assert mover.of_type("error")[0]["message"] == "Position out of bounds"
    assert other.of_type("error") == []


def test_position_and_limits_from_camera() -> None:
    _clock, hub, _link = make_hub()
    viewer = FakeViewer()
    hub.attach(viewer)
    hub.limits_reported(Limits(10, 170, 5, 85))
    hub.position_reported(100, 40)
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


def test_every_failing_viewer_is_dropped_and_every_other_gets_the_frame() -> None:
    # The fan-out has one try around its loop; after a failure it goes on with the rest.
    _clock, hub, _link = make_hub()

    class Broken(FakeViewer):
        def send_frame(self, frame: object) -> None:
            raise ConnectionError("closing")

    viewers = [Broken() if i % 3 == 0 else FakeViewer() for i in range(12)]
    for viewer in viewers:
        hub.attach(viewer)
    hub.frame_received(JPEG)
    hub.frame_received(JPEG)
    healthy = [v for v in viewers if not isinstance(v, Broken)]
    assert [len(v.frames) for v in healthy] == [2] * 8
    assert hub.viewers == frozenset(healthy)


def test_next_frame_wakes_an_idle_link_and_fires() -> None:
    clock, hub, link = make_hub(idle_close=1)
    clock.advance(1)
    assert not link.is_open
    waiting = hub.next_frame()
    assert link.is_open and link.count("request_frame") == 1
    hub.frame_received(JPEG)
    assert waiting.result.data == JPEG


def test_stop_leaves_no_timers() -> None:
    clock, hub, _link = make_hub(idle_close=5)
    hub.attach(FakeViewer())
    hub.execute(PositionCommand(1, 1), FakeViewer())
    hub.stop()
    assert clock.getDelayedCalls() == []


def test_a_stopped_hub_schedules_nothing_when_viewers_leave_late() -> None:
    """Viewers still closing at shutdown detach after the hub stopped: no idle timer."""
    clock, hub, _link = make_hub(idle_close=30)
    viewers = [FakeViewer() for _ in range(3)]
    for viewer in viewers:
        hub.attach(viewer)
    hub.stop()
    for viewer in viewers:
        hub.detach(viewer)
    hub.attach(FakeViewer())
    hub.frame_received(JPEG)
    assert clock.getDelayedCalls() == []


def test_a_frame_from_before_the_link_dropped_is_not_kept() -> None:
    _clock, hub, _link = make_hub()
    hub.attach(FakeViewer())
    hub.frame_received(JPEG)
    assert hub.newest is not None
    hub.source_disconnected()
    assert hub.newest is None


def test_commands_the_camera_cannot_do_are_refused_before_reaching_it() -> None:
    clock = Clock()
    hub = CameraHub(clock, max_fps=10, idle_close=30)
    source = FakeSource(hub, capabilities=Capabilities(pan_tilt=False, light=True))
    hub.start(source)
    viewer = FakeViewer()
    hub.attach(viewer)
    for command in (ServoCommand("up"), PositionCommand(1, 1), GetPosition()):
        assert not hub.execute(command, viewer)
    assert [e["reason"] for e in viewer.of_type("error")] == [Refusal.UNSUPPORTED] * 3
    assert hub.execute(LightCommand(True), viewer)
    assert source.sent == ["request_frame", "light:on"]


def test_a_light_that_fails_to_switch_is_an_error_and_no_update() -> None:
    _clock, hub, link = make_hub()
    viewer = FakeViewer()
    hub.attach(viewer)
    link.light_fails = "HTTP 500 from /control"
    hub.execute(LightCommand(True), viewer)
    assert viewer.of_type("light_update") == [{"type": "light_update", "state": False}]
    assert "HTTP 500" in viewer.of_type("error")[0]["message"]
    assert hub.light is False


def test_a_streaming_source_is_never_asked_for_frames() -> None:
    clock = Clock()
    hub = CameraHub(clock, max_fps=10, idle_close=30)
    source = FakeSource(hub, paced=False)
    hub.start(source)
    hub.attach(FakeViewer())
    clock.advance(10)
    assert source.count("request_frame") == 0


def test_the_hub_knows_every_viewer_whatever_its_transport() -> None:
    _clock, hub, _link = make_hub()
    first, second = FakeViewer(principal="a"), FakeViewer(principal="b")
    hub.attach(first)
    hub.attach(second)
    assert hub.viewers == {first, second}
    for viewer in hub.viewers:
        viewer.close(CloseReason.SESSION_ENDED)
    assert first.closed == second.closed == [CloseReason.SESSION_ENDED]


@pytest.mark.parametrize("fps", [1, 10, 25])
def test_requests_follow_max_fps(fps: float) -> None:
    clock, hub, link = make_hub(max_fps=fps)
    hub.attach(FakeViewer())
    answered = 0
    for _ in range(2000):  # 2 s in 1 ms steps; the camera answers instantly
        if link.count("request_frame") > answered:
            answered += 1
            hub.frame_received(JPEG)
        clock.advance(0.001)
    assert abs(answered - 2 * fps) <= 1


# -- exclusive control (CONTRACT §6) ------------------------------------------------------


def exclusive_hub() -> tuple[Clock, CameraHub, FakeSource]:
    clock = Clock()
    hub = CameraHub(clock, max_fps=10, idle_close=30, control_mode="exclusive")
    source = FakeSource(hub)
    hub.start(source)
    return clock, hub, source


def controls(viewer: FakeViewer) -> list[Any]:
    return [e["holder"] for e in viewer.of_type("control")]


def test_the_first_to_command_holds_the_camera_and_everyone_is_told() -> None:
    _clock, hub, source = exclusive_hub()
    alice, bob, carol = FakeViewer(user="alice"), FakeViewer(user="bob"), FakeViewer(user="carol")
    for viewer in (alice, bob):
        hub.attach(viewer)
    assert hub.execute(ServoCommand("up"), alice)
    assert hub.holder == "alice"
    assert controls(alice) == controls(bob) == ["alice"]
    assert bob.of_type("control")[0]["expires_in"] == 30
    # Others are refused with the holder's name; get_position is never refused.
    assert not hub.execute(ServoCommand("down"), bob)
    assert "alice" in bob.of_type("error")[0]["message"]
    assert bob.of_type("error")[0]["reason"] is Refusal.CONTROL_HELD
    assert hub.execute(GetPosition(), bob)
    assert "move:down" not in source.sent
    # A viewer that joins while held hears it after hello.
    hub.attach(carol)
    assert controls(carol) == ["alice"]


def test_the_hold_ends_30_seconds_after_the_last_command() -> None:
    clock, hub, _source = exclusive_hub()
    alice, bob = FakeViewer(user="alice"), FakeViewer(user="bob")
    hub.attach(alice)
    hub.attach(bob)
    hub.execute(ServoCommand("up"), alice)
    clock.advance(20)
    hub.execute(ServoCommand("up"), alice)  # renews the hold
    clock.advance(29.9)
    assert hub.holder == "alice"
    assert not hub.execute(LightCommand(True), bob)
    clock.advance(0.1)
    assert hub.holder is None and controls(bob)[-1] is None
    assert hub.execute(LightCommand(True), bob)
    assert hub.holder == "bob"


def test_release_and_the_holders_last_socket_end_the_hold() -> None:
    _clock, hub, _source = exclusive_hub()
    alice_tab1, alice_tab2, bob = (
        FakeViewer(user="alice"),
        FakeViewer(user="alice"),
        FakeViewer(user="bob"),
    )
    for viewer in (alice_tab1, alice_tab2, bob):
        hub.attach(viewer)
    hub.execute(ServoCommand("up"), alice_tab1)
    assert not hub.execute(ReleaseControl(), bob)  # only the holder releases
    hub.detach(alice_tab1)
    assert hub.holder == "alice"  # another of her sockets is still open
    hub.detach(alice_tab2)
    assert hub.holder is None and controls(bob)[-1] is None
    hub.execute(ServoCommand("up"), bob)
    assert hub.execute(ReleaseControl(), bob)
    assert hub.holder is None


def test_an_admin_takes_control_over() -> None:
    _clock, hub, _source = exclusive_hub()
    alice, root = FakeViewer(user="alice"), FakeViewer(user="root", is_admin=True)
    hub.attach(alice)
    hub.attach(root)
    hub.execute(ServoCommand("up"), alice)
    assert hub.execute(ServoCommand("down"), root)
    assert hub.holder == "root" and controls(alice) == ["alice", "root"]


def test_viewers_without_control_never_take_it_and_shared_mode_has_no_holder() -> None:
    clock, hub, _source = exclusive_hub()
    watcher = FakeViewer(user="carol", may_control=False)
    hub.attach(watcher)
    assert not hub.execute(ServoCommand("up"), watcher)
    assert hub.holder is None
    alice = FakeViewer(user="alice")
    hub.attach(alice)
    hub.execute(ServoCommand("up"), alice)
    hub.control_mode = "shared"
    assert hub.holder is None and controls(watcher)[-1] is None
    hub.execute(ServoCommand("up"), FakeViewer(user="bob"))
    assert hub.holder is None
    hub.stop()
    assert clock.getDelayedCalls() == []


def test_capabilities_learned_late_are_told_to_every_viewer() -> None:
    _clock, hub, source = make_hub()
    viewer = FakeViewer()
    hub.attach(viewer)
    source.capabilities = Capabilities(pan_tilt=False, light=True)
    source.kind = "esp32"
    hub.capabilities_changed()
    assert viewer.of_type("capabilities") == [
        {
            "type": "capabilities",
            "kind": "esp32",
            "capabilities": {"pan_tilt": False, "light": True},
        }
    ]
