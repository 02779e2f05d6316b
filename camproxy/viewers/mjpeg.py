"""``/stream.mjpg``: the live frames as ``multipart/x-mixed-replace`` for VLC, Home
Assistant, OBS and friends. Each stream is a viewer of the hub like a browser is, with
the same newest-frame backpressure, and ends like one when its credential ends."""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from camproxy.hub.events import CloseReason, Event
from camproxy.hub.frames import Frame
from camproxy.hub.hub import CameraHub
from camproxy.hub.viewer import IViewer
from camproxy.viewers.delivery import NewestFrameProducer
from camproxy.viewers.socketopts import limit_unsent_bytes

BOUNDARY = b"camproxyframe"
CONTENT_TYPE = b"multipart/x-mixed-replace; boundary=" + BOUNDARY


def mjpeg_part(jpeg: bytes) -> bytes:
    """One part of the stream; built once per frame and shared by every MJPEG client."""
    head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (
        BOUNDARY,
        len(jpeg),
    )
    return head + jpeg + b"\r\n"


@implementer(IViewer)
class MjpegViewer:
    """One open ``/stream.mjpg`` response."""

    def __init__(
        self,
        hub: CameraHub,
        request: Request,
        principal: object,
        user: str | None,
        unsent_limit: int = 64 * 1024,
    ) -> None:
        self._hub = hub
        self._request = request
        self.principal = principal
        self.user = user
        self.frames = NewestFrameProducer(self._write, hub.stats)
        self._unsent_limit = unsent_limit
        self._open = True

    def start(self) -> None:
        request = self._request
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-store, no-cache, must-revalidate")
        request.setHeader(b"Pragma", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        limit_unsent_bytes(request.transport, self._unsent_limit)
        request.registerProducer(self.frames, True)
        request.notifyFinish().addBoth(self._finished)
        self._hub.attach(self)
        if self._hub.newest is not None:
            self.send_frame(self._hub.newest)

    def _finished(self, _: object) -> None:
        self._open = False
        self.frames.stopProducing()
        self._hub.detach(self)

    @property
    def frame_sink(self) -> MjpegViewer:
        return self

    def send_frame(self, frame: Frame) -> None:
        if self._open:
            self.frames.offer(frame)

    def _write(self, frame: Frame) -> None:
        self._request.write(frame.encoded("mjpeg", mjpeg_part))

    def send_event(self, event: Event) -> None:
        """MJPEG carries pictures only."""

    def readmit(self, principal: object, access: str) -> None:
        self.principal = principal

    def close(self, reason: CloseReason) -> None:
        """End the stream: the client sees the response end (a player may retry and be
        refused without a valid credential)."""
        if self._open:
            self._open = False
            self._request.unregisterProducer()
            self._request.finish()


class MjpegStream(Resource):
    """The stream as a resource, so Klein hands the request over and does not finish it."""

    isLeaf = True

    def __init__(self, hub: CameraHub, principal: object, user: str | None) -> None:
        super().__init__()
        self._hub = hub
        self._principal = principal
        self._user = user

    def render_GET(self, request: Request) -> int:
        MjpegViewer(self._hub, request, self._principal, self._user).start()
        return NOT_DONE_YET
