"""``/stream.mjpg``: the live frames as ``multipart/x-mixed-replace`` for VLC, Home
Assistant, OBS and friends. Each stream is a viewer of the hub like a browser is, with
the same newest-frame backpressure."""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from camproxy.hub.hub import CameraHub, Frame, IViewer
from camproxy.viewers.delivery import FrameTotals, NewestFrameProducer

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

    def __init__(self, hub: CameraHub, request: Request, totals: FrameTotals) -> None:
        self._hub = hub
        self._request = request
        self.frames = NewestFrameProducer(self._write, totals)
        self._open = True

    def start(self) -> None:
        request = self._request
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-store, no-cache, must-revalidate")
        request.setHeader(b"Pragma", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.registerProducer(self.frames, True)
        request.notifyFinish().addBoth(self._finished)
        self._hub.attach(self)
        if self._hub.newest is not None:
            self.send_frame(self._hub.newest)

    def _finished(self, _: object) -> None:
        self._open = False
        self.frames.stopProducing()
        self._hub.detach(self)

    def send_frame(self, frame: Frame) -> None:
        if self._open:
            self.frames.offer(frame)

    def _write(self, frame: Frame) -> None:
        self._request.write(frame.encoded("mjpeg", mjpeg_part))

    def send_event(self, message: str) -> None:
        """MJPEG carries pictures only."""


class MjpegStream(Resource):
    """The stream as a resource, so Klein hands the request over and does not finish it."""

    isLeaf = True

    def __init__(self, hub: CameraHub, totals: FrameTotals) -> None:
        super().__init__()
        self._hub = hub
        self._totals = totals

    def render_GET(self, request: Request) -> int:
        MjpegViewer(self._hub, request, self._totals).start()
        return NOT_DONE_YET
