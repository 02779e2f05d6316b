"""The seam between the hub and a camera of any kind.

A camera *source* is the one link to one camera (a RoboCam WebSocket, an ESP32 web
server's MJPEG stream, any MJPEG or JPEG URL, or another daemon of the cluster). The hub
opens it while the camera is wanted, closes it when not, and asks it for semantic things
(a frame, a move, the light); the source speaks the camera's dialect and reports back
through :class:`ISourceListener`, which the hub implements. Neither side knows the
other's implementation.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface, implementer

JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"


def is_jpeg(data: bytes) -> bool:
    """A binary counts as a frame only if it is delimited as a JPEG (``FF D8`` … ``FF D9``)."""
    return len(data) >= 4 and data.startswith(JPEG_START) and data.endswith(JPEG_END)


@attrs.frozen
class Capabilities:
    """What a camera can do besides video."""

    pan_tilt: bool = False
    light: bool = False

    def as_json(self) -> dict[str, bool]:
        return {"pan_tilt": self.pan_tilt, "light": self.light}


@attrs.frozen
class Limits:
    """The pan/tilt range a camera accepts, inclusive (0..180 until the camera says)."""

    min_x: int = 0
    max_x: int = 180
    min_y: int = 0
    max_y: int = 180

    def contains(self, x: int, y: int) -> bool:
        return self.min_x <= x <= self.max_x and self.min_y <= y <= self.max_y

    def as_json(self) -> dict[str, int]:
        return attrs.asdict(self)


DIRECTIONS = frozenset({"up", "down", "left", "right", "center"})
"""Relative moves a pan/tilt camera knows (``center``: back to the start position)."""


class CommandFailed(Exception):
    """The camera did not carry out a command (say, its ``/control`` request failed).

    The message is one line, fit to show the viewer who asked.
    """


class ICameraSource(Interface):
    """The one link to one camera, whatever its kind.

    Opened by the hub while the camera is wanted (viewers, a snapshot waiting, or
    ``idle_close`` 0) and closed ``idle_close`` seconds after; while open it connects and
    reconnects by itself, with backoff. Never more than one connection (or request) to
    the camera's video at a time.
    """

    kind = Attribute(
        "str: robocam, esp32, mjpeg or jpeg (for a URL whose kind is detected from its "
        "first answer: the kind once known, else the best guess)"
    )
    capabilities = Attribute("Capabilities: what the camera can do; may change on connect")
    paced = Attribute(
        "bool: True if the camera sends frames only when asked (request_frame), so the hub "
        "paces the requests; False if it streams at its own rate"
    )

    def open() -> None:
        """Connect, and keep reconnecting with backoff, until :meth:`close`."""

    def close() -> None:
        """Disconnect (politely, where the camera's protocol allows) and stop reconnecting.

        Reports :meth:`ISourceListener.source_disconnected` if it was connected.
        """

    def request_frame() -> None:
        """Ask the camera for one frame (paced sources; a no-op for streams).

        The hub keeps at most one request outstanding and gives one up after a timeout;
        a source that cannot have two in flight ignores a request while one is.
        """

    def move(direction: str) -> None:
        """Move the camera relatively: one of :data:`DIRECTIONS` (pan/tilt cameras only)."""

    def move_to(x: int, y: int) -> None:
        """Move the camera to an absolute position within its limits (pan/tilt only).

        The camera reports the position it reaches with ``position_reported``, or
        refuses with ``position_refused``.
        """

    def query_position() -> None:
        """Ask where the camera points; the answer comes as ``position_reported``."""

    def set_light(on: bool) -> Deferred[None]:
        """Switch the light; fires once done, or fails with :class:`CommandFailed`."""


class ISourceListener(Interface):
    """What a source tells the hub of its camera; the hub implements this."""

    def source_connected() -> None:
        """The camera answers: it counts as connected from now (for HTTP kinds, from the
        first valid frame, reported just before that frame)."""

    def source_disconnected() -> None:
        """The link went down or was closed; safe to call when not connected."""

    def frame_received(data: bytes) -> bool:
        """One complete binary from the camera, pushed or requested.

        Returns whether it was a valid frame (relayed to the viewers); an invalid one is
        counted and dropped, and still answers a pending request.
        """

    def frame_request_failed() -> None:
        """The frame asked for will not come (an HTTP error, say); the next request may
        follow one frame interval later."""

    def position_reported(x: int, y: int) -> None:
        """The camera reports where it points."""

    def limits_reported(limits: Limits) -> None:
        """The camera reports its pan/tilt range."""

    def position_refused() -> None:
        """The camera refused the last absolute move (out of its bounds)."""

    def capabilities_changed() -> None:
        """``capabilities`` (or ``kind``) changed, e.g. once an ESP32's ``/status`` is read."""

    def light_reported(on: bool) -> None:
        """The light was switched by a command carried out elsewhere (a cluster's holder)."""

    def control_reported(holder: str | None, expires_in: float | None) -> None:
        """Exclusive control as decided elsewhere: ``holder`` holds it for ``expires_in``
        seconds more unless they command again; None: nobody holds it."""


@implementer(ISourceListener)
class GatedListener:
    """Passes a source's reports on to ``target`` until :attr:`active` is made False: a
    source that was replaced (or a link given up) can report nothing more."""

    def __init__(self, target: ISourceListener) -> None:
        self._target = target
        self.active = True

    def source_connected(self) -> None:
        if self.active:
            self._target.source_connected()

    def source_disconnected(self) -> None:
        if self.active:
            self._target.source_disconnected()

    def frame_received(self, data: bytes) -> bool:
        return bool(self._target.frame_received(data)) if self.active else False

    def frame_request_failed(self) -> None:
        if self.active:
            self._target.frame_request_failed()

    def position_reported(self, x: int, y: int) -> None:
        if self.active:
            self._target.position_reported(x, y)

    def limits_reported(self, limits: Limits) -> None:
        if self.active:
            self._target.limits_reported(limits)

    def position_refused(self) -> None:
        if self.active:
            self._target.position_refused()

    def capabilities_changed(self) -> None:
        if self.active:
            self._target.capabilities_changed()

    def light_reported(self, on: bool) -> None:
        if self.active:
            self._target.light_reported(on)

    def control_reported(self, holder: str | None, expires_in: float | None) -> None:
        if self.active:
            self._target.control_reported(holder, expires_in)
