"""The RoboCam firmware's WebSocket dialect, both directions (CONTRACT §1).

Pure functions and value types: no sockets, no Autobahn, no clock. The firmware is
``ESP32Cam/src/main.cpp`` in the public RoboCam repository.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

import attrs

from camproxy.hub.source import Limits

GETFRAME: Final = "getframe"
GET_POS: Final = "get_pos"
GET_LIMITS: Final = "get_limits"
LIGHT_ON: Final = "light_on"
LIGHT_OFF: Final = "light_off"
OUT_OF_BOUNDS: Final = "Position out of bounds"


@attrs.frozen
class Position:
    """A servo position reported by the camera (``{"x":X,"y":Y}``)."""

    x: int
    y: int


@attrs.frozen
class ClientCount:
    """The camera's own count of its WebSocket clients."""

    count: int


@attrs.frozen
class OutOfBounds:
    """The camera refused a position command."""


@attrs.frozen
class Unrecognized:
    """A text message the firmware dialect does not define."""

    text: str


CameraMessage = Position | Limits | ClientCount | OutOfBounds | Unrecognized


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_camera_text(text: str) -> CameraMessage:
    """Classify one text message from the camera; never raises."""
    if text == OUT_OF_BOUNDS:
        return OutOfBounds()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can parse
        return Unrecognized(text)
    if not isinstance(data, Mapping):
        return Unrecognized(text)
    limit_keys = ("min_x", "max_x", "min_y", "max_y")
    if all(_is_int(data.get(key)) for key in limit_keys):
        limits = Limits(*(data[key] for key in limit_keys))
        if limits.min_x <= limits.max_x and limits.min_y <= limits.max_y:
            return limits
        return Unrecognized(text)
    if _is_int(data.get("x")) and _is_int(data.get("y")):
        return Position(data["x"], data["y"])
    if _is_int(data.get("client_count")):
        return ClientCount(data["client_count"])
    return Unrecognized(text)


def move_to(x: int, y: int) -> str:
    """The firmware's absolute position command, byte for byte."""
    return json.dumps({"x": x, "y": y}, separators=(",", ":"))


def light(on: bool) -> str:
    return LIGHT_ON if on else LIGHT_OFF
