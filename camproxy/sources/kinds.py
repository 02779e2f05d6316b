"""Camera kinds (CONTRACT §7): the default kind of a URL, and the source for a kind.

``ws``/``wss`` is ``robocam``; an ``http(s)`` base URL with no path (or ``/``) and no query
is ``esp32``; any other ``http(s)`` URL is ``mjpeg`` or ``jpeg``, detected from the
``Content-Type`` of its first answer (:data:`DETECT`, i.e. ``None``).
"""

from __future__ import annotations

from collections.abc import Callable

from hyperlink import URL
from twisted.internet.interfaces import IReactorTime

from camproxy.hub.source import Capabilities, ICameraSource, ISourceListener
from camproxy.sources.esp32 import Esp32Source, is_base_url
from camproxy.sources.http import RETRY_POLICY, HttpSourceSettings
from camproxy.sources.httpcam import HttpCameraSource, JPEGSource, MJPEGSource
from camproxy.urls import redacted_url

KINDS = ("robocam", "esp32", "mjpeg", "jpeg")
HTTP_KINDS = ("esp32", "mjpeg", "jpeg")
#: The "kind" of a URL whose kind is told by its first answer.
DETECT = None

#: Builds the RoboCam link, which this package does not: ``(listener, retry_policy)
#: -> source``; a ``None`` policy means the link's own.
RobocamFactory = Callable[[ISourceListener, Callable[[int], float] | None], ICameraSource]


def _parse(url: str) -> URL | None:
    try:
        return URL.from_text(url)
    except Exception:
        return None


def default_kind(url: str) -> str | None:
    """The kind of a camera given without one: ``robocam``, ``esp32``, or ``None``
    (detect ``mjpeg``/``jpeg`` from the first answer). Raises ``ValueError`` for a URL
    that is no camera's."""
    problem = url_problem(url, None)
    if problem is not None:
        raise ValueError(problem)
    parsed = _parse(url)
    assert parsed is not None
    if parsed.scheme in ("ws", "wss"):
        return "robocam"
    return "esp32" if is_base_url(parsed) else DETECT


def url_problem(url: str, kind: str | None) -> str | None:
    """Why ``url`` cannot be a camera of ``kind`` (``None``: any kind), or ``None`` if it can.

    One line, with the password hidden, fit for the CLI and the admin page.
    """
    parsed = _parse(url)
    shown = redacted_url(url)
    if parsed is None or not parsed.host:
        return f"not a URL with a host: {shown}"
    if kind is not None and kind not in KINDS:
        return f"unknown camera kind {kind!r} (one of {', '.join(KINDS)})"
    if parsed.scheme in ("ws", "wss"):
        if kind not in (None, "robocam"):
            article = "an" if kind in ("esp32", "mjpeg") else "a"
            return f"{article} {kind} camera needs an http(s) URL, not {shown}"
        return None
    if parsed.scheme not in ("http", "https"):
        return f"a camera URL is ws(s):// or http(s)://, not {shown}"
    if kind == "robocam":
        return f"a robocam camera needs a ws(s) URL, not {shown}"
    if kind == "esp32" and not is_base_url(parsed):
        return f"an esp32 camera is given by its base URL, http(s)://HOST[:PORT], not {shown}"
    return None


def make_source(
    reactor: IReactorTime,
    listener: ISourceListener,
    settings: HttpSourceSettings,
    kind: str | None = None,
    *,
    robocam: RobocamFactory | None = None,
    retry_policy: Callable[[int], float] | None = None,
) -> ICameraSource:
    """The source for a camera of ``kind`` (``None``: the URL's default kind) at
    ``settings.url``. ``robocam`` builds RoboCam links; without it a ``ws(s)`` camera is
    a ``ValueError``, as is a URL that does not fit the kind (see :func:`url_problem`).
    ``retry_policy`` (seconds to wait after the n-th failed attempt) defaults to the
    kind's own."""
    problem = url_problem(settings.url, kind)
    if problem is not None:
        raise ValueError(problem)
    if kind is None:
        kind = default_kind(settings.url)
    if kind == "robocam":
        if robocam is None:
            raise ValueError("robocam cameras are built by the RoboCam link")
        return robocam(listener, retry_policy)
    retry_policy = retry_policy or RETRY_POLICY
    if kind == "esp32":
        return Esp32Source(reactor, listener, settings, retry_policy=retry_policy)
    if kind == "mjpeg":
        return MJPEGSource(reactor, listener, settings, retry_policy=retry_policy)
    if kind == "jpeg":
        return JPEGSource(reactor, listener, settings, retry_policy=retry_policy)
    return HttpCameraSource(reactor, listener, settings, kind=DETECT, retry_policy=retry_policy)


def likely_capabilities(kind: str | None) -> Capabilities:
    """What a camera of ``kind`` can usually do, before its link says (a cluster follower
    shows this until the holder reports the camera's own)."""
    if kind == "robocam":
        return Capabilities(pan_tilt=True, light=True)
    if kind == "esp32":
        return Capabilities(light=True)
    return Capabilities()
