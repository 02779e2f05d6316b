"""The browser's JSON dialect on ``/ws`` (CONTRACT §3): events out, commands in."""

from __future__ import annotations

import json
from typing import Any

import attrs

from camproxy.hub.commands import Command, InvalidCommand, command_from_fields
from camproxy.hub.events import (
    CameraStatus,
    CapabilitiesChanged,
    ClientCount,
    ControlChanged,
    Event,
    LightUpdate,
    PositionUpdate,
    Refused,
)
from camproxy.hub.source import Limits


def _json(fields: dict[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"))


def encode_event(event: Event) -> str:
    """One hub event as the browser's JSON message."""
    if isinstance(event, ClientCount):
        return _json({"type": "client_count", "count": event.count})
    if isinstance(event, PositionUpdate):
        return _json({"type": "position_update", "x": event.x, "y": event.y})
    if isinstance(event, LightUpdate):
        return _json({"type": "light_update", "state": event.state})
    if isinstance(event, CameraStatus):
        return _json({"type": "camera_status", "esp32_connected": event.connected})
    if isinstance(event, ControlChanged):
        fields: dict[str, Any] = {"type": "control", "holder": event.holder}
        if event.holder is not None and event.expires_in is not None:
            fields["expires_in"] = round(event.expires_in)
        return _json(fields)
    if isinstance(event, CapabilitiesChanged):
        return _json(
            {
                "type": "capabilities",
                "kind": event.kind,
                "capabilities": {"pan_tilt": event.pan_tilt, "light": event.light},
            }
        )
    raise TypeError(f"not an event: {event!r}")


def encode_error(refused: Refused | str) -> str:
    message = refused if isinstance(refused, str) else refused.message
    return _json({"type": "error", "message": message})


def encode_hello(fields: dict[str, Any]) -> str:
    return _json({"type": "hello", **fields})


@attrs.frozen
class SetFrameRate:
    """A viewer asks for at most ``fps`` frames a second (0: none, while a tile is hidden)."""

    fps: float


#: The highest frame rate a viewer may ask for (no camera is faster).
MAX_VIEWER_FPS = 60.0


def frame_rate(value: object) -> float:
    """A viewer's requested frame rate: a JSON number from 0 to 60; ``InvalidCommand`` else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidCommand("field 'fps' must be a number")
    if not 0 <= value <= MAX_VIEWER_FPS:
        raise InvalidCommand(f"field 'fps' must be between 0 and {MAX_VIEWER_FPS:g}")
    return float(value)


def parse_viewer_message(text: str, limits: Limits) -> Command | SetFrameRate:
    """Parse one text message from a browser; raises :class:`InvalidCommand`."""
    try:
        data = json.loads(text)
    except ValueError:
        raise InvalidCommand("message is not valid JSON") from None
    except RecursionError:
        raise InvalidCommand("message is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidCommand("message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise InvalidCommand("field 'type' must be a string")
    if kind == "set_fps":
        return SetFrameRate(frame_rate(data.get("fps")))
    return command_from_fields(kind, data, limits)
