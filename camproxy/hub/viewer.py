"""The hub's view of its viewers and of whoever sends a command."""

from __future__ import annotations

from zope.interface import Attribute, Interface

from camproxy.hub.events import CloseReason, Event, Refused
from camproxy.hub.frames import Frame


class IFrameSink(Interface):
    """Where a viewer's frames go."""

    def send_frame(frame: Frame) -> None:
        """Deliver a frame, or keep it as the newest while the transport is busy."""


class IViewer(Interface):
    """Something that receives a camera's frames and events: a browser, an MJPEG client."""

    principal = Attribute(
        "Who the viewer was admitted as (opaque to the hub; the credential watcher reads it)"
    )
    user = Attribute("str | None: the user's name (a hold of exclusive control is per user)")
    frame_sink = Attribute(
        "IFrameSink the hub hands every frame to while the viewer is attached: the viewer "
        "itself, or a small object of its own that is cheaper to reach hundreds of times per "
        "frame (the WebSocket viewer's)"
    )

    def send_event(event: Event) -> None:
        """Deliver one event (the same object goes to every viewer of the camera)."""

    def close(reason: CloseReason) -> None:
        """End the connection (a WebSocket close frame, the end of an MJPEG response)."""

    def readmit(principal: object, access: str) -> None:
        """The credential was checked again: keep watching as ``principal``, with
        ``access`` (``view`` or ``control``) from now on."""


class IRequester(Interface):
    """Whoever sent a command: checked for permission, told about refusals."""

    may_control = Attribute("bool: whether this requester may move the camera or its light")
    user = Attribute("str | None: the user's name, who holds exclusive control after a command")
    is_admin = Attribute("bool: admins take exclusive control over from other holders")

    def command_refused(refused: Refused) -> None:
        """The command was not carried out; tell the requester why."""
