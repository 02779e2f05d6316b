"""HTTP cameras: an MJPEG stream, one JPEG per request, or either, told by the first answer.

One :class:`HttpCameraSource` is the one link to one camera's video. While open it keeps
exactly one connection (or request) to the video at a time, waiting until the previous
connection is really closed before opening the next; it reconnects with backoff; it
reports a valid frame (``FF D8`` … ``FF D9``, under the size limit) and nothing else to
its listener; and it counts as connected from the first valid frame until no valid frame
came for the stall timeout (CONTRACT §7).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from hyperlink import URL
from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse
from zope.interface import implementer

from camproxy.hub.source import (
    Capabilities,
    CommandFailed,
    ICameraSource,
    ISourceListener,
    is_jpeg,
)
from camproxy.sources.complaints import LogLimiter
from camproxy.sources.http import (
    RETRY_POLICY,
    BodySink,
    CameraHttpClient,
    HttpSourceSettings,
    describe,
    discard,
    ended_cleanly,
    read_body,
    status_text,
    with_timeout,
)
from camproxy.sources.multipart import MJPEGParser, boundary_from_content_type
from camproxy.urls import redacted_url

#: The kinds this module speaks, by how their video comes.
STREAM = "mjpeg"
STILL = "jpeg"

_JPEG_TYPES = frozenset({b"image/jpeg", b"image/jpg", b"image/pjpeg"})


@attrs.define
class SourceStats:
    """Counters for monitoring and tests."""

    invalid: int = 0  # parts or answers that were not a JPEG under the limit
    discarded: int = 0  # parts skipped by the MJPEG parser (over a limit)
    failures: int = 0  # attempts or links that ended in a failure


def content_type(response: IResponse) -> bytes:
    values = response.headers.getRawHeaders(b"content-type")
    return values[0].strip() if values else b""


def detect_kind(value: bytes) -> str | None:
    """``mjpeg`` for a multipart stream, ``jpeg`` for an image, else ``None``."""
    media = value.partition(b";")[0].strip().lower()
    if media.startswith(b"multipart/"):
        return STREAM
    if media in _JPEG_TYPES or media.startswith(b"image/"):
        return STILL
    return None


@implementer(ICameraSource)
class HttpCameraSource:
    """The video of one HTTP camera, reported to an :class:`ISourceListener`.

    :param kind: ``mjpeg`` (one endless ``multipart/x-mixed-replace`` response),
        ``jpeg`` (one image per GET, paced by the hub through :meth:`request_frame`), or
        ``None`` to decide from the first answer's ``Content-Type`` and keep that.
    :param retry_policy: seconds to wait before the n-th consecutive retry.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        listener: ISourceListener,
        settings: HttpSourceSettings,
        *,
        kind: str | None = None,
        retry_policy: Callable[[int], float] = RETRY_POLICY,
    ) -> None:
        if kind not in (STREAM, STILL, None):
            raise ValueError(f"an HTTP camera is of kind mjpeg or jpeg, not {kind}")
        self.settings = settings
        self.url = URL.from_text(settings.url)
        if self.url.scheme not in ("http", "https") or not self.url.host:
            raise ValueError(f"not an http(s) URL: {redacted_url(settings.url)}")
        self.redacted_url = redacted_url(settings.url)
        self.capabilities = Capabilities()
        self.stats = SourceStats()
        #: Whether the camera counts as connected (a valid frame came, none overdue).
        self.connected = False
        #: Why the last attempt or link failed, one line (``None`` once a frame came).
        self.last_error: str | None = None
        self._reactor = reactor
        self._listener = listener
        self._mode = kind
        self._retry_policy = retry_policy
        self._video = CameraHttpClient(reactor, settings)
        self._complaints = LogLimiter(reactor, self.log)
        self._stall = settings.effective_stall_timeout
        self._open = False
        # Bumped whenever the current connection is given up: callbacks from an older
        # one are ignored.
        self._generation = 0
        self._request: Deferred[Any] | None = None
        self._sink: BodySink | None = None
        self._parser: MJPEGParser | None = None
        self._waiting_idle: Deferred[None] | None = None
        self._retry_call: IDelayedCall | None = None
        self._watchdog: IDelayedCall | None = None
        self._failures = 0
        self._link_frames = 0
        self._link_invalid = 0
        self._hub_waiting = False
        self._unanswered_since: float | None = None
        self._request_started = 0.0
        self._opened_before = 0
        # True while the listener hears of the connection, just before the first frame.
        self._announcing = False

    # -- ICameraSource ------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """The configured or detected kind; ``mjpeg`` (the likelier) until detected."""
        return self._mode or STREAM

    @property
    def detected(self) -> bool:
        """Whether the kind is known (configured, or detected from an answer)."""
        return self._mode is not None

    @property
    def paced(self) -> bool:
        return self._mode == STILL

    def when_closed(self) -> Deferred[None]:
        """Fires once no connection to the camera is open (say, after :meth:`close`),
        for a clean shutdown."""
        return self._video.tracker.idle()

    def open(self) -> None:
        if self._open:
            return
        self._open = True
        self._failures = 0
        self.log.info("connecting to the camera at {url}", url=self.redacted_url)
        self._start()

    def close(self) -> None:
        was_open, self._open = self._open, False
        self._generation += 1
        self._cancel_retry()
        waiting, self._waiting_idle = self._waiting_idle, None
        if waiting is not None:
            waiting.cancel()
        self._teardown()
        self._hub_waiting = False
        self._unanswered_since = None
        if was_open:
            self.log.info("camera link closed ({url})", url=self.redacted_url)
        self._set_disconnected()

    def request_frame(self) -> None:
        if not self._open or self._mode != STILL or not self.connected:
            return  # until connected, the source fetches (and retries) by itself
        if self._announcing:
            # Asked on source_connected: the frame reported next answers it, and the
            # next request must wait a frame interval after that answer (CONTRACT §7).
            return
        self._hub_waiting = True
        if not self._busy():
            self._start()

    def move(self, direction: str) -> None:
        """No pan/tilt on an HTTP camera (the hub refuses such commands first)."""

    def move_to(self, x: int, y: int) -> None:
        """No pan/tilt on an HTTP camera."""

    def query_position(self) -> None:
        """No pan/tilt on an HTTP camera."""

    def set_light(self, on: bool) -> Deferred[None]:
        return fail(CommandFailed("this camera has no light to switch"))

    # -- one connection at a time ---------------------------------------------------------

    def _busy(self) -> bool:
        return self._request is not None or self._sink is not None or self._waiting_idle is not None

    def _start(self) -> None:
        """Open the video connection once the previous one is gone."""
        if not self._open or self._busy():
            return
        self._cancel_retry()
        idle = self._video.tracker.idle()
        if idle.called:
            self._connect()
            return
        self._waiting_idle = idle
        idle.addCallbacks(lambda _: self._idle(idle), lambda _: None)

    def _idle(self, waiter: Deferred[None]) -> None:
        if waiter is self._waiting_idle:
            self._waiting_idle = None
            if self._open:
                self._connect()

    def _connect(self) -> None:
        self._generation += 1
        generation = self._generation
        self._link_frames = 0
        self._link_invalid = 0
        self._request_started = self._reactor.seconds()
        if self._unanswered_since is None:
            self._unanswered_since = self._request_started
        self._opened_before = self._video.tracker.opened
        self._request = request = self._request_video()
        request.addCallbacks(
            lambda response: self._answered(generation, response),
            lambda failure: self._request_failed(generation, failure),
        )

    def _request_video(self) -> Deferred[IResponse]:
        """The response of the video request (overridden for the ESP32's two ports)."""
        return self._video.get(self.url, self._stall)

    def _answered(self, generation: int, response: IResponse) -> None:
        if generation != self._generation:
            discard(response)
            return
        self._request = None
        if response.code != 200:
            discard(response)
            self._drop(generation, self._status_problem(response))
            return
        kind = self._mode
        declared = content_type(response)
        if kind is None:
            kind = detect_kind(declared)
            if kind is None:
                discard(response)
                self._drop(generation, f"not an image nor an MJPEG stream ({_shown(declared)})")
                return
            self._mode = kind
            self.log.info(
                "camera at {url} is of kind {kind} ({content_type})",
                url=self.redacted_url,
                kind=kind,
                content_type=_shown(declared),
            )
            self._listener.capabilities_changed()
            if generation != self._generation:  # closed meanwhile
                discard(response)
                return
        if kind == STREAM:
            self._stream(generation, response, declared)
        else:
            self._still(generation, response)

    def _status_problem(self, response: IResponse) -> str:
        text = f"the camera answered {status_text(response)}"
        if response.code == 401:
            has = bool(self.url.userinfo)
            return text + (": wrong user name or password" if has else ": it wants a password")
        return text

    def _request_failed(self, generation: int, failure: Failure) -> None:
        if generation != self._generation:
            return
        self._request = None
        self._drop(generation, self._failure_reason(failure))

    def _failure_reason(self, failure: Failure) -> str:
        if failure.check(TimeoutError) and self._video.tracker.opened > self._opened_before:
            if self._mode == STILL:
                return f"the camera took the connection but sent no answer within {self._stall:g} s"
            return (
                f"stream busy: the camera took the connection but sent no answer within "
                f"{self._stall:g} s (another client may hold its only stream)"
            )
        return describe(failure, self._stall)

    # -- an MJPEG stream ------------------------------------------------------------------

    def _stream(self, generation: int, response: IResponse, declared: bytes) -> None:
        boundary = boundary_from_content_type(declared)
        if boundary is None:
            discard(response)
            self._drop(generation, f"not an MJPEG stream ({_shown(declared)})")
            return
        self._parser = MJPEGParser(
            boundary,
            lambda part: self._part(generation, part),
            max_part_size=self.settings.max_frame_bytes,
            max_header_size=self.settings.max_header_bytes,
            on_discard=lambda why: self._part_discarded(generation, why),
        )
        self._sink = BodySink(self._parser.feed, lambda why: self._stream_ended(generation, why))
        self._watchdog = self._reactor.callLater(self._stall, self._stalled, generation)
        response.deliverBody(self._sink)

    def _part(self, generation: int, part: bytes) -> None:
        if generation != self._generation:
            return
        if len(part) <= self.settings.max_frame_bytes and is_jpeg(part):
            if self._watchdog is not None and self._watchdog.active():
                self._watchdog.reset(self._stall)
            self._valid_frame(generation, part)
        else:
            self._invalid("sent a part that is not a JPEG")

    def _part_discarded(self, generation: int, why: str) -> None:
        if generation == self._generation:
            self.stats.discarded += 1
            self._link_invalid += 1
            self._complain(f"skipped {why}")

    def _stalled(self, generation: int) -> None:
        self._watchdog = None
        if generation != self._generation:
            return
        if self._link_frames:
            why = f"stalled: no valid frame for {self._stall:g} s"
        else:
            why = f"no valid frame within {self._stall:g} s of the answer"
            parser = self._parser
            if parser is not None and not parser.parts and not self._link_invalid:
                why += f" (no part with boundary {parser.boundary!r} found)"
            elif self._link_invalid:
                why += f" ({self._link_invalid} parts were not JPEGs)"
        self._drop(generation, why)

    def _stream_ended(self, generation: int, reason: Failure) -> None:
        if generation != self._generation:
            return
        self._sink = None
        why = "the camera ended the stream" if ended_cleanly(reason) else "the stream broke off"
        self._drop(generation, why)

    # -- one JPEG per request -------------------------------------------------------------------

    def _still(self, generation: int, response: IResponse) -> None:
        # The whole exchange, answer and image, gets the stall timeout.
        elapsed = self._reactor.seconds() - self._request_started
        body = with_timeout(
            read_body(response, self.settings.max_frame_bytes),
            max(0.001, self._stall - elapsed),
            self._reactor,
        )
        self._request = body
        body.addCallbacks(
            lambda data: self._still_answered(generation, data, content_type(response)),
            lambda failure: self._image_failed(generation, failure),
        )

    def _image_failed(self, generation: int, failure: Failure) -> None:
        if generation != self._generation:
            return
        self._request = None
        if failure.check(TimeoutError):
            why = f"the image did not come within {self._stall:g} s of the request"
        else:
            why = describe(failure, self._stall)
        self._drop(generation, why)

    def _still_answered(self, generation: int, data: bytes, declared: bytes) -> None:
        if generation != self._generation:
            return
        self._request = None
        if is_jpeg(data):
            self._hub_waiting = False
            self._valid_frame(generation, data)
        else:
            self.stats.invalid += 1
            self._drop(generation, f"the answer is not a JPEG ({_shown(declared)})")

    # -- frames and failures ----------------------------------------------------------------------

    def _valid_frame(self, generation: int, data: bytes) -> None:
        self._link_frames += 1
        self._failures = 0
        self._unanswered_since = None
        if not self.connected:
            self.connected = True
            self.last_error = None
            self.log.info("camera connected at {url}", url=self.redacted_url)
            self._announcing = True
            try:
                self._listener.source_connected()
            finally:
                self._announcing = False
            if generation != self._generation:
                return  # the listener closed the source
        self._listener.frame_received(data)

    def _invalid(self, why: str) -> None:
        self.stats.invalid += 1
        self._link_invalid += 1
        self._complain(why)

    def _drop(self, generation: int, why: str) -> None:
        """Give the current connection up (closing it now) and decide what comes next."""
        if generation != self._generation:
            return
        self._generation += 1
        self._teardown()
        self.stats.failures += 1
        self.last_error = why
        if not self._open:
            return
        if self._mode == STILL and self.connected and not self._overdue():
            # One failed image is not a lost camera: answer the hub, which asks again.
            self._complain(why)
            if self._hub_waiting:
                self._hub_waiting = False
                self._listener.frame_request_failed()
            return
        if self.connected:
            self._complain(f"camera link lost: {why}")
        else:
            self._complain(why)
        self._set_disconnected()
        if self._open:
            self._schedule_retry()

    def _overdue(self) -> bool:
        since = self._unanswered_since
        return since is not None and self._reactor.seconds() - since >= self._stall

    def _teardown(self) -> None:
        """Stop everything of the current connection and abort it."""
        request, self._request = self._request, None
        if request is not None:
            request.cancel()
        parser, self._parser = self._parser, None
        if parser is not None:
            parser.close()
        self._sink = None
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.active():
            watchdog.cancel()
        self._video.tracker.abort_all()

    def _set_disconnected(self) -> None:
        self._hub_waiting = False
        self._unanswered_since = None
        if self.connected:
            self.connected = False
            self._listener.source_disconnected()

    def _schedule_retry(self) -> None:
        self._cancel_retry()
        delay = self._retry_policy(self._failures)
        self._failures += 1
        if self._open and not self._busy() and self._retry_call is None:
            self._retry_call = self._reactor.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self._start()

    def _cancel_retry(self) -> None:
        call, self._retry_call = self._retry_call, None
        if call is not None and call.active():
            call.cancel()

    def _complain(self, why: str) -> None:
        self._complaints.warn(f"camera {self.redacted_url}: {why}")


def _shown(declared: bytes) -> str:
    if not declared:
        return "no Content-Type"
    return "Content-Type " + declared[:80].decode("latin-1")


class MJPEGSource(HttpCameraSource):
    """Kind ``mjpeg``: any ``http(s)`` URL of a ``multipart/x-mixed-replace`` JPEG stream."""

    def __init__(
        self,
        reactor: IReactorTime,
        listener: ISourceListener,
        settings: HttpSourceSettings,
        *,
        retry_policy: Callable[[int], float] = RETRY_POLICY,
    ) -> None:
        super().__init__(reactor, listener, settings, kind=STREAM, retry_policy=retry_policy)


class JPEGSource(HttpCameraSource):
    """Kind ``jpeg``: any ``http(s)`` URL that answers one JPEG per GET; paced by the hub."""

    def __init__(
        self,
        reactor: IReactorTime,
        listener: ISourceListener,
        settings: HttpSourceSettings,
        *,
        retry_policy: Callable[[int], float] = RETRY_POLICY,
    ) -> None:
        super().__init__(reactor, listener, settings, kind=STILL, retry_policy=retry_policy)
