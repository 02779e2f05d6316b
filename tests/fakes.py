"""Test doubles for the hub's small interfaces, checked against them with verifyObject."""

from __future__ import annotations

import json
from typing import Any

from zope.interface import implementer

from camproxy.hub.hub import CameraHub, Frame, ICameraLink, IRequester, IViewer

JPEG = b"\xff\xd8fake-jpeg-body\xff\xd9"


@implementer(ICameraLink)
class FakeLink:
    """Records what the hub sends; the test decides when the camera 'connects'."""

    def __init__(self, hub: CameraHub, *, connect_on_open: bool = True) -> None:
        self.hub = hub
        self.connect_on_open = connect_on_open
        self.sent: list[str] = []
        self.is_open = False
        self.opens = 0
        self.closes = 0

    def open(self) -> None:
        self.is_open = True
        self.opens += 1
        if self.connect_on_open:
            self.connect()

    def connect(self) -> None:
        """The link comes up and the camera answers the first question."""
        self.hub.link_opened()
        self.hub.text_received('{"min_x":0,"max_x":180,"min_y":0,"max_y":180}')

    def close(self) -> None:
        self.is_open = False
        self.closes += 1
        self.hub.camera_disconnected()

    def send_text(self, text: str) -> None:
        self.sent.append(text)

    def count(self, text: str) -> int:
        return self.sent.count(text)


@implementer(IViewer, IRequester)
class FakeViewer:
    def __init__(self, may_control: bool = True) -> None:
        self.frames: list[Frame] = []
        self.events: list[dict[str, Any]] = []
        self.may_control = may_control

    def send_frame(self, frame: Frame) -> None:
        self.frames.append(frame)

    def send_event(self, message: str) -> None:
        self.events.append(json.loads(message))

    def command_refused(self, reason: str) -> None:
        self.events.append({"type": "error", "message": reason})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]
