"""Which browser origins may open the viewer socket (CONTRACT §3).

Checked on every WebSocket handshake, so it is cheap: origins are split with
``urllib.parse`` (not a full URL parser) and the few distinct ``Origin``/``Host`` pairs a
site sees are remembered in a small bounded memo per policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_MEMO_SIZE = 1024

Origin = tuple[str, str, int]


def normalize_origin(origin: str) -> Origin | None:
    """``(scheme, host, port)`` of an origin, defaults filled in; None if malformed.

    ``null`` (sandboxed frames, ``file://`` pages) and anything with a path, query,
    user info or an unknown scheme is malformed here.
    """
    text = origin.strip()
    if not text or any(ch in text for ch in " \t\\"):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme not in DEFAULT_PORTS
        or not host
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    return scheme, host.lower(), port or DEFAULT_PORTS[scheme]


def own_origin(host_header: str, secure: bool) -> Origin | None:
    """The origin of a page served to this ``Host`` with this scheme."""
    scheme = "https" if secure else "http"
    if not host_header or any(ch in host_header for ch in "/?#@ "):
        return None
    return normalize_origin(f"{scheme}://{host_header}")


class OriginPolicy:
    """The proxy's own origin, plus those named with ``--allowed-origin``."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self._allowed: set[Origin] = set()
        for origin in allowed:
            normalized = normalize_origin(origin)
            if normalized is None:
                raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
            self._allowed.add(normalized)
        self._memo: dict[tuple[str, str, bool], bool] = {}

    def allows(self, origin: str | None, host_header: str | None, secure: bool) -> bool:
        """Whether a request with this ``Origin`` header may proceed.

        No ``Origin`` at all is a non-browser client, which authenticates by cookie alone.
        """
        if origin is None:
            return True
        key = (origin, host_header or "", secure)
        answer = self._memo.get(key)
        if answer is None:
            normalized = normalize_origin(origin)
            answer = normalized is not None and (
                normalized in self._allowed or normalized == own_origin(key[1], secure)
            )
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = answer
        return answer


def is_valid_origin(origin: str) -> bool:
    return normalize_origin(origin) is not None
