"""The cluster's logic (CONTRACT §8) on the in-memory bus, several daemons in one process,
driven by a fake clock: leases, frames, counts, commands, failover, a bus outage."""

from __future__ import annotations

import json
from typing import Any

import attrs
from prometheus_client import generate_latest
from twisted.internet.task import Clock

from camproxy.cluster.memorybus import MemoryBus, MemoryRedis
from camproxy.hub.commands import LightCommand, ServoCommand
from camproxy.hub.hub import CameraHub
from camproxy.hub.source import Capabilities, ICameraSource, ISourceListener
from camproxy.ops.metrics import ClusterReading, DaemonMetrics
from camproxy.sources.cluster import (
    LEASE_MS,
    ClusterNode,
    ClusterSource,
    frame_message,
    parse_frame_message,
)
from camproxy.tap import cluster_reading
from tests.fakes import JPEG, FakeSource, FakeViewer

CAMERA = "default"


@attrs.define
class Daemon:
    """One simulated daemon: its bus, its node, one camera's hub and cluster source."""

    name: str
    bus: MemoryBus
    node: ClusterNode
    hub: CameraHub
    source: ClusterSource
    real: list[FakeSource]

    @property
    def camera(self) -> FakeSource:
        """The real source this daemon opened while it held the camera (the newest)."""
        return self.real[-1]


def daemon(clock: Clock, server: MemoryRedis, name: str, idle_close: float = 30) -> Daemon:
    bus = MemoryBus(server, timeout=1.0, retry=0.5)
    node = ClusterNode(clock, bus, name)
    hub = CameraHub(clock, max_fps=10, idle_close=idle_close)
    real: list[FakeSource] = []

    def build(listener: ISourceListener) -> ICameraSource:
        made = FakeSource(listener, connect_on_open=False)
        real.append(made)
        return made

    source = node.source(
        CAMERA, hub, hub, build, kind="robocam", capabilities=Capabilities(True, True)
    )
    bus.startService()
    node.startService()
    hub.start(source)
    return Daemon(name, bus, node, hub, source, real)


def connect_camera(holder: Daemon) -> None:
    """The holder's real link comes up: the camera answers."""
    holder.camera.connect()


def cluster(count: int = 2, **settings: Any) -> tuple[Clock, MemoryRedis, list[Daemon]]:
    clock = Clock()
    server = MemoryRedis(clock)
    daemons = [daemon(clock, server, f"node{n}", **settings) for n in range(count)]
    clock.advance(0.1)
    return clock, server, daemons


def tick(clock: Clock, seconds: float = 1.0, step: float = 0.05) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


def test_frames_round_trip_with_their_epoch() -> None:
    message = frame_message(7, 42, JPEG)
    assert parse_frame_message(message) == (7, 42, JPEG)
    assert parse_frame_message(b"nonsense") is None


def test_nobody_holds_a_camera_without_viewers() -> None:
    clock, _server, daemons = cluster()
    tick(clock, 5)
    assert not any(d.source.holding for d in daemons)
    assert all(d.real == [] for d in daemons)


def test_a_daemon_with_viewers_takes_the_camera_and_the_others_follow() -> None:
    clock, _server, (first, second) = cluster()
    here, there = FakeViewer(user="alice"), FakeViewer(user="bob")
    first.hub.attach(here)
    tick(clock, 1.5)
    assert first.source.holding and not second.source.holding
    connect_camera(first)
    second.hub.attach(there)
    tick(clock, 1.5)
    assert not second.source.holding and second.real == []
    first.hub.frame_received(b"\xff\xd8 not this way \xff\xd9")  # the hub's own path
    first.camera.hub.frame_received(JPEG)  # the real link's path: relayed to the cluster
    assert [f.data for f in here.frames][-1] == JPEG
    assert [f.data for f in there.frames] == [JPEG]
    # Status, counts: the cluster's view everywhere.
    assert second.hub.connected
    assert [e["count"] for e in there.of_type("client_count")][-1] == 2
    assert [e["count"] for e in here.of_type("client_count")][-1] == 2
    assert first.hub.viewer_count == second.hub.viewer_count == 2
    # What /metrics shows of it on each daemon.
    assert cluster_reading(first.node) == ClusterReading(
        bus_connected=True, other_daemons=1, publish_failures=0, cameras={CAMERA: (True, 1, 0, 0)}
    )
    assert cluster_reading(second.node).cameras == {CAMERA: (False, 0, 1, 0)}


def test_followers_commands_are_carried_out_by_the_holder() -> None:
    clock, _server, (first, second) = cluster()
    first.hub.attach(FakeViewer(user="alice"))
    tick(clock, 1.5)
    connect_camera(first)
    tick(clock, 1.0)
    bob = FakeViewer(user="bob")
    second.hub.attach(bob)
    tick(clock, 1.0)
    assert second.hub.execute(ServoCommand("up"), bob)
    assert second.hub.execute(LightCommand(True), bob)
    tick(clock, 0.5)
    commands = [c for c in first.camera.sent if c != "request_frame"]
    assert commands == ["move:up", "light:on"]
    assert bob.of_type("light_update")[-1] == {"type": "light_update", "state": True}
    watcher = FakeViewer(user="carol", may_control=False)
    second.hub.attach(watcher)
    second.hub.execute(ServoCommand("down"), watcher)
    assert watcher.of_type("error") and "move:down" not in first.camera.sent


def test_exclusive_control_is_decided_once_for_the_whole_cluster() -> None:
    clock, _server, (first, second) = cluster()
    first.hub.control_mode = "exclusive"
    alice = FakeViewer(user="alice")
    first.hub.attach(alice)
    tick(clock, 1.5)
    connect_camera(first)
    bob = FakeViewer(user="bob")
    second.hub.attach(bob)
    tick(clock, 1.0)
    first.hub.execute(ServoCommand("up"), alice)
    tick(clock, 0.2)
    assert [e["holder"] for e in bob.of_type("control")] == ["alice"]
    second.hub.execute(ServoCommand("down"), bob)
    tick(clock, 0.2)
    assert "alice" in bob.of_type("error")[-1]["message"]
    assert "move:down" not in first.camera.sent


def test_a_stopped_holder_hands_over_at_once() -> None:
    clock, _server, (first, second) = cluster()
    first.hub.attach(FakeViewer())
    tick(clock, 1.5)
    connect_camera(first)
    viewer = FakeViewer()
    second.hub.attach(viewer)
    tick(clock, 1.0)
    first.node.stopService()  # SIGTERM: the lease is released at once, and said so
    first.hub.stop()
    # Taken on hearing so, not on the next once-a-second tick.
    tick(clock, 0.1, step=0.01)
    assert second.source.holding
    connect_camera(second)
    second.camera.hub.frame_received(JPEG)
    assert viewer.frames and viewer.of_type("camera_status")[-1]["esp32_connected"] is True


def test_a_killed_holder_is_replaced_once_its_lease_expires() -> None:
    clock, server, (first, second) = cluster()
    first.hub.attach(FakeViewer())
    tick(clock, 1.5)
    connect_camera(first)
    viewer = FakeViewer()
    second.hub.attach(viewer)
    tick(clock, 1.0)
    # SIGKILL: nothing is said; the bus of the dead daemon just goes away.
    first.node._tick.stop()
    server.drop_subscriber(first.bus)
    first.bus.stopService()
    tick(clock, LEASE_MS / 1000 + 2.0)
    assert second.source.holding
    assert viewer.of_type("camera_status")[-1]["esp32_connected"] is False
    connect_camera(second)
    assert viewer.of_type("camera_status")[-1]["esp32_connected"] is True


def test_the_holder_publishes_a_frame_before_its_own_fan_out() -> None:
    # The other daemons' viewers wait for the hop only, not for the holder's viewers too;
    # and what the hub would refuse is not published at all.
    clock, _server, (first, second) = cluster()
    there = FakeViewer()
    seen_there_first: list[bool] = []

    class Watching(FakeViewer):
        def send_frame(self, frame: Any) -> None:
            seen_there_first.append(bool(there.frames))
            super().send_frame(frame)

    first.hub.attach(Watching())
    tick(clock, 1.5)
    connect_camera(first)
    second.hub.attach(there)
    tick(clock, 1.0)
    first.camera.hub.frame_received(b"not a JPEG")
    assert first.source.frames_published == 0 and first.hub.stats.frames_invalid == 1
    first.camera.hub.frame_received(JPEG)
    assert seen_there_first == [True]


def test_frames_from_an_older_holder_are_fenced_off() -> None:
    clock, _server, (first, second) = cluster()
    first.hub.attach(FakeViewer())
    tick(clock, 1.5)
    connect_camera(first)
    viewer = FakeViewer()
    second.hub.attach(viewer)
    tick(clock, 1.0)
    epoch = first.source.epoch
    old = b"\xff\xd8 old holder \xff\xd9"
    second.bus.publish(f"camproxy:frames:{CAMERA}", frame_message(epoch - 1, 1, old))
    second.bus.publish(f"camproxy:frames:{CAMERA}", frame_message(epoch, 1, JPEG))
    assert [f.data for f in viewer.frames] == [JPEG]
    assert (second.source.frames_fenced, second.source.frames_followed) == (1, 1)


def test_without_the_bus_every_daemon_reports_the_camera_down_and_the_holder_lets_go() -> None:
    clock, server, (first, second) = cluster()
    here, there = FakeViewer(), FakeViewer()
    first.hub.attach(here)
    tick(clock, 1.5)
    connect_camera(first)
    second.hub.attach(there)
    tick(clock, 1.0)
    server.stop()
    tick(clock, 3.0)
    assert not first.source.holding and not first.camera.is_open
    for viewer in (here, there):
        assert viewer.of_type("camera_status")[-1]["esp32_connected"] is False
    server.start()
    tick(clock, 3.0)
    holders = [d for d in (first, second) if d.source.holding]
    assert len(holders) == 1
    connect_camera(holders[0])
    holders[0].camera.hub.frame_received(JPEG)
    assert here.frames[-1].data == JPEG and there.frames[-1].data == JPEG


def test_the_holder_keeps_the_link_while_viewers_elsewhere_watch() -> None:
    clock, _server, (first, second) = cluster(idle_close=2)
    mine = FakeViewer()
    first.hub.attach(mine)
    tick(clock, 1.5)
    connect_camera(first)
    second.hub.attach(FakeViewer())
    tick(clock, 1.0)
    first.hub.detach(mine)
    tick(clock, 5.0)
    assert first.source.holding and first.camera.is_open


def test_no_timers_are_left_after_stopping() -> None:
    clock, _server, daemons = cluster()
    daemons[0].hub.attach(FakeViewer())
    tick(clock, 2.0)
    for each in daemons:
        each.node.stopService()
        each.hub.stop()
        each.bus.stopService()
    tick(clock, 10.0)
    assert clock.getDelayedCalls() == []


def test_a_holder_dropped_for_a_moment_takes_its_own_lease_back_at_once() -> None:
    """Redis drops the holder's subscriber (a slow reader): the holder lets the link go,
    as without the bus, but its lease is still its own, so it takes it back as soon as
    the bus is up instead of leaving every daemon without frames until it expires."""
    clock, server, (first, second) = cluster()
    first.hub.attach(FakeViewer())
    tick(clock, 1.5)
    connect_camera(first)
    viewer = FakeViewer()
    second.hub.attach(viewer)
    tick(clock, 1.0)
    epoch = first.source.epoch
    server.drop_subscriber(first.bus)
    assert not first.source.holding and not first.camera.is_open
    tick(clock, 2.0)  # reconnected, resubscribed, one lease tick: well within the lease
    assert first.source.holding and first.source.epoch > epoch
    assert not second.source.holding
    connect_camera(first)
    first.camera.hub.frame_received(JPEG)
    assert viewer.frames[-1].data == JPEG


def test_after_redis_restarts_empty_followers_take_the_new_epochs() -> None:
    """A Redis without persistence comes back empty: the epoch counter starts again at 1,
    below what the followers saw before; they must not fence the new holder off."""
    clock, server, (first, second) = cluster()
    here = FakeViewer()
    first.hub.attach(here)
    tick(clock, 1.5)
    connect_camera(first)
    viewer = FakeViewer()
    second.hub.attach(viewer)
    tick(clock, 1.0)
    # Two more holdings: the epoch is 3 now, and the follower saw it.
    for _ in range(2):
        first.source.give_up("test", release=True)
        tick(clock, 1.5)
        assert first.source.holding
        connect_camera(first)
        first.camera.hub.frame_received(JPEG)
    assert first.source.epoch == 3 and viewer.frames[-1].data == JPEG
    viewers = {first.name: here, second.name: viewer}
    server.stop()
    tick(clock, 3.0)
    server.start()
    tick(clock, 3.0)
    (holder,) = [d for d in (first, second) if d.source.holding]
    assert holder.source.epoch == 1
    connect_camera(holder)
    fresh = b"\xff\xd8 after the restart \xff\xd9"
    holder.camera.hub.frame_received(fresh)
    (follower,) = [d for d in (first, second) if d is not holder]
    assert viewers[follower.name].frames[-1].data == fresh
    assert viewers[follower.name].of_type("camera_status")[-1]["esp32_connected"] is True


def test_the_holder_does_not_read_its_own_frames_back() -> None:
    """The holder publishes every frame; subscribed to them itself, it read each one back
    from Redis (twice the traffic of a follower, and a holder busy enough to read slowly
    is dropped by Redis as a slow subscriber, with a link given up at each drop)."""
    clock, _server, (first, second) = cluster()
    first.hub.attach(FakeViewer())
    tick(clock, 1.5)
    assert first.source.holding
    second.hub.attach(FakeViewer())
    tick(clock, 1.0)
    receivers: list[int] = []
    first.bus.publish("camproxy:frames:default", frame_message(1, 1, JPEG)).addCallback(
        receivers.append
    )
    clock.advance(0)
    assert receivers == [1]  # the follower only
    first.source.give_up("test", release=True)
    second.source.give_up("test", release=True)
    tick(clock, 1.5)
    (holder,) = [d for d in (first, second) if d.source.holding]
    holder.bus.publish("camproxy:frames:default", frame_message(9, 1, JPEG)).addCallback(
        receivers.append
    )
    clock.advance(0)
    assert receivers == [1, 1]


def test_metrics_show_the_cluster() -> None:
    metrics = DaemonMetrics()
    metrics.watch_cluster(
        lambda: ClusterReading(
            bus_connected=False,
            other_daemons=2,
            publish_failures=3,
            cameras={"door": (True, 10, 0, 0), "yard": (False, 0, 7, 1)},
        )
    )
    text = generate_latest(metrics.registry).decode()
    for line in (
        "camproxy_cluster_bus_connected 0.0",
        "camproxy_cluster_other_daemons 2.0",
        "camproxy_cluster_publish_failures_total 3.0",
        'camproxy_cluster_holding{camera="door"} 1.0',
        'camproxy_cluster_holding{camera="yard"} 0.0',
        'camproxy_cluster_frames_published_total{camera="door"} 10.0',
        'camproxy_cluster_frames_followed_total{camera="yard"} 7.0',
        'camproxy_cluster_frames_fenced_total{camera="yard"} 1.0',
    ):
        assert line in text.splitlines()


def test_a_viewer_on_another_daemon_sends_no_early_heartbeat_here() -> None:
    # The hub tells of every count change, also of the others' viewers; this daemon's own
    # counts did not change then, so it has nothing to tell before its next tick.
    clock, server, (first, second) = cluster()
    listener = MemoryBus(server, timeout=1.0, retry=0.5)
    listener.startService()
    beats: list[bytes] = []
    listener.subscribe("camproxy:nodes", lambda _channel, payload: beats.append(payload))
    first.hub.attach(FakeViewer(user="alice"))
    tick(clock, 1.5)
    clock.advance(0.5)  # halfway between two ticks of the node's heartbeat
    del beats[:]
    second.hub.attach(FakeViewer(user="bob"))
    tick(clock, 0.75)  # second's early beat, first hearing it, first's folded count
    told = [json.loads(beat)["node"] for beat in beats]
    assert told == ["node1"]
    assert first.hub.viewer_count == 2
