"""The RoboCam camera source: an Autobahn WebSocket client kept up by a ``ClientService``.

The protocol only parses and forwards; :class:`RoboCamSource` speaks the firmware's
dialect on the hub's behalf (``getframe``, moves, ``get_pos``, the light), opens and
closes on the hub's demand (idle close) and reconnects with backoff while open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import ConnectionResponse
from hyperlink import URL
from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS, platformTrust
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from camproxy.hub.source import (
    Capabilities,
    CommandFailed,
    ICameraSource,
    ISourceListener,
    Limits,
)
from camproxy.sources.complaints import LogLimiter
from camproxy.sources.http import RETRY_POLICY, describe
from camproxy.sources.robocam import dialect


@attrs.frozen
class CameraSettings:
    """How to reach a camera and how strictly to treat what it sends."""

    url: str
    max_frame_bytes: int = 4 * 1024 * 1024
    connect_timeout: float = 5.0
    ping_interval: float = 5.0
    ping_timeout: float = 5.0
    #: What a ``wss://`` camera is checked against (see :mod:`camproxy.trust`; None:
    #: the system's CAs).
    trust_root: Any = None


class CameraProtocol(WebSocketClientProtocol):
    """Forwards the camera's messages to the hub; nothing else."""

    factory: CameraFactory
    #: Autobahn warns on every drop and failure, which a flapping camera turns into a
    #: flood; :class:`CameraLink` reports the same once, with the reason, rate-limited.
    log = txaio.make_logger(level="error")  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's own dataReceived first formats a debug line (colours and all, with
        # debug logging off) for every read: a 30 KB frame from a camera over WiFi comes in
        # twenty reads or more, and that formatting was most of a frame's cost on its way in.
        self._dataReceived(data)

    def onConnect(self, response: ConnectionResponse) -> None:
        self.factory.link.log.info("camera handshake done with {peer}", peer=response.peer)

    def onOpen(self) -> None:
        self.factory.link.protocol_opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.factory.link.binary_received(payload)
        else:
            # Garbage text from a flaky camera is ignored, not a reason to drop the link.
            self.factory.link.text_received(payload.decode("utf-8", errors="replace"))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.failedByMe and self.localCloseCode is not None:
            # Autobahn reports the camera's answering close code (1000); ours says why.
            code, local_reason = self.localCloseCode, self.localCloseReason
            reason = local_reason.decode("utf-8", "replace") if local_reason else None
        self.factory.link.protocol_closed(self, wasClean, code, reason)


class CameraFactory(WebSocketClientFactory):
    protocol = CameraProtocol  # type: ignore[assignment]

    def __init__(self, link: RoboCamSource, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.link = link


def camera_endpoint(reactor: Any, settings: CameraSettings) -> IStreamClientEndpoint:
    """A TCP (``ws://``) or certificate-checked TLS (``wss://``) endpoint for the camera."""
    url = URL.from_text(settings.url)
    secure = url.scheme == "wss"
    port = url.port or (443 if secure else 80)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, url.host, port, timeout=settings.connect_timeout
    )
    if secure:
        trust = settings.trust_root or platformTrust()
        endpoint = wrapClientTLS(optionsForClientTLS(url.host, trustRoot=trust), endpoint)
    return endpoint


@implementer(IStreamClientEndpoint)
class _NotingEndpoint:
    """Connects through ``endpoint``, telling ``noted`` why an attempt failed."""

    def __init__(self, endpoint: IStreamClientEndpoint, noted: Callable[[str], None]) -> None:
        self._endpoint = endpoint
        self._noted = noted

    def connect(self, factory: Any) -> Deferred[Any]:
        def failed(failure: Failure) -> Failure:
            self._noted(describe(failure))
            return failure

        return self._endpoint.connect(factory).addErrback(failed)


#: The firmware eases its servos into place; ask where they went once this has passed.
POSITION_SETTLE = 1.0


@implementer(ICameraSource)
class RoboCamSource:
    """The one WebSocket to a RoboCam camera, shared by all its viewers."""

    log = Logger()
    kind = "robocam"
    capabilities = Capabilities(pan_tilt=True, light=True)
    paced = True

    def __init__(
        self,
        reactor: IReactorTime,
        listener: ISourceListener,
        settings: CameraSettings,
        endpoint: IStreamClientEndpoint | None = None,
        retry_policy: Callable[[int], float] | None = None,
    ) -> None:
        self.listener = listener
        #: Why the last attempt failed ("connection refused", a close code); ``None``
        #: once the camera answers. The probe reports it.
        self.last_error: str | None = None
        self.settings = settings
        self._reactor = reactor
        self._protocol: CameraProtocol | None = None
        self._answered = False
        self._settle_call: IDelayedCall | None = None
        self._complaints = LogLimiter(reactor, self.log)
        self.factory = CameraFactory(self, url=settings.url, reactor=reactor)
        self.factory.setProtocolOptions(
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
            openHandshakeTimeout=settings.connect_timeout,
            closeHandshakeTimeout=2.0,
            maxMessagePayloadSize=settings.max_frame_bytes,
            utf8validateIncoming=False,
            failByDrop=False,
        )
        self._service = ClientService(
            _NotingEndpoint(endpoint or camera_endpoint(reactor, settings), self._note_failure),
            self.factory,
            retryPolicy=retry_policy or RETRY_POLICY,
            clock=reactor,
            prepareConnection=None,
        )

    @property
    def connected(self) -> bool:
        """Whether the camera has answered on the current connection."""
        return self._protocol is not None and self._answered

    def _note_failure(self, why: str) -> None:
        self.last_error = why

    def complain(self, message: str) -> None:
        self._complaints.warn(message)

    # -- ICameraSource -----------------------------------------------------------

    def open(self) -> None:
        if not self._service.running:
            self.log.info("connecting to the camera at {url}", url=self.settings.url)
            self._service.startService()

    def close(self) -> None:
        self._cancel_settle()
        if self._protocol is not None:
            # A WebSocket goodbye before the TCP close, so the firmware frees its slot.
            self._protocol.sendClose(1000, "camproxy closing the link")
        if self._service.running:
            self._service.stopService()

    def request_frame(self) -> None:
        self._send(dialect.GETFRAME)

    def move(self, direction: str) -> None:
        self._send(direction)

    def move_to(self, x: int, y: int) -> None:
        self._send(dialect.move_to(x, y))
        # The firmware echoes the position from before the move; ask where it went
        # now, and again once the servos have eased into place.
        self._send(dialect.GET_POS)
        self._cancel_settle()
        self._settle_call = self._reactor.callLater(POSITION_SETTLE, self._settle_query)

    def query_position(self) -> None:
        self._send(dialect.GET_POS)

    def set_light(self, on: bool) -> Deferred[None]:
        # The firmware does not answer; the proxy reports the state it set.
        if self._protocol is None:
            return fail(CommandFailed("camera not connected"))
        self._send(dialect.light(on))
        return succeed(None)

    # -- the protocol's events -------------------------------------------------------

    def _send(self, text: str) -> None:
        if self._protocol is not None:
            self._protocol.sendMessage(text.encode("utf-8"), isBinary=False)

    def _settle_query(self) -> None:
        self._settle_call = None
        self._send(dialect.GET_POS)

    def _cancel_settle(self) -> None:
        if self._settle_call is not None and self._settle_call.active():
            self._settle_call.cancel()
        self._settle_call = None

    def _camera_answered(self) -> None:
        # The camera counts as connected only once it answers: the firmware accepts a
        # client over its limit and closes it at once, which must not flap the status.
        if not self._answered and self._protocol is not None:
            self._answered = True
            self.last_error = None
            self.listener.source_connected()

    def binary_received(self, payload: bytes) -> None:
        self._camera_answered()
        if not self.listener.frame_received(payload):
            self.complain("camera sent a binary message that is not a JPEG frame")

    def text_received(self, text: str) -> None:
        self._camera_answered()
        message = dialect.parse_camera_text(text)
        if isinstance(message, dialect.Position):
            self.listener.position_reported(message.x, message.y)
        elif isinstance(message, Limits):
            self.listener.limits_reported(message)
        elif isinstance(message, dialect.OutOfBounds):
            self.listener.position_refused()
        elif isinstance(message, dialect.Unrecognized):
            self.log.debug("ignoring unrecognized camera message {text!r}", text=text[:200])

    def protocol_opened(self, protocol: CameraProtocol) -> None:
        self._protocol = protocol
        self._answered = False
        self.log.info("camera connected at {url}", url=self.settings.url)
        # What the firmware is asked on every connect (CONTRACT §1).
        self._send(dialect.GET_LIMITS)
        self._send(dialect.GET_POS)

    def protocol_closed(
        self, protocol: CameraProtocol, clean: bool, code: int | None, reason: str | None
    ) -> None:
        # One line per distinct failure, rate-limited: a flapping camera must not flood the log.
        why = f"code={code}, reason={reason or 'none given'}"
        if not (self._protocol is protocol and self._answered):
            self.last_error = f"the WebSocket closed ({why})"
        if self._protocol is not protocol:
            if self._service.running:
                self.complain(f"camera connection failed ({why})")
            return
        self._protocol = None
        answered, self._answered = self._answered, False
        self._cancel_settle()
        self.listener.source_disconnected()
        if not self._service.running:
            self.log.info("camera link closed")
        elif not answered:
            self.complain(f"camera link closed before the camera answered anything ({why})")
        else:
            self.complain(f"camera link lost ({why})")
