"""Which cameras a caller may see and what they may do there, through the one decision.

A camera the caller has ``none`` on does not exist for them: every route answers for it
exactly as for a name that does not exist (CONTRACT §6).
"""

from __future__ import annotations

import attrs

from camproxy.accounts.access import Level, access_level
from camproxy.accounts.cameras import CAMERA_NAME
from camproxy.accounts.principal import Principal
from camproxy.fleet import DEFAULT_CAMERA, CameraStack, Fleet
from camproxy.hub.source import Limits

__all__ = ["CAMERA_NAME", "DEFAULT_CAMERA", "CameraAccess", "VisibleCamera"]


@attrs.frozen
class VisibleCamera:
    """A camera as one caller may use it."""

    stack: CameraStack
    level: Level

    @property
    def name(self) -> str:
        return self.stack.name

    @property
    def may_control(self) -> bool:
        return self.level is Level.CONTROL


class CameraAccess:
    """Looks cameras up for a principal; unknown, invalid and invisible names are alike."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def level(self, principal: Principal, name: str) -> Level:
        stack = self._fleet.get(name) if CAMERA_NAME.fullmatch(name) else None
        if stack is None:
            return Level.NONE
        return access_level(principal.caller, name, stack.access)

    def visible(self, principal: Principal, name: str) -> VisibleCamera | None:
        """The camera if it exists and the principal may at least view it, else None."""
        stack = self._fleet.get(name) if CAMERA_NAME.fullmatch(name) else None
        if stack is None:
            return None
        level = access_level(principal.caller, name, stack.access)
        return VisibleCamera(stack, level) if level >= Level.VIEW else None

    def default_limits(self) -> Limits:
        """The pan/tilt range of the camera ``default`` (0..180 without one)."""
        stack = self._fleet.get(DEFAULT_CAMERA)
        return stack.hub.limits if stack is not None else Limits()

    def all_visible(self, principal: Principal) -> list[VisibleCamera]:
        """The cameras the principal may view, by name."""
        found = []
        for stack in self._fleet:
            level = access_level(principal.caller, stack.name, stack.access)
            if level >= Level.VIEW:
                found.append(VisibleCamera(stack, level))
        return found
