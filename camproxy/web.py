"""HTTP routes (Klein) and the one site that also carries the viewer socket."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from camproxy.hub import CameraHub


def health_document(hub: CameraHub) -> dict[str, object]:
    """CONTRACT §2 ``/health``: degraded only while the camera is wanted but unreachable."""
    degraded = hub.wants_camera and not hub.connected
    return {
        "status": "degraded" if degraded else "healthy",
        "esp32_connected": hub.connected,
        "clients": hub.viewer_count,
    }


class CamProxyWeb:
    """The routes of one daemon; its dependencies are fields, not globals."""

    app = Klein()

    def __init__(self, hub: CameraHub) -> None:
        self.hub = hub

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(health_document(self.hub)).encode()


class SiteRoot(Resource):
    """``/ws`` is the viewer socket; every other path goes to the Klein routes."""

    def __init__(self, routes: IResource, websocket: WebSocketResource) -> None:
        super().__init__()
        self._routes = routes
        self._websocket = websocket

    def getChild(self, path: bytes, request: Any) -> IResource:
        if path == b"ws" and not request.postpath:
            return self._websocket
        # Hand the whole path to Klein, which routes on what is left unconsumed.
        request.postpath.insert(0, request.prepath.pop())
        return self._routes

    def render(self, request: Request) -> Any:
        return self._routes.render(request)
