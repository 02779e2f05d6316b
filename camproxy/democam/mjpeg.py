"""Generic emulated cameras: an MJPEG stream server and a JPEG snapshot server.

They stand for whatever else users point CamProxy at (CONTRACT section 7, kinds ``mjpeg`` and
``jpeg``): ESPHome's ``esp32_camera_web_server`` (a stream port and a snapshot port, both at
``/``), motionEye, go2rtc, IP cameras. :class:`MjpegServer` frames its stream as its
:class:`~camproxy.democam.httpcam.MultipartStyle` says, so a test can vary the boundary, its
quoting, the space after ``;``, chunked or close-delimited bodies, parts with or without
``Content-Length`` and extra part headers; :data:`ESPHOME_STREAM` is ESPHome's framing.
:class:`JpegServer` answers one JPEG per GET. Both serve many clients at once unless
``single_client`` (ESPHome's server has one task, so one request at a time).

Start them with :func:`listen_mjpeg_camera` and :func:`listen_jpeg_camera`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from camproxy.democam.httpcam import (
    ESPHOME_STREAM,
    HttpCameraServer,
    MultipartStyle,
    PatternFrames,
)
from camproxy.democam.httpwire import Exchange

__all__ = [
    "ESPHOME_STREAM",
    "GENERIC_STREAM",
    "JpegServer",
    "MjpegServer",
    "PatternCamera",
    "listen_jpeg_camera",
    "listen_mjpeg_camera",
]

GENERIC_STREAM = MultipartStyle(boundary="frame", space=True, headers=())
"""A go2rtc-like stream: ``multipart/x-mixed-replace; boundary=frame``, chunked."""


@attrs.define
class PatternCamera:
    """A camera without controls, without sockets: the test pattern at a fixed size.

    ``quality`` is Pillow's (1..95); ``light`` lights the picture. ``pictures`` counts the
    JPEGs taken. ``now`` is the clock drawn on them (the servers give theirs when None).
    """

    now: Callable[[], float] | None = attrs.field(default=None, repr=False)
    width: int = 320
    height: int = 240
    quality: int = 70
    light: bool = False
    frames: PatternFrames = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ValueError(f"frame size {self.width}x{self.height} is too small")
        if not 1 <= self.quality <= 95:
            raise ValueError(f"JPEG quality {self.quality} is not within 1..95")
        self.frames = PatternFrames(lambda: self.now() if self.now is not None else 0.0)

    @property
    def pictures(self) -> int:
        """JPEGs taken so far."""
        return self.frames.rendered

    def picture(self) -> bytes:
        """One JPEG, different from every earlier one."""
        return self.frames.render(self.width, self.height, self.quality, self.light)


def _check_path(path: str) -> str:
    if not path.startswith("/") or "?" in path:
        raise ValueError(f"a path starts with / and has no query: {path!r}")
    return path


class MjpegServer(HttpCameraServer):
    """A ``multipart/x-mixed-replace`` JPEG stream at ``path``; anything else is a 404.

    Knobs: ``camera`` (a :class:`PatternCamera`), ``path``, ``style`` (a
    :class:`~camproxy.democam.httpcam.MultipartStyle`), ``fps``, ``single_client`` (one
    request at a time: a second client waits until the first leaves), and the keywords of
    :class:`~camproxy.democam.httpcam.HttpCameraServer` (faults, ``user``/``password``).
    """

    def __init__(
        self,
        reactor: Any,
        camera: PatternCamera | None = None,
        *,
        path: str = "/",
        style: MultipartStyle = GENERIC_STREAM,
        fps: float = 15.0,
        single_client: bool = False,
        **knobs: Any,
    ) -> None:
        super().__init__(reactor, **knobs)
        if not fps > 0:
            raise ValueError(f"fps must be positive, not {fps!r}")
        self.camera = camera if camera is not None else PatternCamera()
        if self.camera.now is None:
            self.camera.now = reactor.seconds
        self.path = _check_path(path)
        self.style = style
        self.fps = fps
        self.stream = self.add_server("stream", self._route, single_task=single_client)

    def _route(self, exchange: Exchange) -> None:
        if exchange.request.path != self.path:
            exchange.send_error(404)
            exchange.finish(close=True)
            return
        self.start_stream(
            exchange,
            self.style,
            self.camera.picture,
            interval=lambda: 1.0 / self.fps,
            timestamps=self.style.timestamp,
        )


class JpegServer(HttpCameraServer):
    """One JPEG per GET at ``path`` (``Content-Disposition: inline; filename=capture.jpg``).

    Knobs: ``camera``, ``path``, ``single_client``, and the keywords of
    :class:`~camproxy.democam.httpcam.HttpCameraServer`; ``fault="slow"`` with
    ``slow_seconds`` makes every answer late. The server's ``snapshot``
    :class:`~camproxy.democam.httpwire.WireServer` counts ``requests`` and the most answered at
    once (``in_flight_max``).
    """

    def __init__(
        self,
        reactor: Any,
        camera: PatternCamera | None = None,
        *,
        path: str = "/",
        single_client: bool = False,
        **knobs: Any,
    ) -> None:
        super().__init__(reactor, **knobs)
        self.camera = camera if camera is not None else PatternCamera()
        if self.camera.now is None:
            self.camera.now = reactor.seconds
        self.path = _check_path(path)
        self.snapshot = self.add_server("snapshot", self._route, single_task=single_client)

    def stream_roles(self) -> tuple[str, ...]:
        return ()

    def _route(self, exchange: Exchange) -> None:
        if exchange.request.path != self.path:
            exchange.send_error(404)
            exchange.finish(close=True)
            return
        exchange.set_header("Content-Disposition", "inline; filename=capture.jpg")
        self.send_jpeg("snapshot", exchange, self.camera.picture())
        self.changed()


async def _listen(server: HttpCameraServer, role: str, endpoint: str) -> None:
    await server.listen({role: endpoint})


def listen_mjpeg_camera(reactor: Any, endpoint: str, **knobs: Any) -> Deferred[MjpegServer]:
    """Run an :class:`MjpegServer` on an endpoint string; stream URL ``server.url("stream", path)``.

    Stop it with ``await server.stop()``.
    """
    server = MjpegServer(reactor, **knobs)
    listening = Deferred.fromCoroutine(_listen(server, "stream", endpoint))
    return listening.addCallback(lambda _: server)


def listen_jpeg_camera(reactor: Any, endpoint: str, **knobs: Any) -> Deferred[JpegServer]:
    """Run a :class:`JpegServer` on an endpoint string; its URL is ``server.url("snapshot", path)``.

    Stop it with ``await server.stop()``.
    """
    server = JpegServer(reactor, **knobs)
    listening = Deferred.fromCoroutine(_listen(server, "snapshot", endpoint))
    return listening.addCallback(lambda _: server)
