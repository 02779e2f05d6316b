"""The one access decision, as a table (CONTRACT §6 "Access")."""

from __future__ import annotations

import pytest

from camproxy.accounts.access import Caller, Level, access_level

N, V, C = Level.NONE, Level.VIEW, Level.CONTROL
GARDEN = "garden"

# (admin, may control, grant on garden, token scope, token cameras, camera default) -> level
TABLE = [
    # Admins always control, whatever the grant or the default.
    ((True, True, None, None, None, N), C),
    ((True, False, N, None, None, N), C),
    # Users: the grant if any, else the camera's default.
    ((False, True, None, None, None, C), C),
    ((False, True, None, None, None, V), V),
    ((False, True, None, None, None, N), N),
    ((False, True, V, None, None, C), V),
    ((False, True, N, None, None, C), N),
    ((False, True, C, None, None, N), C),
    # nocontrol users are capped at view.
    ((False, False, C, None, None, N), V),
    ((False, False, None, None, None, C), V),
    ((False, False, N, None, None, C), N),
    # Tokens: never above their scope, never above their user.
    ((False, True, None, V, None, C), V),
    ((False, True, None, C, None, C), C),
    ((False, True, V, C, None, C), V),
    ((False, False, None, C, None, C), V),
    ((True, False, None, V, None, N), V),
    ((True, False, None, C, None, N), C),
    # Tokens limited to cameras: the others are as if NONE.
    ((False, True, None, C, frozenset({GARDEN}), C), C),
    ((False, True, None, C, frozenset({"door"}), C), N),
    ((True, True, None, C, frozenset({"door"}), C), N),
    ((False, True, N, C, frozenset({GARDEN}), C), N),
]


@pytest.mark.parametrize(("row", "expected"), TABLE)
def test_access_table(
    row: tuple[bool, bool, Level | None, Level | None, frozenset[str] | None, Level],
    expected: Level,
) -> None:
    admin, control, grant, scope, cameras, default = row
    caller = Caller(
        is_admin=admin,
        can_control=control,
        grants={} if grant is None else {GARDEN: grant},
        token_scope=scope,
        token_cameras=cameras,
    )
    assert access_level(caller, GARDEN, default) is expected


def test_levels_parse_and_print() -> None:
    assert [Level.parse(t) for t in ("none", "view", "control")] == [N, V, C]
    assert Level.parse("VIEW") is V and V.text == "view"
    with pytest.raises(ValueError, match="none, view or control"):
        Level.parse("admin")
