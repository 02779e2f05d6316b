"""What the hub tells viewers, as typed values; each transport encodes them its own way.

The hub broadcasts one event object to all viewers of a camera, so a transport that
encodes it (the WebSocket viewers' JSON) can do so once per event, not once per viewer.
"""

from __future__ import annotations

import enum

import attrs


@attrs.frozen
class ClientCount:
    """The number of viewers of the camera changed (a burst may be folded into one)."""

    count: int


@attrs.frozen
class PositionUpdate:
    """The camera reported where it points."""

    x: int
    y: int


@attrs.frozen
class LightUpdate:
    """The light was switched (the state the proxy set)."""

    state: bool


@attrs.frozen
class CameraStatus:
    """The camera link went up or down."""

    connected: bool


@attrs.frozen
class ControlChanged:
    """Exclusive control of the camera was taken (``holder``) or ended (None).

    ``expires_in``: seconds until the hold ends unless the holder sends another command.
    """

    holder: str | None
    expires_in: float | None = None


@attrs.frozen
class CapabilitiesChanged:
    """The camera's kind or what it can do became known (an ESP32's light, say)."""

    kind: str | None
    pan_tilt: bool
    light: bool


Event = (
    ClientCount | PositionUpdate | LightUpdate | CameraStatus | ControlChanged | CapabilitiesChanged
)


class Refusal(enum.Enum):
    """Why a command was not carried out; transports map these to errors and statuses."""

    NO_CONTROL = "no_control"
    NOT_CONNECTED = "not_connected"
    UNSUPPORTED = "unsupported"
    OUT_OF_BOUNDS = "out_of_bounds"
    CONTROL_HELD = "control_held"
    FAILED = "failed"


@attrs.frozen
class Refused:
    """A refusal and the one line to show whoever asked."""

    reason: Refusal
    message: str


class CloseReason(enum.Enum):
    """Why the proxy ends a viewer's connection; transports map these to close codes."""

    GOING_AWAY = "going_away"
    SESSION_ENDED = "session_ended"
    ACCESS_CHANGED = "access_changed"
    CAMERA_REMOVED = "camera_removed"
