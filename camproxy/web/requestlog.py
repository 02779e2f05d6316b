"""Requests as CamProxy sees them: the real client behind a trusted proxy, one access
log line each (method, path, status, duration; never a token), and request metrics."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web.server import Request, Site

from camproxy.ops.metrics import DaemonMetrics
from camproxy.web.proxies import TrustedProxies

SECRET_QUERY = re.compile(r"((?:^|[?&;])(?:token|access_token|password|csrf_token)=)[^&;#]*", re.I)


def redacted(uri: str) -> str:
    """The request URI with secrets in its query replaced, fit for a log."""
    return SECRET_QUERY.sub(r"\1[redacted]", uri)


class CamProxyRequest(Request):
    """A request that knows the trusted proxies and reports itself when finished."""

    log = Logger()
    proxies = TrustedProxies()
    metrics: DaemonMetrics | None = None
    _started = 0.0
    _clock: Any = None

    def _peer_host(self) -> str:
        peer = super().getClientAddress()
        return str(getattr(peer, "host", ""))

    def getClientAddress(self) -> Any:
        peer = super().getClientAddress()
        host = getattr(peer, "host", None)
        if host is None or not self.proxies.trusts(host):
            return peer
        forwarded = self.getHeader(b"x-forwarded-for")
        real = self.proxies.client_address(host, forwarded.decode("latin-1") if forwarded else None)
        return (IPv6Address if ":" in real else IPv4Address)("TCP", real, 0)

    def isSecure(self) -> bool:
        proto = self.getHeader(b"x-forwarded-proto")
        return self.proxies.is_secure(
            self._peer_host(), super().isSecure(), proto.decode("latin-1") if proto else None
        )

    def process(self) -> None:
        self._clock = self.channel.site.reactor  # type: ignore[attr-defined]
        self._started = self._clock.seconds()
        self.notifyFinish().addBoth(self._finished)
        super().process()

    def _finished(self, result: object) -> None:
        duration = self._clock.seconds() - self._started
        method = self.method.decode("ascii", "replace")
        status = self.code if result is None else 499  # the client went away first
        self.log.info(
            '{client} "{method} {path}" {status} {duration_ms:.1f}ms {size}B',
            client=getattr(self.getClientAddress(), "host", "-"),
            method=method,
            path=redacted(self.uri.decode("latin-1")),
            status=status,
            duration_ms=duration * 1000,
            size=self.sentLength,
        )
        if self.metrics is not None:
            self.metrics.requests.labels(method=method, status=str(status)).inc()
            self.metrics.latency.labels(method=method).observe(duration)


class CamProxySite(Site):
    """Twisted's own access log is replaced by :class:`CamProxyRequest`'s."""

    def __init__(
        self, resource: Any, reactor: Any, proxies: TrustedProxies, metrics: DaemonMetrics
    ) -> None:
        super().__init__(resource, reactor=reactor)
        self.requestFactory = type(  # type: ignore[assignment]
            "BoundCamProxyRequest", (CamProxyRequest,), {"proxies": proxies, "metrics": metrics}
        )

    def log(self, request: Any) -> None:
        """See :meth:`CamProxyRequest._finished`."""
