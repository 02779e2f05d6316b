"""The one access decision: what a user (or a token) may do with one camera (CONTRACT §6).

Every route, the viewer socket, MJPEG, snapshots, the REST API and tokens ask
:func:`access_level`; nothing else decides. A camera a caller has ``NONE`` on does not
exist for them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs


class Level(enum.IntEnum):
    """What one may do with a camera; each level includes the ones below."""

    NONE = 0
    VIEW = 1
    CONTROL = 2

    @classmethod
    def parse(cls, text: str) -> Level:
        """``none``, ``view`` or ``control``; ``ValueError`` otherwise."""
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"invalid access level {text!r}: use none, view or control") from None

    @property
    def text(self) -> str:
        return self.name.lower()


LEVEL_NAMES = ("none", "view", "control")


@attrs.frozen
class Caller:
    """What the decision needs to know of whoever asks.

    ``grants`` maps camera names to the user's grant on them; ``token_scope`` and
    ``token_cameras`` are set for an API token (``token_cameras`` None: every camera its
    user may access).
    """

    is_admin: bool
    can_control: bool
    grants: Mapping[str, Level] = attrs.field(factory=dict)
    token_scope: Level | None = None
    token_cameras: frozenset[str] | None = None


def access_level(caller: Caller, camera: str, default_access: Level) -> Level:
    """The caller's level on ``camera``, whose default access is ``default_access``.

    Admins: ``CONTROL``. Others: their grant on the camera if there is one, else the
    camera's default; never more than ``VIEW`` for a user marked ``nocontrol``. A token
    limited to some cameras has ``NONE`` on the others, and never more than its scope,
    nor more than its user.
    """
    if caller.token_cameras is not None and camera not in caller.token_cameras:
        return Level.NONE
    if caller.is_admin:
        level = Level.CONTROL
    else:
        level = caller.grants.get(camera, default_access)
        if not caller.can_control:
            level = min(level, Level.VIEW)
    if caller.token_scope is not None:
        level = min(level, caller.token_scope)
    return level
