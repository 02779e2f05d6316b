"""Passwords in camera URLs: where one is, and the URL as logs and pages may show it.

One splitter for every place that hides or restores a password, so that what a page
shows (``***``) and what its form restores always agree. The user info ends at the
first ``/``, ``?`` or ``#`` after the scheme (RFC 3986), at its last ``@``.
"""

from __future__ import annotations

#: What a password is shown as.
HIDDEN = "***"


def split_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(everything before the password, the password, everything after it)`` for a URL
    with a password in its user info (as written, still percent-encoded), else None."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min([i for i in map(rest.find, "/?#") if i >= 0], default=len(rest))
    userinfo, at, _host = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return None
    start = len(scheme) + len(sep) + userinfo.index(":") + 1
    stop = len(scheme) + len(sep) + len(userinfo)
    return url[:start], url[start:stop], url[stop:]


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs, lists and pages)."""
    parts = split_userinfo(url)
    return url if parts is None else f"{parts[0]}{HIDDEN}{parts[2]}"
