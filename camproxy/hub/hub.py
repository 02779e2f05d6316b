"""The hub of one camera: its viewers, frame pacing, newest frame and camera state.

Pure logic. It knows no camera dialect (a source behind :class:`ICameraSource` speaks
it) and no browser protocol (viewers behind :class:`IViewer` encode its typed events);
time comes in as an ``IReactorTime``, so every rule of CONTRACT §3 "Pacing" is
unit-tested with a fake clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from camproxy.hub.commands import (
    CONTROL_COMMANDS,
    Command,
    GetPosition,
    LightCommand,
    PositionCommand,
    ReleaseControl,
    ServoCommand,
)
from camproxy.hub.events import (
    CameraStatus,
    CapabilitiesChanged,
    ClientCount,
    ControlChanged,
    Event,
    LightUpdate,
    PositionUpdate,
    Refusal,
    Refused,
)
from camproxy.hub.frames import Frame
from camproxy.hub.relay import ICommandRelay
from camproxy.hub.source import (
    Capabilities,
    CommandFailed,
    GatedListener,
    ICameraSource,
    ISourceListener,
    Limits,
    is_jpeg,
)
from camproxy.hub.viewer import IFrameSink, IRequester, IViewer

T = TypeVar("T")

#: A burst of joins or leaves is folded into one ``ClientCount`` per this many seconds
#: (CONTRACT §3 allows up to 250 ms after the last change).
COUNT_FOLD_INTERVAL = 0.1

NOT_CONNECTED = Refused(Refusal.NOT_CONNECTED, "camera not connected")
NO_CONTROL = Refused(Refusal.NO_CONTROL, "you do not have permission to control the camera")
OUT_OF_BOUNDS = Refused(Refusal.OUT_OF_BOUNDS, "Position out of bounds")
NO_PAN_TILT = Refused(Refusal.UNSUPPORTED, "this camera cannot pan or tilt")
NO_LIGHT = Refused(Refusal.UNSUPPORTED, "this camera has no light to switch")
NOT_HOLDER = Refused(Refusal.CONTROL_HELD, "you do not hold control of this camera")

SHARED = "shared"
EXCLUSIVE = "exclusive"
CONTROL_MODES = (SHARED, EXCLUSIVE)
#: CONTRACT §6: a hold of exclusive control ends this long after the holder's last command.
HOLD_SECONDS = 30.0
#: While a holder keeps commanding, everyone hears the renewed hold at most this often.
HOLD_ANNOUNCE_INTERVAL = 10.0


@attrs.define
class HubStats:
    """Counters a monitoring endpoint can read."""

    frames_received: int = 0
    frames_invalid: int = 0
    frame_requests: int = 0
    frame_request_timeouts: int = 0
    camera_connects: int = 0
    camera_disconnects: int = 0
    #: Over all viewers: frames written, and frames skipped for viewers that were busy.
    frames_sent: int = 0
    frames_skipped: int = 0


class CameraUnavailable(Exception):
    """The camera is not connected, so no frame can come."""


@implementer(ISourceListener)
class CameraHub:
    """Everything CamProxy knows and decides about one camera.

    :param clock: the reactor's time, for pacing and idle close.
    :param max_fps: never ask the camera for more frames per second than this.
    :param idle_close: seconds without viewers before the link is closed; 0 keeps it open.
    :param request_timeout: a frame request unanswered this long is given up.
    :param max_frame_bytes: a larger binary is not a frame.
    :param control_mode: ``shared`` (anyone with control may command) or ``exclusive``
        (the first to command holds the camera until idle, see :data:`HOLD_SECONDS`).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_fps: float,
        idle_close: float,
        request_timeout: float = 2.0,
        max_frame_bytes: int = 4 * 1024 * 1024,
        control_mode: str = SHARED,
        hold_seconds: float = HOLD_SECONDS,
        name: str = "default",
    ) -> None:
        self.name = name
        self._clock = clock
        self.min_interval = 1.0 / max_fps
        self.idle_close = idle_close
        self.request_timeout = request_timeout
        self.max_frame_bytes = max_frame_bytes
        self._source: ICameraSource | None = None
        self._viewers: set[IViewer] = set()
        #: The viewers' frame sinks, for the fan-out; None after a change of viewers.
        self._sinks: tuple[IFrameSink, ...] | None = None
        self.connected = False
        self._link_open = False
        self._stopped = False
        self.stats = HubStats()
        self.limits = Limits()
        self.position: PositionUpdate | None = None
        self.light = False
        self.newest: Frame | None = None
        self._frame_waiters: list[Deferred[Frame]] = []
        self._last_frame_at: float | None = None
        self._request_sent_at: float | None = None
        self._unanswered = 0
        self._poll_call: IDelayedCall | None = None
        self._idle_call: IDelayedCall | None = None
        self._count_call: IDelayedCall | None = None
        self._count_sent: int | None = None
        self._count_sent_at = float("-inf")
        self._position_requesters: deque[IRequester] = deque(maxlen=16)
        self._control_mode = control_mode
        self.hold_seconds = hold_seconds
        self.holder: str | None = None
        self._hold_expires_at = 0.0
        self._hold_announced_at = float("-inf")
        self._hold_call: IDelayedCall | None = None
        self._listener: GatedListener | None = None
        self._remote_viewers = 0
        #: Called with every event the hub broadcasts (a cluster's holder relays them).
        self.observers: list[Callable[[Event], object]] = []

    # -- wiring ---------------------------------------------------------------

    def start(self, source: ICameraSource) -> None:
        """Attach the camera source and connect at once (CONTRACT §3: at start)."""
        self._source = source
        self._stopped = False
        self._open_link()
        self._arm_idle_close()

    def replace_source(self, build: Callable[[ISourceListener], ICameraSource]) -> None:
        """Use another source (a new URL or kind), built by ``build`` for a listener of
        its own: the old link closes and whatever it reports later is ignored; viewers
        stay and hear ``camera_status`` as the link goes down and, with the new one, up."""
        if self._listener is not None:
            self._listener.active = False
        self._listener = GatedListener(self)
        old, self._source = self._source, build(self._listener)
        if old is not None and self._link_open:
            self._link_open = False
            old.close()
        self.source_disconnected()
        # A frame of another camera is not this one's newest.
        self.newest = None
        self._end_hold("the camera changed")
        if self.wants_camera or self._frame_waiters:
            self._open_link()
        self._arm_idle_close()

    def set_pacing(self, *, max_fps: float, idle_close: float) -> None:
        """Change the frame rate cap and the idle close delay of a running camera."""
        self.min_interval = 1.0 / max_fps
        if idle_close != self.idle_close:
            self.idle_close = idle_close
            self._cancel_idle_close()
            if self.wants_camera:
                self._open_link()
            self._arm_idle_close()
        self._schedule_poll()

    def stop(self) -> None:
        """Cancel every timer and close the link; a stopped hub schedules nothing more."""
        self._stopped = True
        for call in (self._poll_call, self._idle_call, self._count_call, self._hold_call):
            if call is not None and call.active():
                call.cancel()
        self._poll_call = self._idle_call = self._count_call = self._hold_call = None
        if self._source is not None and self._link_open:
            self._link_open = False
            self._source.close()
        waiters, self._frame_waiters = self._frame_waiters, []
        for waiter in waiters:
            waiter.cancel()

    # -- what the camera is and can do ---------------------------------------------

    @property
    def source(self) -> ICameraSource | None:
        return self._source

    @property
    def capabilities(self) -> Capabilities:
        return self._source.capabilities if self._source is not None else Capabilities()

    @property
    def kind(self) -> str | None:
        return self._source.kind if self._source is not None else None

    # -- viewers ----------------------------------------------------------------

    @property
    def viewer_count(self) -> int:
        """Viewers of this camera, here and (in a cluster) on the other daemons."""
        return len(self._viewers) + self._remote_viewers

    @property
    def local_viewer_count(self) -> int:
        return len(self._viewers)

    @property
    def wanted_here(self) -> bool:
        """Whether this daemon itself needs the camera: its own viewers, a snapshot
        waiting here, or a link kept open always."""
        return bool(self._viewers or self._frame_waiters) or self.idle_close == 0

    @property
    def viewers(self) -> frozenset[IViewer]:
        """The viewers of this camera, whatever their transport."""
        return frozenset(self._viewers)

    @property
    def wants_camera(self) -> bool:
        """Whether the proxy needs the camera now (a viewer watches, or always)."""
        return bool(self._viewers) or self._remote_viewers > 0 or self.idle_close == 0

    @property
    def link_open(self) -> bool:
        return self._link_open

    def attach(self, viewer: IViewer) -> None:
        self._viewers.add(viewer)
        self._sinks = None
        if self._stopped:
            return
        self._cancel_idle_close()
        self._open_link()
        if not self._count_changed():
            # The others hear of the newcomer a moment later; the newcomer at once.
            self._deliver(viewer, viewer.send_event, ClientCount(self.viewer_count))
        if self.position is not None:
            self._deliver(viewer, viewer.send_event, self.position)
        self._deliver(viewer, viewer.send_event, LightUpdate(self.light))
        if self.holder is not None:
            self._deliver(viewer, viewer.send_event, self._control_event())
        self._schedule_poll()

    def detach(self, viewer: IViewer) -> None:
        if viewer not in self._viewers:
            return
        self._viewers.discard(viewer)
        self._sinks = None
        if self._stopped:
            return
        self._count_changed()
        user = viewer.user
        holder_gone = user is not None and user == self.holder
        if holder_gone and not any(other.user == user for other in self._viewers):
            self._end_hold("the holder's last socket closed")
        if not self._viewers:
            self._schedule_poll()
            self._arm_idle_close()

    def remote_viewers_reported(self, count: int) -> None:
        """The viewers of this camera on the other daemons of a cluster: they count for
        ``client_count``, pacing and idle close like this daemon's own."""
        if count == self._remote_viewers or self._stopped:
            return
        self._remote_viewers = count
        self._count_changed()
        if count:
            self._cancel_idle_close()
            self._open_link()
        else:
            self._arm_idle_close()
        self._schedule_poll()

    def broadcast(self, event: Event) -> None:
        """Send one event to every viewer (and to the observers, see :attr:`observers`)."""
        for viewer in list(self._viewers):
            self._deliver(viewer, viewer.send_event, event)
        for observer in self.observers:
            observer(event)

    def _fan_out(self, frame: Frame) -> None:
        """Hand ``frame`` to every viewer: the per-viewer cost of every frame.

        The loop calls each viewer's frame sink (a tuple of them, rebuilt only after
        viewers came or went), with one ``try`` around the whole loop rather than one per
        viewer: when a sink fails (rare), its viewer is dropped and the loop goes on with
        the next one.
        """
        sinks = self._sinks
        if sinks is None:
            sinks = self._sinks = tuple(viewer.frame_sink for viewer in self._viewers)
        remaining = iter(sinks)
        while True:
            try:
                for sink in remaining:
                    sink.send_frame(frame)
            except Exception:
                failed = [v for v in self._viewers if v.frame_sink is sink]
                for viewer in failed:
                    self._drop(viewer)
                if not failed:
                    self.log.failure("camera {camera!r}: a frame sink failed", camera=self.name)
            else:
                return

    def _deliver(self, viewer: IViewer, send: Callable[[T], None], item: T) -> None:
        # One viewer failing (say, closing while we write) must never reach the
        # camera link or the other viewers.
        try:
            send(item)
        except Exception:
            self._drop(viewer)

    def _drop(self, viewer: IViewer) -> None:
        """Detach a viewer whose send just raised (called in the ``except``)."""
        self.log.failure(
            "camera {camera!r}: dropping viewer {viewer} after a send failed",
            camera=self.name,
            viewer=viewer,
        )
        self.detach(viewer)

    # -- the viewer count, folded ------------------------------------------------

    def _count_changed(self) -> bool:
        """Tell everyone the new count now, or at the end of the folding interval.

        A crowd joining at once (every daemon restart, every WiFi blip) would otherwise
        cost N² messages. Returns whether the count went out now.
        """
        if self._count_call is not None:
            return False
        wait = self._count_sent_at + COUNT_FOLD_INTERVAL - self._clock.seconds()
        if wait <= 0:
            self._send_count()
            return True
        self._count_call = self._clock.callLater(wait, self._send_folded_count)
        return False

    def _send_folded_count(self) -> None:
        self._count_call = None
        if self.viewer_count != self._count_sent:
            self._send_count()

    def _send_count(self) -> None:
        self._count_sent = count = self.viewer_count
        self._count_sent_at = self._clock.seconds()
        self.broadcast(ClientCount(count))

    # -- idle close -------------------------------------------------------------

    def _open_link(self) -> None:
        if self._source is not None and not self._link_open and not self._stopped:
            self._link_open = True
            self._source.open()

    def _arm_idle_close(self) -> None:
        if self._stopped or self.idle_close <= 0 or self.wants_camera or self._frame_waiters:
            return
        if self._idle_call is None:
            self._idle_call = self._clock.callLater(self.idle_close, self._close_for_idleness)

    def _cancel_idle_close(self) -> None:
        if self._idle_call is not None:
            if self._idle_call.active():
                self._idle_call.cancel()
            self._idle_call = None

    def _close_for_idleness(self) -> None:
        self._idle_call = None
        if self.wants_camera or self._frame_waiters or self._source is None or not self._link_open:
            return
        self.log.info(
            "camera {camera!r}: no viewers for {seconds}s: closing its link",
            camera=self.name,
            seconds=self.idle_close,
        )
        self._link_open = False
        self._source.close()

    # -- ISourceListener -------------------------------------------------------------

    def source_connected(self) -> None:
        if self.connected:
            return
        self.connected = True
        self.stats.camera_connects += 1
        self._request_sent_at = None
        self._last_frame_at = None
        self.broadcast(CameraStatus(True))
        self._schedule_poll()

    def source_disconnected(self) -> None:
        if not self.connected:
            return
        self.connected = False
        self.stats.camera_disconnects += 1
        self._request_sent_at = None
        # A frame from before the link dropped is never fresh (CONTRACT §5).
        self.newest = None
        self._position_requesters.clear()
        self._schedule_poll()
        self.broadcast(CameraStatus(False))
        waiters, self._frame_waiters = self._frame_waiters, []
        for waiter in waiters:
            waiter.errback(CameraUnavailable(NOT_CONNECTED.message))
        self._arm_idle_close()

    def acceptable(self, data: bytes) -> bool:
        """Whether ``frame_received`` would take ``data`` as a frame (a JPEG, not too big)."""
        return len(data) <= self.max_frame_bytes and is_jpeg(data)

    def frame_received(self, data: bytes) -> bool:
        now = self._clock.seconds()
        # Pushed and requested frames look alike: any binary answers the request,
        # and paces the next one, even when it is not a valid JPEG.
        self._last_frame_at = now
        self._request_sent_at = None
        if self._unanswered:
            self.log.info(
                "camera {camera!r} answers again after {count} unanswered frame requests",
                camera=self.name,
                count=self._unanswered,
            )
            self._unanswered = 0
        if not self.acceptable(data):
            self.stats.frames_invalid += 1
            self._schedule_poll()
            return False
        self.stats.frames_received += 1
        frame = Frame(data, self.stats.frames_received, now)
        self.newest = frame
        self._fan_out(frame)
        waiters, self._frame_waiters = self._frame_waiters, []
        for waiter in waiters:
            waiter.callback(frame)
        if waiters:
            self._arm_idle_close()
        self._schedule_poll()
        return True

    def frame_request_failed(self) -> None:
        self._last_frame_at = self._clock.seconds()
        self._request_sent_at = None
        self._schedule_poll()

    def position_reported(self, x: int, y: int) -> None:
        self.position = PositionUpdate(x, y)
        self.broadcast(self.position)

    def limits_reported(self, limits: Limits) -> None:
        self.limits = limits

    def position_refused(self) -> None:
        if self._position_requesters:
            self._position_requesters.popleft().command_refused(OUT_OF_BOUNDS)

    def light_reported(self, on: bool) -> None:
        self._light_switched(on)

    def control_reported(self, holder: str | None, expires_in: float | None) -> None:
        self.holder = holder
        self._hold_expires_at = self._clock.seconds() + (expires_in or 0.0)
        self.broadcast(ControlChanged(holder, expires_in if holder is not None else None))

    def capabilities_changed(self) -> None:
        self.log.info(
            "camera {camera!r} is of kind {kind} with {capabilities}",
            camera=self.name,
            kind=self.kind,
            capabilities=self.capabilities,
        )
        capabilities = self.capabilities
        self.broadcast(CapabilitiesChanged(self.kind, capabilities.pan_tilt, capabilities.light))

    # -- commands -----------------------------------------------------------------

    def _relay(self) -> ICommandRelay | None:
        source = self._source
        if source is not None and ICommandRelay.providedBy(source) and source.relaying:
            return source
        return None

    def execute(self, command: Command, requester: IRequester) -> bool:
        """Check permission, capability, control and link state, then carry ``command`` out.

        Returns whether it went to the camera (or to the daemon that holds it); a refusal
        has been reported to ``requester`` (a light that fails to switch, later).
        """
        relay = self._relay()
        if relay is not None:
            refusal = self._local_refusal(command, requester)
            if refusal is not None:
                requester.command_refused(refusal)
            else:
                relay.relay(command, requester)
            return True
        if isinstance(command, ReleaseControl):
            return self._release(requester)
        refusal = self._refusal(command, requester)
        if refusal is None and isinstance(command, CONTROL_COMMANDS):
            refusal = self._claim_control(requester)
        if refusal is not None:
            requester.command_refused(refusal)
            return False
        source = self._source
        assert source is not None
        if isinstance(command, ServoCommand):
            source.move(command.direction)
        elif isinstance(command, PositionCommand):
            self._position_requesters.append(requester)
            source.move_to(command.x, command.y)
        elif isinstance(command, GetPosition):
            source.query_position()
        elif isinstance(command, LightCommand):
            switching = source.set_light(command.on)
            switching.addCallbacks(
                lambda _: self._light_switched(command.on),
                lambda failure: self._light_failed(failure, requester),
            )
        return True

    def _refusal(self, command: Command, requester: IRequester) -> Refused | None:
        refusal = self._local_refusal(command, requester)
        if refusal is None and (not self.connected or self._source is None):
            return NOT_CONNECTED
        return refusal

    def _local_refusal(self, command: Command, requester: IRequester) -> Refused | None:
        """What can be refused without asking the camera's holder."""
        if isinstance(command, ReleaseControl):
            return None
        if isinstance(command, CONTROL_COMMANDS) and not requester.may_control:
            return NO_CONTROL
        capabilities = self.capabilities
        if isinstance(command, LightCommand):
            if not capabilities.light:
                return NO_LIGHT
        elif not capabilities.pan_tilt:
            return NO_PAN_TILT
        return None

    def _light_switched(self, on: bool) -> None:
        self.light = on
        self.broadcast(LightUpdate(on))

    def _light_failed(self, failure: Failure, requester: IRequester) -> None:
        if failure.check(CommandFailed):
            message = f"the camera did not switch its light: {failure.value}"
        else:
            self.log.failure(
                "camera {camera!r}: switching the light failed", failure, camera=self.name
            )
            message = "the camera did not switch its light"
        requester.command_refused(Refused(Refusal.FAILED, message))

    # -- exclusive control --------------------------------------------------------------

    @property
    def control_mode(self) -> str:
        return self._control_mode

    @control_mode.setter
    def control_mode(self, mode: str) -> None:
        self._control_mode = mode
        if mode != EXCLUSIVE:
            self._end_hold("the camera's control is shared now")

    @property
    def hold_remaining(self) -> float | None:
        """Seconds the current hold lasts without another command, or None."""
        if self.holder is None:
            return None
        return max(0.0, self._hold_expires_at - self._clock.seconds())

    def _control_event(self) -> ControlChanged:
        return ControlChanged(self.holder, self.hold_remaining)

    def _claim_control(self, requester: IRequester) -> Refused | None:
        """In exclusive mode, the first to command holds the camera; admins take over."""
        if self._control_mode != EXCLUSIVE:
            return None
        user = requester.user
        if self.holder is not None and user != self.holder and not requester.is_admin:
            remaining = self.hold_remaining or 0.0
            return Refused(
                Refusal.CONTROL_HELD,
                f"{self.holder} controls this camera now (for {remaining:.0f} s more "
                "unless they keep using it)",
            )
        now = self._clock.seconds()
        self._hold_expires_at = now + self.hold_seconds
        if self._hold_call is not None and self._hold_call.active():
            self._hold_call.cancel()
        self._hold_call = self._clock.callLater(self.hold_seconds, self._hold_expired)
        if user != self.holder or now - self._hold_announced_at >= HOLD_ANNOUNCE_INTERVAL:
            if user != self.holder:
                self.log.info(
                    "camera {camera!r}: {user!r} holds it now (was {previous!r})",
                    camera=self.name,
                    user=user,
                    previous=self.holder,
                )
            self.holder = user
            self._hold_announced_at = now
            self.broadcast(self._control_event())
        return None

    def _release(self, requester: IRequester) -> bool:
        if self.holder is None or requester.user != self.holder:
            requester.command_refused(NOT_HOLDER)
            return False
        self._end_hold("released")
        return True

    def _hold_expired(self) -> None:
        self._hold_call = None
        self._end_hold(f"no command for {self.hold_seconds:.0f} s")

    def _end_hold(self, why: str) -> None:
        if self._hold_call is not None and self._hold_call.active():
            self._hold_call.cancel()
        self._hold_call = None
        if self.holder is None:
            return
        self.log.info(
            "camera {camera!r}: {user!r} no longer holds it: {why}",
            camera=self.name,
            user=self.holder,
            why=why,
        )
        self.holder = None
        self.broadcast(ControlChanged(None))

    # -- snapshots ------------------------------------------------------------------

    def next_frame(self) -> Deferred[Frame]:
        """A Deferred for the next valid frame; wakes the link if it is idle."""
        waiter: Deferred[Frame] = Deferred(lambda d: self._forget_waiter(d))
        if self._stopped:
            waiter.errback(CameraUnavailable(NOT_CONNECTED.message))
            return waiter
        self._frame_waiters.append(waiter)
        self._cancel_idle_close()
        self._open_link()
        self._schedule_poll()
        return waiter

    def _forget_waiter(self, waiter: Deferred[Any]) -> None:
        if waiter in self._frame_waiters:
            self._frame_waiters.remove(waiter)
        if not self._frame_waiters:
            self._schedule_poll()
            self._arm_idle_close()

    # -- pacing -----------------------------------------------------------------

    def _wants_frames(self) -> bool:
        return (
            not self._stopped
            and self.connected
            and self._source is not None
            and self._source.paced
            and bool(self._viewers or self._remote_viewers or self._frame_waiters)
        )

    def _schedule_poll(self) -> None:
        """Ask for a frame now if the rules allow, else set one timer for when they will."""
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()
        self._poll_call = None
        if not self._wants_frames():
            return
        now = self._clock.seconds()
        if self._request_sent_at is not None:
            due = self._request_sent_at + self.request_timeout
            if now < due:
                self._poll_call = self._clock.callLater(due - now, self._request_timed_out)
                return
            self._request_timed_out_now()
        due = now if self._last_frame_at is None else self._last_frame_at + self.min_interval
        if now >= due:
            self._request_frame(now)
        else:
            self._poll_call = self._clock.callLater(due - now, self._schedule_poll)

    def _request_frame(self, now: float) -> None:
        assert self._source is not None
        self._request_sent_at = now
        self.stats.frame_requests += 1
        self._source.request_frame()
        self._poll_call = self._clock.callLater(self.request_timeout, self._request_timed_out)

    def _request_timed_out_now(self) -> None:
        self.stats.frame_request_timeouts += 1
        if not self._unanswered:
            # Once per silence, not once per request: the next frame ends it.
            self.log.warn(
                "camera {camera!r} did not answer a frame request within {timeout}s; asking again",
                camera=self.name,
                timeout=self.request_timeout,
            )
        self._unanswered += 1
        self._request_sent_at = None
        # Without a frame to pace from, the next request may go at once.
        self._last_frame_at = None

    def _request_timed_out(self) -> None:
        self._poll_call = None
        if self._request_sent_at is not None:
            self._request_timed_out_now()
        self._schedule_poll()
