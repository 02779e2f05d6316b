"""The hub of one camera: its viewers, frame pacing, newest frame and camera state.

Pure logic. It imports neither Autobahn nor Klein nor SQLite; time comes in as an
``IReactorTime``, the camera link and the viewers come in behind small interfaces, so
every rule of CONTRACT §3 "Pacing" is unit-tested with a fake clock.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from camproxy.hub.commands import (
    CONTROL_COMMANDS,
    Command,
    GetPosition,
    LightCommand,
    PositionCommand,
    ServoCommand,
)
from camproxy.sources.robocam import dialect as firmware

T = TypeVar("T")


@attrs.define(eq=False)
class Frame:
    """One JPEG from the camera, shared by every viewer.

    Each transport encodes a frame at most once (a prepared WebSocket message, an
    MJPEG part) through :meth:`encoded`, however many viewers receive it.
    """

    data: bytes
    sequence: int
    received_at: float
    _encodings: dict[str, Any] = attrs.field(factory=dict, repr=False)

    def encoded(self, key: str, encode: Callable[[bytes], T]) -> T:
        try:
            return self._encodings[key]
        except KeyError:
            value = self._encodings[key] = encode(self.data)
            return value


class IViewer(Interface):
    """Something that receives a camera's frames and events: a browser, an MJPEG client."""

    def send_frame(frame: Frame) -> None:
        """Deliver a frame, or keep it as the newest while the transport is busy."""

    def send_event(message: str) -> None:
        """Deliver one JSON text event (already encoded once for all viewers)."""


class IRequester(Interface):
    """Whoever sent a command: told about refusals, checked for permission."""

    may_control = Attribute("bool: whether this requester may move the camera or light")

    def command_refused(reason: str) -> None:
        """The command was not carried out; tell the requester why."""


class ICameraLink(Interface):
    """The one connection to a camera, opened and closed on the hub's demand."""

    def open() -> None:
        """Connect (and keep reconnecting) until :meth:`close`."""

    def close() -> None:
        """Disconnect and stop reconnecting."""

    def send_text(text: str) -> None:
        """Send one text message to the camera; dropped if not connected."""


@attrs.define
class HubStats:
    """Counters a monitoring endpoint can read."""

    frames_received: int = 0
    frames_invalid: int = 0
    frame_requests: int = 0
    frame_request_timeouts: int = 0
    camera_connects: int = 0
    camera_disconnects: int = 0


def event(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


NOT_CONNECTED = "camera not connected"
NO_CONTROL = "you do not have permission to control the camera"


class CameraHub:
    """Everything CamProxy knows and decides about one camera.

    :param clock: the reactor's time, for pacing and idle close.
    :param max_fps: never ask the camera for more frames per second than this.
    :param idle_close: seconds without viewers before the link is closed; 0 keeps it open.
    :param request_timeout: a ``getframe`` unanswered this long is given up.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_fps: float,
        idle_close: float,
        request_timeout: float = 2.0,
        position_settle: float = 1.0,
    ) -> None:
        self._clock = clock
        self.min_interval = 1.0 / max_fps
        self.idle_close = idle_close
        self.request_timeout = request_timeout
        self.position_settle = position_settle
        self._link: ICameraLink | None = None
        self._viewers: set[IViewer] = set()
        self.connected = False
        self._awaiting_answer = False
        self._link_open = False
        self.stats = HubStats()
        self.limits = firmware.Limits()
        self.position: firmware.Position | None = None
        self.light = False
        self.newest: Frame | None = None
        self._frame_waiters: list[Deferred[Frame]] = []
        self._last_frame_at: float | None = None
        self._request_sent_at: float | None = None
        self._unanswered = 0
        self._poll_call: IDelayedCall | None = None
        self._idle_call: IDelayedCall | None = None
        self._settle_call: IDelayedCall | None = None
        self._position_requesters: deque[IRequester] = deque(maxlen=16)

    # -- wiring ---------------------------------------------------------------

    def start(self, link: ICameraLink) -> None:
        """Attach the camera link and connect at once (CONTRACT §3: at start)."""
        self._link = link
        self._open_link()
        self._arm_idle_close()

    def stop(self) -> None:
        """Cancel every timer and close the link; the hub can be started again."""
        for call in (self._poll_call, self._idle_call, self._settle_call):
            if call is not None and call.active():
                call.cancel()
        self._poll_call = self._idle_call = self._settle_call = None
        if self._link is not None and self._link_open:
            self._link_open = False
            self._link.close()
        for waiter in self._frame_waiters:
            waiter.cancel()
        self._frame_waiters.clear()

    # -- viewers ----------------------------------------------------------------

    @property
    def viewer_count(self) -> int:
        return len(self._viewers)

    @property
    def wants_camera(self) -> bool:
        """Whether the proxy needs the camera now (a viewer watches, or always)."""
        return bool(self._viewers) or self.idle_close == 0

    @property
    def link_open(self) -> bool:
        return self._link_open

    def hello_fields(self) -> dict[str, object]:
        return {"esp32_connected": self.connected}

    def attach(self, viewer: IViewer) -> None:
        self._viewers.add(viewer)
        self._cancel_idle_close()
        self._open_link()
        self._broadcast(event("client_count", count=len(self._viewers)))
        if self.position is not None:
            viewer.send_event(event("position_update", x=self.position.x, y=self.position.y))
        viewer.send_event(event("light_update", state=self.light))
        self._schedule_poll()

    def detach(self, viewer: IViewer) -> None:
        if viewer not in self._viewers:
            return
        self._viewers.discard(viewer)
        self._broadcast(event("client_count", count=len(self._viewers)))
        if not self._viewers:
            self._schedule_poll()
            self._arm_idle_close()

    def _broadcast(self, message: str) -> None:
        for viewer in list(self._viewers):
            self._deliver(viewer, viewer.send_event, message)

    def _deliver(self, viewer: IViewer, send: Callable[[T], None], item: T) -> None:
        # One viewer failing (say, closing while we write) must never reach the
        # camera link or the other viewers.
        try:
            send(item)
        except Exception:
            self.log.failure("dropping viewer {viewer} after a send failed", viewer=viewer)
            self.detach(viewer)

    # -- idle close -------------------------------------------------------------

    def _open_link(self) -> None:
        if self._link is not None and not self._link_open:
            self._link_open = True
            self._link.open()

    def _arm_idle_close(self) -> None:
        if self.idle_close > 0 and not self._viewers and self._idle_call is None:
            self._idle_call = self._clock.callLater(self.idle_close, self._close_for_idleness)

    def _cancel_idle_close(self) -> None:
        if self._idle_call is not None:
            if self._idle_call.active():
                self._idle_call.cancel()
            self._idle_call = None

    def _close_for_idleness(self) -> None:
        self._idle_call = None
        if self._viewers or self._link is None or not self._link_open:
            return
        self.log.info("no viewers for {seconds}s: closing the camera link", seconds=self.idle_close)
        self._link_open = False
        self._link.close()

    # -- camera events (from the link) -------------------------------------------

    def link_opened(self) -> None:
        """The WebSocket to the camera is up; ask what the firmware asks on every connect.

        The camera counts as connected only once it answers: the firmware accepts a
        client over its limit and closes it at once, which must not flap the status.
        """
        self._awaiting_answer = True
        assert self._link is not None
        self._link.send_text(firmware.GET_LIMITS)
        self._link.send_text(firmware.GET_POS)

    def _camera_answered(self) -> None:
        self._awaiting_answer = False
        self.connected = True
        self.stats.camera_connects += 1
        self._request_sent_at = None
        self._broadcast(event("camera_status", esp32_connected=True))
        self._schedule_poll()

    def camera_disconnected(self) -> None:
        self._awaiting_answer = False
        if not self.connected:
            return
        self.connected = False
        self.stats.camera_disconnects += 1
        self._request_sent_at = None
        self._schedule_poll()
        self._position_requesters.clear()
        self._broadcast(event("camera_status", esp32_connected=False))
        for waiter in self._frame_waiters:
            waiter.errback(CameraUnavailable(NOT_CONNECTED))
        self._frame_waiters.clear()

    def frame_received(self, data: bytes) -> None:
        """A binary message from the camera, pushed or requested."""
        if self._awaiting_answer:
            self._camera_answered()
        now = self._clock.seconds()
        # Pushed and requested frames look alike: any binary answers the request,
        # and paces the next one, even when it is not a valid JPEG.
        self._last_frame_at = now
        self._request_sent_at = None
        if self._unanswered:
            self.log.info(
                "camera answers again after {count} unanswered getframe requests",
                count=self._unanswered,
            )
            self._unanswered = 0
        if not firmware.is_jpeg(data):
            self.stats.frames_invalid += 1
            self._schedule_poll()
            return
        self.stats.frames_received += 1
        frame = Frame(data, self.stats.frames_received, now)
        self.newest = frame
        for viewer in list(self._viewers):
            self._deliver(viewer, viewer.send_frame, frame)
        waiters, self._frame_waiters = self._frame_waiters, []
        for waiter in waiters:
            waiter.callback(frame)
        self._schedule_poll()

    def text_received(self, text: str) -> None:
        if self._awaiting_answer:
            self._camera_answered()
        message = firmware.parse_camera_text(text)
        if isinstance(message, firmware.Position):
            self.position = message
            self._broadcast(event("position_update", x=message.x, y=message.y))
        elif isinstance(message, firmware.Limits):
            self.limits = message
        elif isinstance(message, firmware.OutOfBounds):
            if self._position_requesters:
                self._position_requesters.popleft().command_refused(firmware.OUT_OF_BOUNDS)
        elif isinstance(message, firmware.Unrecognized):
            self.log.debug("ignoring unrecognized camera message {text!r}", text=text[:200])

    # -- commands -----------------------------------------------------------------

    def execute(self, command: Command, requester: IRequester) -> bool:
        """Validate permission and link state, then send ``command`` to the camera.

        Returns whether it was sent; a refusal has been reported to ``requester``.
        """
        if isinstance(command, CONTROL_COMMANDS) and not requester.may_control:
            requester.command_refused(NO_CONTROL)
            return False
        if not self.connected or self._link is None:
            requester.command_refused(NOT_CONNECTED)
            return False
        send = self._link.send_text
        if isinstance(command, ServoCommand):
            send(command.direction)
        elif isinstance(command, PositionCommand):
            self._position_requesters.append(requester)
            send(firmware.move_to(command.x, command.y))
            # The firmware echoes the position from before the move; ask where it
            # went now, and again once the servos have eased into place.
            send(firmware.GET_POS)
            self._arm_settle_query()
        elif isinstance(command, GetPosition):
            send(firmware.GET_POS)
        elif isinstance(command, LightCommand):
            send(firmware.light(command.on))
            self.light = command.on
            self._broadcast(event("light_update", state=command.on))
        return True

    def _arm_settle_query(self) -> None:
        if self._settle_call is not None and self._settle_call.active():
            self._settle_call.cancel()
        self._settle_call = self._clock.callLater(self.position_settle, self._settle_query)

    def _settle_query(self) -> None:
        self._settle_call = None
        if self.connected and self._link is not None:
            self._link.send_text(firmware.GET_POS)

    # -- snapshots ------------------------------------------------------------------

    def next_frame(self) -> Deferred[Frame]:
        """A Deferred for the next valid frame; wakes the link if it is idle."""
        waiter: Deferred[Frame] = Deferred(lambda d: self._forget_waiter(d))
        self._frame_waiters.append(waiter)
        self._cancel_idle_close()
        self._open_link()
        self._schedule_poll()
        return waiter

    def _forget_waiter(self, waiter: Deferred[Frame]) -> None:
        if waiter in self._frame_waiters:
            self._frame_waiters.remove(waiter)
        if not self._frame_waiters:
            self._schedule_poll()
            self._arm_idle_close()

    # -- pacing -----------------------------------------------------------------

    def _wants_frames(self) -> bool:
        return self.connected and bool(self._viewers or self._frame_waiters)

    def _schedule_poll(self) -> None:
        """Send ``getframe`` now if the rules allow, else set one timer for when they will."""
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
        assert self._link is not None
        self._request_sent_at = now
        self.stats.frame_requests += 1
        self._link.send_text(firmware.GETFRAME)
        self._poll_call = self._clock.callLater(self.request_timeout, self._request_timed_out)

    def _request_timed_out_now(self) -> None:
        self.stats.frame_request_timeouts += 1
        if not self._unanswered:
            # Once per silence, not once per request: the next frame ends it.
            self.log.warn(
                "camera did not answer getframe within {timeout}s; asking again",
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


class CameraUnavailable(Exception):
    """The camera is not connected, so no frame can come."""
