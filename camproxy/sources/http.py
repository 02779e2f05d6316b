"""The HTTP client side of the camera sources: settings, requests, bodies, reasons.

Twisted's own ``Agent`` over an endpoint factory (injected for the demo's UNIX sockets
and for tests), without persistent connections; every connection it makes is tracked,
so a source can tell when its previous connection to the camera is really gone before
it opens the next, and can abort it. Credentials come from the URL's userinfo and are
sent as HTTP Basic, never to another origin after a redirect, never logged.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast
from urllib.parse import unquote

import attrs
from hyperlink import URL
from twisted.application.internet import backoffPolicy
from twisted.internet import error as neterror
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, clientFromString, wrapClientTLS
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import platformTrust
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

#: First retry within a second, then doubling up to about five seconds, forever (every
#: camera kind, the RoboCam link too).
RETRY_POLICY = backoffPolicy(
    initialDelay=0.25, maxDelay=4.5, factor=2.0, jitter=lambda: random.uniform(0, 0.5)
)

#: Redirects followed before giving up.
MAX_REDIRECTS = 3

USER_AGENT = b"CamProxy"

T = TypeVar("T")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@attrs.frozen
class HttpSourceSettings:
    """How to reach an HTTP camera and how strictly to treat what it sends.

    :ivar url: the camera's URL as configured (may hold ``user:password@``).
    :ivar max_fps: the camera's frame rate limit; only lengthens the stall timeout.
    :ivar max_frame_bytes: a larger part or image is not a frame (and is not buffered).
    :ivar connect_timeout: seconds to wait for the TCP (and TLS) connection.
    :ivar stall_timeout: seconds without a valid frame after which the link counts as
        down and is dropped; lengthened to ``3 / max_fps`` when that is longer.
    :ivar request_timeout: seconds for a small request (``/status``, ``/control``).
    :ivar trust_root: what ``https`` cameras are checked against (see
        :mod:`camproxy.trust`; None: the system's CAs).
    :ivar endpoint_factory: where connections go (default: TCP, or TLS for ``https``);
        the demo routes its emulated cameras to UNIX sockets through this.
    :ivar max_header_bytes: cap on one MJPEG part's headers.
    """

    url: str
    max_fps: float | None = None
    max_frame_bytes: int = 4 * 1024 * 1024
    connect_timeout: float = 5.0
    stall_timeout: float = 5.0
    request_timeout: float = 5.0
    trust_root: Any = None
    endpoint_factory: IAgentEndpointFactory | None = None
    max_header_bytes: int = 16 * 1024

    @property
    def effective_stall_timeout(self) -> float:
        """5 s, or three frame intervals at ``max_fps`` when that is longer (CONTRACT §7)."""
        if self.max_fps and self.max_fps > 0:
            return max(self.stall_timeout, 3.0 / self.max_fps)
        return self.stall_timeout


class HttpError(Exception):
    """A request to the camera failed; the message is one line fit for a log or a user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def status_text(response: IResponse) -> str:
    """``401 Unauthorized``, say."""
    phrase = response.phrase.decode("latin-1", "replace") if response.phrase else ""
    return f"{response.code} {phrase}".strip()


def describe(failure: Failure, timeout: float | None = None) -> str:
    """One line saying why a request failed."""
    value = failure.value
    if isinstance(value, HttpError):
        return str(value)
    if isinstance(value, neterror.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, neterror.DNSLookupError):
        return "host not found"
    if isinstance(value, TimeoutError | neterror.TimeoutError):
        if timeout is not None:
            return f"no answer within {timeout:g} s"
        return "timed out"
    if isinstance(value, neterror.ConnectError):
        return f"cannot connect ({_one_line(value)})"
    if isinstance(value, ResponseNeverReceived | ResponseFailed):
        for reason in value.reasons:
            if _is_tls_error(reason):
                return f"TLS failed: {_one_line(reason.value)}"
        if isinstance(value, ResponseNeverReceived):
            return "the camera closed the connection without an answer"
        return "the answer broke off in its head (closed, malformed, or a line over 16 KiB)"
    if isinstance(value, CancelledError):
        return "cancelled"
    return f"{type(value).__name__}: {_one_line(value)}"


def _is_tls_error(reason: Failure) -> bool:
    return type(reason.value).__module__.startswith("OpenSSL")


def _one_line(value: object) -> str:
    text = " ".join(str(value).split())
    return text[:200] or type(value).__name__


def basic_credentials(url: URL) -> bytes | None:
    """The ``Authorization`` value for the userinfo of ``url``, if it has any."""
    if not url.userinfo:
        return None
    user, _, password = url.userinfo.partition(":")
    token = f"{unquote(user)}:{unquote(password)}".encode()
    return b"Basic " + base64.b64encode(token)


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), url.host.lower(), url.port)


# -- connections -----------------------------------------------------------------------


class ConnectionTracker:
    """The live connections made through one client, to wait for them or abort them."""

    def __init__(self) -> None:
        self._live: set[IProtocol] = set()
        self._idle: list[Deferred[None]] = []
        #: Connections ever made, and the most that were live at once (for tests).
        self.opened = 0
        self.most_at_once = 0

    @property
    def live(self) -> int:
        return len(self._live)

    def idle(self) -> Deferred[None]:
        """Fires once no connection is live (at once if none is)."""
        if not self._live:
            return succeed(None)
        waiter: Deferred[None] = Deferred(lambda d: self._idle.remove(d))
        self._idle.append(waiter)
        return waiter

    def abort_all(self) -> None:
        """Close every live connection now, without waiting for the peer."""
        for protocol in list(self._live):
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()

    def _built(self, protocol: IProtocol) -> None:
        self._live.add(protocol)
        self.opened += 1
        self.most_at_once = max(self.most_at_once, len(self._live))
        lost = protocol.connectionLost

        def connectionLost(reason: Failure) -> None:
            try:
                lost(reason)
            finally:
                self._gone(protocol)

        # Twisted's HTTP client offers no hook for the end of its connections, so the
        # protocol's own connectionLost is wrapped, on this instance only.
        protocol.connectionLost = connectionLost  # type: ignore[method-assign]

    def _gone(self, protocol: IProtocol) -> None:
        self._live.discard(protocol)
        if not self._live:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)


@implementer(IProtocolFactory)
class _TrackingFactory:
    def __init__(self, wrapped: IProtocolFactory, tracker: ConnectionTracker) -> None:
        self._wrapped = wrapped
        self._tracker = tracker

    def doStart(self) -> None:
        self._wrapped.doStart()

    def doStop(self) -> None:
        self._wrapped.doStop()

    def buildProtocol(self, addr: Any) -> IProtocol | None:
        protocol = self._wrapped.buildProtocol(addr)
        if protocol is not None:
            self._tracker._built(protocol)
        return protocol


@implementer(IStreamClientEndpoint)
class _TrackingEndpoint:
    def __init__(self, wrapped: IStreamClientEndpoint, tracker: ConnectionTracker) -> None:
        self._wrapped = wrapped
        self._tracker = tracker

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return self._wrapped.connect(_TrackingFactory(protocolFactory, self._tracker))


@implementer(IAgentEndpointFactory)
class _TrackingEndpointFactory:
    def __init__(self, wrapped: IAgentEndpointFactory, tracker: ConnectionTracker) -> None:
        self._wrapped = wrapped
        self._tracker = tracker

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return _TrackingEndpoint(self._wrapped.endpointForURI(uri), self._tracker)


@implementer(IAgentEndpointFactory)
class DirectEndpointFactory:
    """TCP for ``http``; for ``https``, TLS checked against ``trust_root`` (None: the
    system's CAs)."""

    def __init__(self, reactor: Any, connect_timeout: float = 5.0, trust_root: Any = None) -> None:
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root or platformTrust())

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, uri.host, uri.port, timeout=self._connect_timeout
        )
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._policy.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


@implementer(IAgentEndpointFactory)
class RoutedEndpointFactory:
    """Some ``(host, port)`` pairs to fixed endpoints, the rest to ``fallback``.

    For the demo: ``{("democam-esp32", 80): "unix:path=/run/camproxy/esp32-control.sock",
    ("democam-esp32", 81): "unix:path=/run/camproxy/esp32-stream.sock"}`` sends
    ``http://democam-esp32`` to the emulator's UNIX sockets. Values are client endpoint
    descriptions (``clientFromString``) or endpoints.
    """

    def __init__(
        self,
        reactor: Any,
        routes: Mapping[tuple[str, int], str | IStreamClientEndpoint],
        fallback: IAgentEndpointFactory | None = None,
    ) -> None:
        self._reactor = reactor
        self._routes = {(host.lower(), port): to for (host, port), to in routes.items()}
        self._fallback = fallback or DirectEndpointFactory(reactor)

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii") if isinstance(uri.host, bytes) else uri.host
        route = self._routes.get((host.lower(), uri.port))
        if route is None:
            return self._fallback.endpointForURI(uri)
        if isinstance(route, str):
            endpoint: IStreamClientEndpoint = clientFromString(self._reactor, route)
            return endpoint
        return route


class CameraHttpClient:
    """GET requests to one camera: Basic credentials, bounded redirects, a timeout.

    Each client tracks its own connections (:attr:`tracker`), so a source keeps one
    client for its video and another for small requests.
    """

    def __init__(self, reactor: IReactorTime, settings: HttpSourceSettings) -> None:
        self._clock = reactor
        endpoints = settings.endpoint_factory or DirectEndpointFactory(
            reactor, settings.connect_timeout, settings.trust_root
        )
        self.tracker = ConnectionTracker()
        self._agent = Agent.usingEndpointFactory(
            reactor,
            _TrackingEndpointFactory(endpoints, self.tracker),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )

    def get(self, url: URL, timeout: float) -> Deferred[IResponse]:
        """The final response for ``url`` (any status but a redirect), with headers.

        Fails with :class:`HttpError` for a redirect loop or a bad ``Location``, and with
        ``TimeoutError`` when no answer came within ``timeout`` seconds (the connection is
        then aborted). The caller owns the response and must read or discard its body.
        """
        return with_timeout(Deferred.fromCoroutine(self._follow(url)), timeout, self._clock)

    async def _follow(self, url: URL) -> IResponse:
        credentials = basic_credentials(url)
        origin = _origin(url)
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            headers = Headers({b"User-Agent": [USER_AGENT]})
            if current.userinfo:
                authorization = basic_credentials(current)
            elif _origin(current) == origin:
                authorization = credentials
            else:
                authorization = None  # never to another host, port or scheme
            if authorization is not None:
                headers.setRawHeaders(b"Authorization", [authorization])
            target = current.replace(userinfo="", fragment="").to_uri().to_text()
            response: IResponse = await self._agent.request(b"GET", target.encode("ascii"), headers)
            if response.code not in _REDIRECTS:
                return response
            location = response.headers.getRawHeaders(b"location")
            discard(response)
            if not location:
                raise HttpError(f"redirect ({status_text(response)}) without a Location")
            try:
                current = current.click(location[0].decode("latin-1").strip())
            except Exception as exc:
                raise HttpError(f"redirect to a bad Location ({_one_line(exc)})") from exc
            if current.scheme not in ("http", "https"):
                raise HttpError(f"redirect to a {current.scheme or 'relative'} URL")
        raise HttpError(f"more than {MAX_REDIRECTS} redirects")


# -- bodies ---------------------------------------------------------------------------------


class BodySink(Protocol):
    """Receives a response body as it comes and says when it ends."""

    def __init__(
        self, on_data: Callable[[bytes], object], on_end: Callable[[Failure], object]
    ) -> None:
        self._on_data = on_data
        self._on_end = on_end

    def dataReceived(self, data: bytes) -> None:
        self._on_data(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self._on_end(reason)

    def stop(self) -> None:
        """Stop reading and close the connection."""
        _stop(self.transport)


def with_timeout(request: Deferred[T], timeout: float, clock: IReactorTime) -> Deferred[T]:
    """``request``, cancelled after ``timeout`` seconds and then failing with
    ``TimeoutError`` (whatever failure the cancellation caused: Twisted's HTTP client
    reports a cancelled request as ``ResponseNeverReceived``)."""

    def timed_out(result: T | Failure, seconds: float) -> T | Failure:
        if isinstance(result, Failure):
            return Failure(TimeoutError(seconds, "no answer"))
        return result

    request.addTimeout(timeout, clock, onTimeoutCancel=timed_out)
    return request


def _stop(transport: object) -> None:
    # A response body's transport is Twisted's TransportProxyProducer, which can close
    # the connection under it (a no-op once the body is complete).
    if transport is not None:
        cast(ITransport, transport).loseConnection()


def ended_cleanly(reason: Failure) -> bool:
    """Whether a body ended because it was complete (not cut off)."""
    return bool(reason.check(ResponseDone, PotentialDataLoss))


def discard(response: IResponse) -> None:
    """Throw a response's body away and let its (non-persistent) connection close."""

    class _Discard(Protocol):
        def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
            pass

    sink = _Discard()
    response.deliverBody(sink)
    _stop(sink.transport)


def read_body(response: IResponse, limit: int) -> Deferred[bytes]:
    """The whole body, failing with :class:`HttpError` past ``limit`` bytes.

    A body announced larger than the limit is refused before it is read; cancelling the
    Deferred closes the connection.
    """
    length = response.length
    if isinstance(length, int) and length > limit:
        discard(response)
        return fail(HttpError(f"answer of {length} bytes, over the {limit} bytes limit"))
    chunks: list[bytes] = []
    size = [0]
    sink: BodySink

    def cancel(_: Deferred[bytes]) -> None:
        sink.stop()

    result: Deferred[bytes] = Deferred(cancel)

    def data(piece: bytes) -> None:
        if result.called:
            return
        size[0] += len(piece)
        if size[0] > limit:
            sink.stop()
            result.errback(HttpError(f"answer over the {limit} bytes limit"))
            return
        chunks.append(piece)

    def end(reason: Failure) -> None:
        if result.called:
            return
        if ended_cleanly(reason):
            result.callback(b"".join(chunks))
        else:
            result.errback(HttpError("the connection broke during the answer"))

    sink = BodySink(data, end)
    response.deliverBody(sink)
    return result
