"""Several daemons, one CamProxy (CONTRACT §8): each camera's link held by one daemon at a
time, its frames and events shared with every other daemon over the cluster's bus.

Every daemon runs a :class:`ClusterSource` per camera, in front of its hub. The daemon
that holds the camera's **lease** (``SET NX PX``, renewed every second, given up by the
holder itself once it could not renew for :data:`LEASE_MS` minus a margin, on its own
clock) opens the camera's real source (RoboCam, ESP32, ...) and publishes every valid
frame (stamped with a fencing **epoch** from ``INCR`` and a sequence number) and every
event; the others follow: their hubs get the frames and events as if from a camera,
and relay their viewers' commands to the holder, which decides them (exclusive control
included) and answers. Only a daemon whose own viewers want a camera tries to take its
lease, so nobody opens a link at start or while the bus is away; a holder keeps it
while viewers anywhere in the cluster watch.

:class:`ClusterNode` is the daemon's side of the bus: heartbeats with its viewer counts
(every second, and at once when they change), the others' counts for ``client_count``
and idle close, replies to relayed commands, and the lease ticks.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Callable
from typing import Any, Final

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from camproxy.cluster.bus import BusError, IBus
from camproxy.hub.commands import (
    Command,
    GetPosition,
    LightCommand,
    PositionCommand,
    ReleaseControl,
    ServoCommand,
)
from camproxy.hub.events import (
    ClientCount,
    ControlChanged,
    Event,
    LightUpdate,
    PositionUpdate,
    Refusal,
    Refused,
)
from camproxy.hub.hub import NOT_CONNECTED, CameraHub
from camproxy.hub.relay import ICommandRelay
from camproxy.hub.source import (
    Capabilities,
    CommandFailed,
    GatedListener,
    ICameraSource,
    ISourceListener,
    Limits,
)
from camproxy.hub.viewer import IRequester

PREFIX: Final = "camproxy:"
#: A lease lives this long unless renewed; the holder renews it every TICK seconds.
LEASE_MS: Final = 5000
#: A holder that could not renew for LEASE_MS minus this, on its own clock, gives up.
LEASE_MARGIN: Final = 1.0
TICK: Final = 1.0
#: A daemon not heard from for this long is gone (its viewers no longer count).
NODE_TIMEOUT: Final = 3.5
#: A relayed command not answered in this time is refused.
RELAY_TIMEOUT: Final = 3.0
#: The holder refreshes the whole camera state this often (for late and lost followers).
STATE_INTERVAL: Final = 2.0

FRAME_MAGIC: Final = b"CPF1"
_FRAME_HEAD: Final = struct.Struct(">4sQQ")

CHANGING_HANDS = Refused(
    Refusal.NOT_CONNECTED, "the camera is changing hands between daemons; try again"
)


def frame_message(epoch: int, sequence: int, data: bytes) -> bytes:
    return _FRAME_HEAD.pack(FRAME_MAGIC, epoch, sequence) + data


def parse_frame_message(message: bytes) -> tuple[int, int, bytes] | None:
    if len(message) < _FRAME_HEAD.size or not message.startswith(FRAME_MAGIC):
        return None
    _magic, epoch, sequence = _FRAME_HEAD.unpack_from(message)
    return epoch, sequence, message[_FRAME_HEAD.size :]


def encode_command(command: Command) -> dict[str, Any]:
    if isinstance(command, ServoCommand):
        return {"do": "move", "direction": command.direction}
    if isinstance(command, PositionCommand):
        return {"do": "move_to", "x": command.x, "y": command.y}
    if isinstance(command, GetPosition):
        return {"do": "query_position"}
    if isinstance(command, LightCommand):
        return {"do": "light", "on": command.on}
    return {"do": "release"}


def decode_command(fields: dict[str, Any]) -> Command | None:
    action = fields.get("do")
    if action == "move" and isinstance(fields.get("direction"), str):
        return ServoCommand(fields["direction"])
    if (
        action == "move_to"
        and isinstance(fields.get("x"), int)
        and isinstance(fields.get("y"), int)
    ):
        return PositionCommand(fields["x"], fields["y"])
    if action == "query_position":
        return GetPosition()
    if action == "light" and isinstance(fields.get("on"), bool):
        return LightCommand(fields["on"])
    if action == "release":
        return ReleaseControl()
    return None


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        decoded = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _dump(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


@implementer(IRequester)
@attrs.define
class RemoteRequester:
    """A viewer on another daemon, as the holder's hub sees it: a refusal while the hub
    decides becomes the answer; a later one (a camera's "out of bounds") follows it."""

    may_control: bool
    user: str | None
    is_admin: bool
    late: Callable[[Refused], object]
    decided: bool = False
    refused: Refused | None = None

    def command_refused(self, refused: Refused) -> None:
        if self.decided:
            self.late(refused)
        elif self.refused is None:
            self.refused = refused


@attrs.define
class _Pending:
    requester: IRequester
    timeout: IDelayedCall | None


@implementer(ICameraSource, ICommandRelay, ISourceListener)
class ClusterSource:
    """One camera as one daemon of a cluster sees it: the holder's link, or a follower's
    view of it over the bus.

    As an :class:`ISourceListener` it hears the real source while this daemon holds the
    camera (through a :class:`GatedListener`, silenced when the holding ends).
    """

    log = Logger()

    def __init__(
        self,
        node: ClusterNode,
        camera: str,
        hub: CameraHub,
        listener: ISourceListener,
        build: Callable[[ISourceListener], ICameraSource],
        *,
        kind: str,
        capabilities: Capabilities,
    ) -> None:
        self.node = node
        self.camera = camera
        self.hub = hub
        self.listener = listener
        self._build = build
        self._kind = kind
        self._capabilities = capabilities
        self._limits: Limits | None = None
        self._open = False
        self._real: ICameraSource | None = None
        self._holder_listener: GatedListener | None = None
        self._token = f"{node.node_name}:{uuid.uuid4().hex}"
        self._taking = False
        #: A holding was given up without releasing the lease (the bus was away): the
        #: lease may still be this source's own, to take back before it expires.
        self._lease_maybe_mine = False
        self.epoch = 0
        self._seen_epoch = 0
        self._sequence = 0
        self._renewed_at = 0.0
        self._cluster_connected = False
        self._state_published_at = float("-inf")
        self._pending: dict[str, _Pending] = {}
        self._heard_at = float("-inf")
        #: Frames this daemon published as the holder, and took from the holder's
        #: publications as a follower; a deposed holder's late frames fenced off.
        self.frames_published = 0
        self.frames_followed = 0
        self.frames_fenced = 0

    # -- names on the bus -----------------------------------------------------------------

    def _key(self, what: str) -> str:
        return f"{PREFIX}{what}:{self.camera}"

    @property
    def holding(self) -> bool:
        return self._real is not None

    # -- ICameraSource --------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self._real.kind if self._real is not None else self._kind

    @property
    def capabilities(self) -> Capabilities:
        return self._real.capabilities if self._real is not None else self._capabilities

    @property
    def paced(self) -> bool:
        return self._real is not None and bool(self._real.paced)

    def open(self) -> None:
        if self._open:
            return
        self._open = True
        self.node.bus.subscribe(self._key("frames"), self._frame_published)
        self.node.read_state(self)

    def close(self, why: str = "no viewers in the cluster") -> None:
        if not self._open:
            return
        self._open = False
        if self.holding:  # not subscribed to its frames meanwhile
            self.give_up(why, release=True)
        else:
            self.node.bus.unsubscribe(self._key("frames"), self._frame_published)

    def request_frame(self) -> None:
        if self._real is not None:
            self._real.request_frame()

    def move(self, direction: str) -> None:
        if self._real is not None:
            self._real.move(direction)

    def move_to(self, x: int, y: int) -> None:
        if self._real is not None:
            self._real.move_to(x, y)

    def query_position(self) -> None:
        if self._real is not None:
            self._real.query_position()

    def set_light(self, on: bool) -> Deferred[None]:
        if self._real is None:
            return fail(CommandFailed("camera not connected"))
        return self._real.set_light(on)

    # -- ICommandRelay: a follower's commands go to the holder --------------------------

    @property
    def relaying(self) -> bool:
        return self._real is None

    def relay(self, command: Command, requester: IRequester) -> None:
        if self._seen_epoch == 0 or not self.node.bus.connected or not self._cluster_connected:
            requester.command_refused(NOT_CONNECTED)
            return
        command_id = uuid.uuid4().hex
        timeout = self.node.clock.callLater(RELAY_TIMEOUT, self._relay_timed_out, command_id)
        self._pending[command_id] = _Pending(requester, timeout)
        message = {
            "id": command_id,
            "node": self.node.node_name,
            "epoch": self._seen_epoch,
            "user": requester.user,
            "is_admin": requester.is_admin,
            "may_control": requester.may_control,
            "command": encode_command(command),
        }
        self.node.publish(self._key("commands"), _dump(message))

    def _relay_timed_out(self, command_id: str) -> None:
        pending = self._pending.pop(command_id, None)
        if pending is not None:
            pending.timeout = None
            pending.requester.command_refused(NOT_CONNECTED)

    def reply(self, fields: dict[str, Any]) -> None:
        """An answer from the holder to one of this daemon's relayed commands."""
        command_id = fields.get("id")
        pending = self._pending.get(command_id) if isinstance(command_id, str) else None
        if pending is None:
            return
        refused = None
        reason = fields.get("reason")
        if isinstance(reason, str) and reason in Refusal._value2member_map_:
            refused = Refused(Refusal(reason), str(fields.get("message", "")))
        if refused is not None:
            pending.requester.command_refused(refused)
        if fields.get("late"):
            return
        if pending.timeout is not None and pending.timeout.active():
            pending.timeout.cancel()
        pending.timeout = None
        # Kept a while for late refusals (a camera's "out of bounds", a failed light).
        self.node.clock.callLater(RELAY_TIMEOUT * 3, self._pending.pop, command_id, None)

    # -- the holder: commands from the other daemons ---------------------------------------

    def command_published(self, channel: str, payload: bytes) -> None:
        fields = _json(payload)
        if fields is None or self._real is None:
            return
        origin, command_id = fields.get("node"), fields.get("id")
        if not isinstance(origin, str) or not isinstance(command_id, str):
            return
        command = decode_command(fields.get("command") or {})
        if command is None:
            return

        def answer(refused: Refused | None, late: bool) -> None:
            reply: dict[str, Any] = {"camera": self.camera, "id": command_id, "late": late}
            if refused is not None:
                reply.update(reason=refused.reason.value, message=refused.message)
            self.node.publish(f"{PREFIX}replies:{origin}", _dump(reply))

        if fields.get("epoch") != self.epoch:
            # Stamped for another holder: it is that one's to do, or nobody's. Never twice.
            answer(CHANGING_HANDS, False)
            return
        user = fields.get("user")
        requester = RemoteRequester(
            may_control=bool(fields.get("may_control")),
            user=user if isinstance(user, str) else None,
            is_admin=bool(fields.get("is_admin")),
            late=lambda refused: answer(refused, True),
        )
        self.hub.execute(command, requester)
        requester.decided = True
        answer(requester.refused, False)

    # -- the lease -----------------------------------------------------------------------

    def tick(self) -> None:
        """Once a second: renew a held lease, or take a free one if wanted here."""
        now = self.node.now()
        if self._real is not None:
            if now - self._renewed_at > LEASE_MS / 1000 - LEASE_MARGIN:
                self.give_up("could not renew the lease in time", release=False)
                return
            renewing = self.node.bus.renew_lease(self._key("lease"), self._token, LEASE_MS)
            renewing.addCallbacks(self._renewed, lambda f: self._renew_failed(f))
            if now - self._state_published_at >= STATE_INTERVAL:
                self._publish_state()
            return
        if self._cluster_connected and now - self._heard_at > LEASE_MS / 1000:
            # The holder has not been heard of for a lease's time: it is gone.
            self._cluster_disconnected()
        self._take_if_wanted()

    def _take_if_wanted(self) -> None:
        if self._open and not self._taking and self.hub.wanted_here and self.node.bus.connected:
            self._taking = True
            taking = Deferred.fromCoroutine(self._take())
            taking.addErrback(self._take_failed)

    def _renewed(self, kept: bool) -> None:
        if self._real is None:
            return
        if kept:
            self._renewed_at = self.node.now()
        else:
            self.give_up("another daemon holds the lease now", release=False)

    def _renew_failed(self, failure: Failure) -> None:
        # Tried again next tick; the local deadline gives the link up if Redis stays away.
        failure.trap(BusError)

    async def _take(self) -> None:
        try:
            bus = self.node.bus
            if not await bus.acquire_lease(self._key("lease"), self._token, LEASE_MS):
                # Held: by another daemon, or still by this one's token after a holding
                # given up while the bus was away (a dropped subscriber, a short outage).
                # Nobody else can have held it meanwhile, so take it back now instead of
                # leaving every daemon without frames until it expires.
                if not self._lease_maybe_mine:
                    return
                self._lease_maybe_mine = False
                if not await bus.renew_lease(self._key("lease"), self._token, LEASE_MS):
                    return
            self._lease_maybe_mine = False
            self._renewed_at = self.node.now()
            epoch = await bus.incr(self._key("epoch"))
            if not self._open:
                await bus.release_lease(self._key("lease"), self._token)
                return
            self.epoch = self._seen_epoch = epoch
            self._sequence = 0
            self._holder_listener = GatedListener(self)
            self._real = self._build(self._holder_listener)
            # Its own frames need not come back from Redis (they would double its traffic).
            bus.unsubscribe(self._key("frames"), self._frame_published)
            self.hub.observers.append(self._hub_event)
            self.log.info(
                "{node} holds the camera {camera!r} now (epoch {epoch})",
                node=self.node.node_name,
                camera=self.camera,
                epoch=epoch,
            )
            self._cluster_disconnected()
            self._real.open()
            self._publish_state()
        finally:
            self._taking = False

    def _take_failed(self, failure: Failure) -> None:
        if not failure.check(BusError):
            self.log.failure("taking the camera {camera!r} failed", failure, camera=self.camera)

    def give_up(self, why: str, *, release: bool) -> None:
        """Close the camera's link and let another daemon hold it."""
        real, self._real = self._real, None
        if real is None:
            return
        self.log.info(
            "{node} gives up the camera {camera!r}: {why}",
            node=self.node.node_name,
            camera=self.camera,
            why=why,
        )
        if self._holder_listener is not None:
            self._holder_listener.active = False
            self._holder_listener = None
        if self._hub_event in self.hub.observers:
            self.hub.observers.remove(self._hub_event)
        real.close()
        if self._open:
            self.node.bus.subscribe(self._key("frames"), self._frame_published)
        self._publish_event({"type": "status", "connected": False, "epoch": self.epoch})
        self._cluster_disconnected()
        if release:
            self.node.bus.release_lease(self._key("lease"), self._token).addErrback(
                lambda f: f.trap(BusError)
            )
            # Sent after the release on the same connection, so Redis has freed the lease
            # when the others hear this; they take it at once, not on their next tick.
            self._publish_event({"type": "released"})
        else:
            self._lease_maybe_mine = True

    def bus_down(self) -> None:
        """The bus went away: nobody can tell who holds the camera now, so a holder gives
        its link up (CONTRACT §8), and every daemon reports the camera down."""
        if self.holding:
            self.give_up("the cluster's bus is away", release=False)
        self._cluster_disconnected()
        # Redis may come back empty (no persistence), its epoch counter with it: fencing
        # starts over from whichever holder is heard first once the bus is back (none
        # can publish meanwhile), or the next holder's frames would all be dropped here.
        self._seen_epoch = 0

    # -- ISourceListener: the holder's real source (through a GatedListener) ----------------

    def source_connected(self) -> None:
        self._cluster_connected = True
        self.listener.source_connected()
        self._publish_state()

    def source_disconnected(self) -> None:
        self._cluster_disconnected()
        self._publish_event({"type": "status", "connected": False, "epoch": self.epoch})

    def frame_received(self, data: bytes) -> bool:
        # Published before this daemon's own fan-out, so that the other daemons' viewers
        # wait for the hop only, not for every viewer here too (bench/RESULTS.md).
        if not self.hub.acceptable(data):
            return self.listener.frame_received(data)  # counted and answered as invalid
        self._sequence += 1
        self.frames_published += 1
        message = frame_message(self.epoch, self._sequence, data)
        self.node.publish(self._key("frames"), message)
        return self.listener.frame_received(data)

    def limits_reported(self, limits: Limits) -> None:
        self._limits = limits
        self.listener.limits_reported(limits)
        self._publish_state()

    def capabilities_changed(self) -> None:
        self.listener.capabilities_changed()
        self._publish_state()

    def frame_request_failed(self) -> None:
        self.listener.frame_request_failed()

    def position_reported(self, x: int, y: int) -> None:
        self.listener.position_reported(x, y)

    def position_refused(self) -> None:
        self.listener.position_refused()

    def light_reported(self, on: bool) -> None:
        self.listener.light_reported(on)

    def control_reported(self, holder: str | None, expires_in: float | None) -> None:
        self.listener.control_reported(holder, expires_in)

    def _hub_event(self, event: Event) -> None:
        """The holder's hub broadcast an event: every other daemon hears it too."""
        if isinstance(event, PositionUpdate):
            self._publish_event({"type": "position", "x": event.x, "y": event.y})
        elif isinstance(event, LightUpdate):
            self._publish_event({"type": "light", "state": event.state})
        elif isinstance(event, ControlChanged):
            self._publish_event(
                {"type": "control", "holder": event.holder, "expires_in": event.expires_in}
            )
        # ClientCount: the node's heartbeat carries counts; CameraStatus: the state does.

    def _state(self) -> dict[str, Any]:
        hub = self.hub
        state: dict[str, Any] = {
            "type": "state",
            "epoch": self.epoch,
            "connected": self._cluster_connected,
            "kind": self.kind,
            "capabilities": self.capabilities.as_json(),
        }
        if self._limits is not None:
            state["limits"] = self._limits.as_json()
        state["light"] = hub.light
        if hub.position is not None:
            state["position"] = [hub.position.x, hub.position.y]
        if hub.holder is not None:
            state["holder"] = hub.holder
            state["expires_in"] = hub.hold_remaining
        return state

    def _publish_state(self) -> None:
        if self._real is None:
            return
        self._state_published_at = self.node.now()
        state = _dump(self._state())
        self._publish_event_bytes(state)
        self.node.bus.set(self._key("state"), state, px=LEASE_MS).addErrback(
            lambda f: f.trap(BusError)
        )

    def _publish_event(self, fields: dict[str, Any]) -> None:
        if fields.get("epoch") is None:
            fields["epoch"] = self.epoch
        self._publish_event_bytes(_dump(fields))

    def _publish_event_bytes(self, payload: bytes) -> None:
        self.node.publish(self._key("events"), payload)

    # -- a follower: what the holder publishes ---------------------------------------------

    def _frame_published(self, channel: str, payload: bytes) -> None:
        if self._real is not None:
            return
        parsed = parse_frame_message(payload)
        if parsed is None:
            return
        epoch, _sequence, data = parsed
        if epoch < self._seen_epoch:
            self.frames_fenced += 1
            return  # from a daemon that held the camera before: fenced off
        self._seen_epoch = epoch
        self._heard_at = self.node.now()
        self.frames_followed += 1
        if not self._cluster_connected:
            self._cluster_connected = True
            self.listener.source_connected()
        self.listener.frame_received(data)

    def event_published(self, payload: bytes) -> None:
        fields = _json(payload)
        if fields is None or self._real is not None:
            return
        epoch = fields.get("epoch")
        if not isinstance(epoch, int) or epoch < self._seen_epoch:
            return
        self._seen_epoch = epoch
        self._heard_at = self.node.now()
        kind = fields.get("type")
        if kind in ("state", "status"):
            self._follow_state(fields)
        elif kind == "released":
            self._cluster_disconnected()
            self._take_if_wanted()
        elif kind == "position" and _ints(fields, "x", "y"):
            self.listener.position_reported(fields["x"], fields["y"])
        elif kind == "light" and isinstance(fields.get("state"), bool):
            self.listener.light_reported(fields["state"])
        elif kind == "control":
            self.listener.control_reported(*_control_from(fields))

    def _follow_state(self, fields: dict[str, Any]) -> None:
        if isinstance(fields.get("kind"), str):
            self._kind = fields["kind"]
        capabilities = fields.get("capabilities")
        if isinstance(capabilities, dict):
            self._capabilities = Capabilities(
                pan_tilt=bool(capabilities.get("pan_tilt")), light=bool(capabilities.get("light"))
            )
        limits = fields.get("limits")
        if isinstance(limits, dict) and _ints(limits, "min_x", "max_x", "min_y", "max_y"):
            self._limits = Limits(
                limits["min_x"], limits["max_x"], limits["min_y"], limits["max_y"]
            )
            self.listener.limits_reported(self._limits)
        if fields.get("connected") is True:
            if not self._cluster_connected:
                self._cluster_connected = True
                self.listener.source_connected()
        else:
            self._cluster_disconnected()
        if fields.get("type") != "state":
            return
        hub = self.hub
        position = fields.get("position")
        if (
            isinstance(position, list)
            and len(position) == 2
            and all(isinstance(v, int) for v in position)
            and (hub.position is None or [hub.position.x, hub.position.y] != position)
        ):
            self.listener.position_reported(position[0], position[1])
        light = fields.get("light")
        if isinstance(light, bool) and hub.light != light:
            self.listener.light_reported(light)
        holder, expires_in = _control_from(fields)
        if hub.holder != holder:
            self.listener.control_reported(holder, expires_in)

    def _cluster_disconnected(self) -> None:
        if self._cluster_connected:
            self._cluster_connected = False
            self.listener.source_disconnected()

    def stop(self) -> None:
        """The daemon stops: give the camera up at once, for another daemon to take."""
        self.close("this daemon stops")
        for pending in list(self._pending.values()):
            if pending.timeout is not None and pending.timeout.active():
                pending.timeout.cancel()
        self._pending.clear()


def _control_from(fields: dict[str, Any]) -> tuple[str | None, float | None]:
    """The holder and the seconds left of a control message or a camera state."""
    holder, expires = fields.get("holder"), fields.get("expires_in")
    return (
        holder if isinstance(holder, str) else None,
        float(expires) if isinstance(expires, (int, float)) else None,
    )


def _ints(fields: dict[str, Any], *names: str) -> bool:
    return all(
        isinstance(fields.get(n), int) and not isinstance(fields.get(n), bool) for n in names
    )


class ClusterNode(Service):
    """This daemon on the cluster's bus: heartbeats, counts, replies, lease ticks."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        bus: IBus,
        name: str,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.clock = clock
        self.bus = bus
        self.node_name = name
        self.now = now or clock.seconds
        self.sources: dict[str, ClusterSource] = {}
        self._others: dict[str, tuple[float, dict[str, int]]] = {}
        self._tick = LoopingCall(self._tick_all)
        self._tick.clock = clock
        self._heartbeat_call: IDelayedCall | None = None
        #: The counts the last heartbeat told the others.
        self._told_counts: dict[str, int] = {}
        self._remote: dict[str, int] = {}
        self.publish_failures = 0

    # -- the cameras ----------------------------------------------------------------------

    def source(
        self,
        camera: str,
        hub: CameraHub,
        listener: ISourceListener,
        build: Callable[[ISourceListener], ICameraSource],
        *,
        kind: str,
        capabilities: Capabilities,
    ) -> ClusterSource:
        """The cluster's view of ``camera`` for its hub (one per camera; a new one, for a
        new URL or kind, replaces the old)."""
        old = self.sources.pop(camera, None)
        if old is not None:
            old.stop()
        else:
            self.bus.subscribe(f"{PREFIX}events:{camera}", self._event_published)
            self.bus.subscribe(f"{PREFIX}commands:{camera}", self._command_published)
        made = ClusterSource(
            self, camera, hub, listener, build, kind=kind, capabilities=capabilities
        )
        self.sources[camera] = made
        if self._counts_changed not in hub.observers:
            hub.observers.append(self._counts_changed)
        hub.remote_viewers_reported(self._remote.get(camera, 0))
        return made

    def forget(self, camera: str) -> None:
        """The camera was removed from the daemon."""
        source = self.sources.pop(camera, None)
        if source is None:
            return
        source.stop()
        self.bus.unsubscribe(f"{PREFIX}events:{camera}", self._event_published)
        self.bus.unsubscribe(f"{PREFIX}commands:{camera}", self._command_published)

    def _counts_changed(self, event: Event) -> None:
        if isinstance(event, ClientCount):
            self.counts_changed()

    def _event_published(self, channel: str, payload: bytes) -> None:
        source = self.sources.get(channel.rsplit(":", 1)[-1])
        if source is not None:
            source.event_published(payload)

    def _command_published(self, channel: str, payload: bytes) -> None:
        source = self.sources.get(channel.rsplit(":", 1)[-1])
        if source is not None:
            source.command_published(channel, payload)

    def _reply_published(self, channel: str, payload: bytes) -> None:
        fields = _json(payload)
        if fields is None:
            return
        source = self.sources.get(str(fields.get("camera")))
        if source is not None:
            source.reply(fields)

    def read_state(self, source: ClusterSource) -> None:
        """What a camera looks like now, for a follower that just opened (or came back)."""
        reading = self.bus.get(f"{PREFIX}state:{source.camera}")

        def apply(state: bytes | None) -> None:
            if state is not None:
                source.event_published(state)

        reading.addCallbacks(apply, lambda f: f.trap(BusError))

    def publish(self, channel: str, payload: bytes) -> None:
        publishing = self.bus.publish(channel, payload)

        def failed(failure: Failure) -> None:
            failure.trap(BusError)
            self.publish_failures += 1

        publishing.addErrback(failed)

    # -- heartbeats and counts -------------------------------------------------------------

    def local_counts(self) -> dict[str, int]:
        counts = {}
        for camera, source in self.sources.items():
            if source.hub.local_viewer_count:
                counts[camera] = source.hub.local_viewer_count
        return counts

    def holds(self) -> list[str]:
        return sorted(camera for camera, source in self.sources.items() if source.holding)

    def counts_changed(self) -> None:
        """A count changed here: tell the others soon (folding a burst of joins). The hub
        also says so when only the other daemons' viewers changed: nothing to tell then."""
        if self.local_counts() == self._told_counts:
            return
        if self._heartbeat_call is None or not self._heartbeat_call.active():
            self._heartbeat_call = self.clock.callLater(0.1, self._heartbeat)

    def _heartbeat(self) -> None:
        self._heartbeat_call = None
        if not self.bus.connected:
            return
        self._told_counts = counts = self.local_counts()
        beat = _dump({"node": self.node_name, "counts": counts, "holds": self.holds()})
        self.publish(f"{PREFIX}nodes", beat)
        self.bus.set(
            f"{PREFIX}node:{self.node_name}", beat, px=int(NODE_TIMEOUT * 1000) + 1500
        ).addErrback(lambda f: f.trap(BusError))

    def _node_heard(self, channel: str, payload: bytes) -> None:
        fields = _json(payload)
        if fields is None or fields.get("node") == self.node_name:
            return
        node, counts = fields.get("node"), fields.get("counts")
        if not isinstance(node, str) or not isinstance(counts, dict):
            return
        known = {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
        self._others[node] = (self.now(), known)
        self._update_remote()

    def others(self) -> dict[str, dict[str, int]]:
        """The other daemons heard from recently, and their viewers per camera."""
        return {node: counts for node, (_, counts) in self._others.items()}

    def _update_remote(self) -> None:
        now = self.now()
        for node in [n for n, (seen, _) in self._others.items() if now - seen > NODE_TIMEOUT]:
            del self._others[node]
        remote: dict[str, int] = {}
        for _seen, counts in self._others.values():
            for camera, count in counts.items():
                remote[camera] = remote.get(camera, 0) + count
        for camera, source in self.sources.items():
            count = remote.get(camera, 0)
            if self._remote.get(camera, 0) != count:
                source.hub.remote_viewers_reported(count)
        self._remote = remote

    def _tick_all(self) -> None:
        self._update_remote()
        self._heartbeat()
        for source in list(self.sources.values()):
            source.tick()

    def _bus_state(self, up: bool) -> None:
        if up:
            self.log.info("the cluster's bus is back: following the cameras again")
            for source in self.sources.values():
                if source._open:
                    self.read_state(source)
            self.counts_changed()
        else:
            self.log.warn("the cluster's bus is away: every camera counts as down until it is back")
            for source in self.sources.values():
                source.bus_down()
            self._others.clear()
            self._update_remote()

    def startService(self) -> None:
        super().startService()
        self.bus.add_observer(self._bus_state)
        self.bus.subscribe(f"{PREFIX}nodes", self._node_heard)
        self.bus.subscribe(f"{PREFIX}replies:{self.node_name}", self._reply_published)
        self._tick.start(TICK, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._tick.running:
            self._tick.stop()
        if self._heartbeat_call is not None and self._heartbeat_call.active():
            self._heartbeat_call.cancel()
        for source in list(self.sources.values()):
            source.stop()
        self.bus.remove_observer(self._bus_state)
        self.bus.delete(f"{PREFIX}node:{self.node_name}").addErrback(lambda f: f.trap(BusError))
