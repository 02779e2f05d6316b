"""Which browser origins may open the viewer socket (CONTRACT §3)."""

from __future__ import annotations

from collections.abc import Iterable

from hyperlink import DecodedURL

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin, defaults filled in; None if malformed."""
    try:
        url = DecodedURL.from_text(origin.strip())
    except (ValueError, TypeError):
        return None
    scheme = url.scheme.lower()
    if scheme not in DEFAULT_PORTS or not url.host:
        return None
    try:
        port = url.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, url.host.lower(), port


def own_origin(host_header: str, secure: bool) -> tuple[str, str, int] | None:
    """The origin of a page served to this ``Host`` with this scheme."""
    scheme = "https" if secure else "http"
    if not host_header or any(ch in host_header for ch in "/?#@ "):
        return None
    return normalize_origin(f"{scheme}://{host_header}")


class OriginPolicy:
    """The proxy's own origin, plus those named with ``--allowed-origin``."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self._allowed = set()
        for origin in allowed:
            normalized = normalize_origin(origin)
            if normalized is None:
                raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
            self._allowed.add(normalized)

    def allows(self, origin: str | None, host_header: str | None, secure: bool) -> bool:
        """Whether a handshake with this ``Origin`` header may proceed.

        No ``Origin`` at all is a non-browser client, which authenticates by cookie alone.
        """
        if origin is None:
            return True
        normalized = normalize_origin(origin)
        if normalized is None:
            return False
        if normalized in self._allowed:
            return True
        return normalized == own_origin(host_header or "", secure)


def is_valid_origin(origin: str) -> bool:
    return normalize_origin(origin) is not None
