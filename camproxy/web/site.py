"""The one resource tree of the site: page routes, machine routes and the viewer socket.

Also the one place that sets the security headers, for every response, and that turns
away viewer sockets from origins that are not allowed (CONTRACT §3: 403, also for
``Origin: null`` and malformed origins, which Autobahn itself would answer with 400).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource

from camproxy.fleet import DEFAULT_CAMERA
from camproxy.web.origins import OriginPolicy
from camproxy.web.rendering import cross_site

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    b"Content-Security-Policy": CONTENT_SECURITY_POLICY.encode(),
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"same-origin",
}


class RefusedOrigin(Resource):
    """403 for a viewer socket from an origin that may not open one."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(403)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"origin not allowed\n"


#: Under ``/cam/NAME/``, these go to the machine routes; the rest to the pages.
CAMERA_MEDIA = (b"stream.mjpg", b"snapshot.jpg")


class SiteRoot(Resource):
    """Routes by the first path segment: ``ws`` and ``cam/NAME/ws`` are viewer sockets, a
    few segments have route groups of their own, everything else goes to the pages.

    :param camera_socket: the socket resource of a camera by name; for a name that is
        not a camera, one that refuses every handshake as it would for a camera the
        user may not see, so the two cannot be told apart.
    """

    log = Logger()

    def __init__(
        self,
        pages: IResource,
        groups: dict[bytes, IResource],
        camera_socket: Callable[[str], IResource],
        origins: OriginPolicy,
    ) -> None:
        super().__init__()
        self._pages = pages
        self._groups = groups
        self._camera_socket = camera_socket
        self._origins = origins

    def getChild(self, path: bytes, request: Any) -> IResource:
        self._secure(request)
        rest = request.postpath
        if path == b"ws" and not rest:
            return self._websocket_for(request, DEFAULT_CAMERA)
        if path == b"cam" and len(rest) == 2 and rest[1] == b"ws":
            name = rest[0].decode("utf-8", "replace")
            del rest[:]
            return self._websocket_for(request, name)
        # Hand the whole path to Klein, which routes on what is left unconsumed.
        request.postpath.insert(0, request.prepath.pop())
        if path == b"cam":
            return self._groups[b"api"] if rest[-1:] and rest[-1] in CAMERA_MEDIA else self._pages
        return self._groups.get(path, self._pages)

    def _websocket_for(self, request: Any, camera: str) -> IResource:
        if not cross_site(request, self._origins):
            return self._camera_socket(camera)
        origin = request.getHeader(b"origin")
        host = request.getHeader(b"host")
        self.log.info(
            "refused a viewer socket from origin {origin!r} (host {host!r}): origin not allowed",
            origin=origin.decode("latin-1", "replace")[:200] if origin is not None else None,
            host=host.decode("latin-1", "replace")[:200] if host is not None else None,
        )
        return RefusedOrigin()

    def render(self, request: Any) -> Any:
        self._secure(request)
        return self._pages.render(request)

    @staticmethod
    def _secure(request: Any) -> None:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if request.isSecure():
            request.setHeader(b"Strict-Transport-Security", b"max-age=31536000")
