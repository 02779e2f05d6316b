"""The browser's JSON dialect on ``/ws`` (CONTRACT §3): events out, commands in."""

from __future__ import annotations

import json
from typing import Any

from camproxy.hub.commands import Command, InvalidCommand, command_from_fields
from camproxy.hub.events import (
    CameraStatus,
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
        return _json({"type": "control", "holder": event.holder})
    raise TypeError(f"not an event: {event!r}")


def encode_error(refused: Refused | str) -> str:
    message = refused if isinstance(refused, str) else refused.message
    return _json({"type": "error", "message": message})


def encode_hello(fields: dict[str, Any]) -> str:
    return _json({"type": "hello", **fields})


def parse_viewer_message(text: str, limits: Limits) -> Command:
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
    return command_from_fields(kind, data, limits)
