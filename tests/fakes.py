"""Test doubles for the hub's small interfaces, checked against them with verifyObject."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from camproxy.hub.events import CloseReason, Event, Refused
from camproxy.hub.frames import Frame
from camproxy.hub.source import (
    Capabilities,
    CommandFailed,
    ICameraSource,
    ISourceListener,
    Limits,
)
from camproxy.hub.viewer import IRequester, IViewer
from camproxy.viewers.messages import encode_event

JPEG = b"\xff\xd8fake-jpeg-body\xff\xd9"


@implementer(ICameraSource)
class FakeSource:
    """Records what the hub asks for; the test decides when the camera 'connects'.

    ``sent`` holds one name per request: ``request_frame``, ``move:up``,
    ``move_to:90,45``, ``query_position``, ``light:on``.
    """

    kind = "robocam"

    def __init__(
        self,
        hub: ISourceListener,
        *,
        connect_on_open: bool = True,
        capabilities: Capabilities | None = None,
        paced: bool = True,
    ) -> None:
        self.hub = hub
        self.connect_on_open = connect_on_open
        self.capabilities = capabilities or Capabilities(pan_tilt=True, light=True)
        self.paced = paced
        self.sent: list[str] = []
        self.is_open = False
        self.opens = 0
        self.closes = 0
        self.light_fails: str | None = None

    def open(self) -> None:
        self.is_open = True
        self.opens += 1
        if self.connect_on_open:
            self.connect()

    def connect(self) -> None:
        """The link comes up and the camera answers."""
        self.hub.source_connected()
        self.hub.limits_reported(Limits(0, 180, 0, 180))

    def close(self) -> None:
        self.is_open = False
        self.closes += 1
        self.hub.source_disconnected()

    def request_frame(self) -> None:
        self.sent.append("request_frame")

    def move(self, direction: str) -> None:
        self.sent.append(f"move:{direction}")

    def move_to(self, x: int, y: int) -> None:
        self.sent.append(f"move_to:{x},{y}")

    def query_position(self) -> None:
        self.sent.append("query_position")

    def set_light(self, on: bool) -> Deferred[None]:
        if self.light_fails is not None:
            return fail(CommandFailed(self.light_fails))
        self.sent.append(f"light:{'on' if on else 'off'}")
        return succeed(None)

    def count(self, text: str) -> int:
        return self.sent.count(text)


@implementer(IViewer, IRequester)
class FakeViewer:
    """Records frames, and events as the browser would see them (decoded JSON)."""

    def __init__(
        self,
        may_control: bool = True,
        principal: object = None,
        user: str | None = "viewer",
        is_admin: bool = False,
    ) -> None:
        self.frames: list[Frame] = []
        self.events: list[dict[str, Any]] = []
        self.may_control = may_control
        self.principal = principal
        self.user = user
        self.is_admin = is_admin
        self.closed: list[CloseReason] = []

    @property
    def frame_sink(self) -> FakeViewer:
        return self

    def send_frame(self, frame: Frame) -> None:
        self.frames.append(frame)

    def send_event(self, event: Event) -> None:
        self.events.append(json.loads(encode_event(event)))

    def command_refused(self, refused: Refused) -> None:
        self.events.append({"type": "error", "message": refused.message, "reason": refused.reason})

    def close(self, reason: CloseReason) -> None:
        self.closed.append(reason)

    def readmit(self, principal: object, access: str) -> None:
        self.principal = principal
        self.may_control = access == "control"

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]
