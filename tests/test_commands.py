"""Parsing browser commands and camera messages: strict, and never an exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from camproxy.hub.commands import (
    GetPosition,
    InvalidCommand,
    LightCommand,
    PositionCommand,
    ServoCommand,
)
from camproxy.hub.source import DIRECTIONS, Limits, is_jpeg
from camproxy.sources.robocam import dialect as firmware
from camproxy.viewers.messages import parse_viewer_message

LIMITS = Limits(0, 180, 0, 90)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"servo_command","command":"up"}', ServoCommand("up")),
        ('{"type":"servo_command","command":"center","extra":1}', ServoCommand("center")),
        ('{"type":"position_command","x":90,"y":45}', PositionCommand(90, 45)),
        ('{"type":"position_command","x":0,"y":90}', PositionCommand(0, 90)),
        ('{"type":"get_position"}', GetPosition()),
        ('{"type":"light_command","state":false}', LightCommand(False)),
    ],
)
def test_valid_commands(text: str, expected: object) -> None:
    assert parse_viewer_message(text, LIMITS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '"servo_command"',
        "{}",
        '{"type":"dance"}',
        '{"type":"servo_command"}',
        '{"type":"servo_command","command":"UP"}',
        '{"type":"servo_command","command":"getframe"}',
        '{"type":"position_command","x":90}',
        '{"type":"position_command","x":true,"y":45}',
        '{"type":"position_command","x":45.5,"y":45}',
        '{"type":"position_command","x":"90","y":45}',
        '{"type":"position_command","x":181,"y":45}',
        '{"type":"position_command","x":90,"y":91}',
        '{"type":"position_command","x":-1,"y":0}',
        '{"type":"light_command","state":1}',
        '{"type":"light_command","state":"true"}',
        '{"type":"light_command"}',
        '{"type":7}',
        "[" * 100000,
    ],
)
def test_invalid_commands_raise_invalid_command(text: str) -> None:
    with pytest.raises(InvalidCommand):
        parse_viewer_message(text, LIMITS)


def test_limits_default_to_0_180_until_known() -> None:
    assert parse_viewer_message('{"type":"position_command","x":180,"y":180}', Limits())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(
    st.one_of(
        st.text(max_size=200),
        json_values.map(json.dumps),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(
                    ["servo_command", "position_command", "get_position", "light_command", "x"]
                )
            },
            optional={
                "command": json_values,
                "x": json_values,
                "y": json_values,
                "state": json_values,
            },
        ).map(json.dumps),
    )
)
def test_any_input_is_a_valid_command_or_invalid_command(text: str) -> None:
    try:
        command = parse_viewer_message(text, LIMITS)
    except InvalidCommand:
        return
    if isinstance(command, PositionCommand):
        assert LIMITS.contains(command.x, command.y)
        assert type(command.x) is int and type(command.y) is int
    elif isinstance(command, ServoCommand):
        assert command.direction in DIRECTIONS
    elif isinstance(command, LightCommand):
        assert type(command.on) is bool


@given(st.text(max_size=300) | json_values.map(json.dumps))
def test_camera_text_parser_never_raises(text: str) -> None:
    message = firmware.parse_camera_text(text)
    if isinstance(message, firmware.Position):
        assert type(message.x) is int and type(message.y) is int


def test_camera_messages() -> None:
    assert firmware.parse_camera_text('{"x":90,"y":45}') == firmware.Position(90, 45)
    assert firmware.parse_camera_text('{"min_x":0,"max_x":180,"min_y":0,"max_y":90}') == Limits(
        0, 180, 0, 90
    )
    assert firmware.parse_camera_text('{"client_count":2}') == firmware.ClientCount(2)
    assert firmware.parse_camera_text("Position out of bounds") == firmware.OutOfBounds()
    assert isinstance(firmware.parse_camera_text('{"x":true,"y":1}'), firmware.Unrecognized)
    assert isinstance(
        firmware.parse_camera_text('{"min_x":9,"max_x":1,"min_y":0,"max_y":1}'),
        firmware.Unrecognized,
    )


def test_firmware_encoding_is_byte_exact() -> None:
    assert firmware.move_to(90, 45) == '{"x":90,"y":45}'
    assert firmware.light(True) == "light_on" and firmware.light(False) == "light_off"


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (b"\xff\xd8\xff\xe0....\xff\xd9", True),
        (b"\xff\xd8\xff\xd9", True),
        (b"\xff\xd8\xff\xe0....", False),
        (b"\x89PNG\r\n", False),
        (b"", False),
    ],
)
def test_jpeg_delimiters(data: bytes, ok: bool) -> None:
    assert is_jpeg(data) is ok
