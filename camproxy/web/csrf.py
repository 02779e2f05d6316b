"""CSRF tokens: HMAC-signed with SECRET_KEY, bound to a purpose and expiring.

Forms of a logged-in user carry a token bound to their session, so no other site can
obtain one. The login form has no session yet; its token is bound to the purpose only,
and ``/login`` additionally refuses cross-site requests by their ``Origin``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from twisted.internet.interfaces import IReactorTime


class CsrfTokens:
    """Issues and checks tokens of the form ``issued.nonce.signature``."""

    def __init__(self, secret: str, clock: IReactorTime, lifetime: float = 86400.0) -> None:
        self._key = hashlib.sha256(b"camproxy-csrf:" + secret.encode()).digest()
        self._clock = clock
        self._lifetime = lifetime

    def _sign(self, binding: str, issued: str, nonce: str) -> str:
        message = f"{binding}|{issued}|{nonce}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def issue(self, binding: str) -> str:
        issued = str(int(self._clock.seconds()))
        nonce = secrets.token_urlsafe(12)
        return f"{issued}.{nonce}.{self._sign(binding, issued, nonce)}"

    def valid(self, token: str | None, binding: str) -> bool:
        if not token or token.count(".") != 2:
            return False
        issued, nonce, signature = token.split(".")
        if not issued.isdigit():
            return False
        age = self._clock.seconds() - int(issued)
        if not -60 <= age <= self._lifetime:
            return False
        return hmac.compare_digest(signature, self._sign(binding, issued, nonce))
