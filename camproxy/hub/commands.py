"""Commands for a camera, as values, and their validation.

The WebSocket viewers and the REST API both decode a request into fields and build these
values with :func:`command_from_fields`, so a command is validated in exactly one place
before it can reach the camera.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from camproxy.hub.source import DIRECTIONS, Limits


@attrs.frozen
class ServoCommand:
    direction: str


@attrs.frozen
class PositionCommand:
    x: int
    y: int


@attrs.frozen
class GetPosition:
    pass


@attrs.frozen
class LightCommand:
    on: bool


@attrs.frozen
class ReleaseControl:
    """The holder of exclusive control gives it up."""


Command = ServoCommand | PositionCommand | GetPosition | LightCommand | ReleaseControl

#: Commands that move or switch something, and so need control permission.
CONTROL_COMMANDS = (ServoCommand, PositionCommand, LightCommand)


class InvalidCommand(ValueError):
    """The request is not a valid command; the message is safe to show the viewer."""


def _int_field(data: Mapping[str, object], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidCommand(f"field '{name}' must be an integer")
    return value


def command_from_fields(kind: str, data: Mapping[str, object], limits: Limits) -> Command:
    """Build a command of type ``kind`` from already-decoded JSON fields."""
    if kind == "servo_command":
        direction = data.get("command")
        if not isinstance(direction, str) or direction not in DIRECTIONS:
            raise InvalidCommand("field 'command' must be one of " + ", ".join(sorted(DIRECTIONS)))
        return ServoCommand(direction)
    if kind == "position_command":
        x, y = _int_field(data, "x"), _int_field(data, "y")
        if not limits.contains(x, y):
            raise InvalidCommand(
                f"position out of range: x must be {limits.min_x}..{limits.max_x}, "
                f"y must be {limits.min_y}..{limits.max_y}"
            )
        return PositionCommand(x, y)
    if kind == "get_position":
        return GetPosition()
    if kind == "release_control":
        return ReleaseControl()
    if kind == "light_command":
        state = data.get("state")
        if not isinstance(state, bool):
            raise InvalidCommand("field 'state' must be a boolean")
        return LightCommand(state)
    raise InvalidCommand(f"unknown message type {kind!r}"[:200])
