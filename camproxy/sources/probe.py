"""Probing a camera once, as CamProxy would connect to it: for ``camproxy camera probe URL``
and the admin page's "test connection".

The probe builds the very source the daemon would (:func:`camproxy.sources.kinds.make_source`),
opens it, waits for the first valid frame, counts frames for a few seconds (asking for
them as fast as the camera answers, or at ``max_fps``, when the camera is paced) and
closes it again; it never retries. It answers the detected kind, the capabilities, the
frame size (from the JPEG's SOF marker) and the measured frame rate, or one line saying
why it failed.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from zope.interface import implementer

from camproxy.hub.source import Capabilities, ICameraSource, ISourceListener, Limits
from camproxy.sources.http import HttpSourceSettings, with_timeout
from camproxy.sources.kinds import RobocamFactory, default_kind, make_source, url_problem
from camproxy.urls import redacted_url

#: Markers that start a frame header (SOF0-3, 5-7, 9-11, 13-15), which holds the size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers without a length field.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's frame header, or ``None`` if it has none."""
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in _SOF_MARKERS:
            if at + 9 > len(data) or length < 7:
                return None
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return (width, height)
        at += 2 + length
    return None


@attrs.frozen
class ProbeResult:
    """What one probe of a camera found.

    :ivar ok: a valid frame came.
    :ivar error: why it failed (or why the measurement ended early), one line.
    :ivar fps: frames per second measured after the first frame (``None`` below two frames).
    """

    url: str
    kind: str | None
    ok: bool
    capabilities: Capabilities | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frames: int = 0
    frame_bytes: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        result = attrs.asdict(self, recurse=False)
        result["capabilities"] = self.capabilities.as_json() if self.capabilities else None
        return result

    def summary(self) -> str:
        """One line for a shell or a page."""
        if not self.ok:
            return f"{self.kind or 'camera'} at {self.url}: failed: {self.error or 'no frame'}"
        parts = [self.kind or "camera"]
        if self.width and self.height:
            parts.append(f"{self.width}x{self.height}")
        if self.fps is not None:
            parts.append(f"{self.fps:.1f} fps")
        if self.frame_bytes:
            parts.append(f"{self.frame_bytes // 1024} KiB per frame")
        if self.capabilities is not None:
            can = [name for name, has in self.capabilities.as_json().items() if has]
            parts.append("controls: " + (", ".join(can) if can else "none"))
        line = f"{', '.join(parts)} at {self.url}"
        return line + (f" ({self.error})" if self.error else "")


@implementer(ISourceListener)
class _Recorder:
    """Plays the hub for the probe: records frames, asks paced cameras for more."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.source: ICameraSource | None = None
        self.first: Deferred[None] = Deferred()
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.size: tuple[int, int] | None = None
        self.failure: str | None = None
        self.measuring = False
        self.interval = 0.0
        self._next: IDelayedCall | None = None

    def source_connected(self) -> None:
        pass

    def source_disconnected(self) -> None:
        pass

    def frame_received(self, data: bytes) -> bool:
        if self.size is None:
            self.size = jpeg_size(data)
        if self.measuring or not self.times:
            self.times.append(self._clock.seconds())
            self.sizes.append(len(data))
        if not self.first.called:
            self.first.callback(None)
        self.ask_again()
        return True

    def frame_request_failed(self) -> None:
        self.ask_again()

    def position_reported(self, x: int, y: int) -> None:
        pass

    def limits_reported(self, limits: Limits) -> None:
        pass

    def position_refused(self) -> None:
        pass

    def capabilities_changed(self) -> None:
        pass

    def light_reported(self, on: bool) -> None:
        pass

    def control_reported(self, holder: str | None, expires_in: float | None) -> None:
        pass

    def failed(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        if not self.first.called:
            self.first.errback(_ProbeFailed(why))

    def ask(self) -> None:
        self._next = None
        if self.source is not None and self.source.paced:
            self.source.request_frame()

    def ask_again(self) -> None:
        """The next request, one frame interval after this answer (as the hub paces)."""
        if self.source is None or not self.source.paced or self._next is not None:
            return
        self._next = self._clock.callLater(self.interval, self.ask)

    def stop(self) -> None:
        self.measuring = False
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None


class _ProbeFailed(Exception):
    pass


def _stopped(times: list[float], now: float) -> str | None:
    """Whether frames stopped coming before the measurement ended (a stalling stream)."""
    if not times:
        return None
    usual = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
    gap = now - times[-1]
    if gap > max(1.0, 3 * usual):
        return f"frames stopped: none in the last {gap:.1f} s"
    return None


def probe(
    reactor: Any,
    url: str,
    kind: str | None = None,
    seconds: float = 3.0,
    *,
    settings: HttpSourceSettings | None = None,
    first_frame_timeout: float = 12.0,
    robocam: RobocamFactory | None = None,
) -> Deferred[ProbeResult]:
    """Connect once to the camera at ``url`` as CamProxy would, and report.

    :param kind: the camera's kind, or ``None`` for the URL's default (detected from the
        first answer for an ``http(s)`` URL with a path).
    :param seconds: how long to count frames after the first one.
    :param settings: timeouts, limits, CA file and endpoint factory (its ``url`` is
        replaced by ``url``); ``max_fps`` paces requests to a ``jpeg`` camera.
    :param first_frame_timeout: the longest wait for a first frame.
    :param robocam: builds the RoboCam source for a ``ws(s)`` URL; without it such a
        camera is reported as ``robocam`` without connecting.

    Never fails: every problem is a :class:`ProbeResult` with ``ok`` false.
    """
    return Deferred.fromCoroutine(
        _probe(reactor, url, kind, seconds, settings, first_frame_timeout, robocam)
    )


async def _probe(
    reactor: Any,
    url: str,
    kind: str | None,
    seconds: float,
    settings: HttpSourceSettings | None,
    first_frame_timeout: float,
    robocam: RobocamFactory | None,
) -> ProbeResult:
    shown = redacted_url(url)
    problem = url_problem(url, kind)
    if problem is not None:
        return ProbeResult(shown, kind, ok=False, error=problem)
    kind = kind or default_kind(url)
    if kind == "robocam" and robocam is None:
        return ProbeResult(
            shown, "robocam", ok=False, error="not probed: ws(s) cameras need the RoboCam link"
        )
    settings = attrs.evolve(settings or HttpSourceSettings(url), url=url)
    recorder = _Recorder(reactor)

    def failed(attempt: int) -> float:
        # The source's retry policy is asked exactly when an attempt failed: the probe
        # stops there instead of retrying (on the next turn, out of the source's call).
        why = getattr(source, "last_error", None) or "the connection failed"
        reactor.callLater(0, recorder.failed, why)
        return 3600.0

    source = make_source(reactor, recorder, settings, kind, robocam=robocam, retry_policy=failed)
    recorder.source = source
    if settings.max_fps:
        recorder.interval = 1.0 / settings.max_fps
    source.open()
    error: str | None = None
    try:
        await with_timeout(recorder.first, first_frame_timeout, reactor)
    except _ProbeFailed as failure:
        error = str(failure)
    except TimeoutError:
        error = recorder.failure or f"no frame within {first_frame_timeout:g} s"
    else:
        recorder.measuring = True  # paced cameras are asked again as each frame comes
        await deferLater(reactor, seconds, lambda: None)
        error = recorder.failure
        if error is None and not source.paced:  # a paced camera's answer may be slow
            error = _stopped(recorder.times, reactor.seconds())
    finally:
        recorder.stop()
        source.close()
        closed = getattr(source, "when_closed", None)
        if closed is not None:
            await closed()
    times = recorder.times
    fps = None
    if len(times) >= 2 and times[-1] > times[0]:
        fps = round((len(times) - 1) / (times[-1] - times[0]), 2)
    width, height = recorder.size or (None, None)
    return ProbeResult(
        shown,
        source.kind if getattr(source, "detected", True) else None,
        ok=bool(times),
        capabilities=source.capabilities,
        width=width,
        height=height,
        fps=fps,
        frames=len(times),
        frame_bytes=sum(recorder.sizes) // len(recorder.sizes) if recorder.sizes else None,
        error=error,
    )
