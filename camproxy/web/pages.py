"""The viewer page, ``/health``, static files and the 404 page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.static import File
from werkzeug.exceptions import NotFound

from camproxy.hub.hub import CameraHub
from camproxy.web.auth import Authenticator
from camproxy.web.csrf import CsrfTokens
from camproxy.web.rendering import Renderer


def health_document(hub: CameraHub) -> dict[str, object]:
    """CONTRACT §2 ``/health``: degraded only while the camera is wanted but unreachable."""
    degraded = hub.wants_camera and not hub.connected
    return {
        "status": "degraded" if degraded else "healthy",
        "esp32_connected": hub.connected,
        "clients": hub.viewer_count,
    }


@attrs.define
class PageDependencies:
    hub: CameraHub
    auth: Authenticator
    csrf: CsrfTokens
    renderer: Renderer
    static_dir: Path


class PageRoutes:
    """``/``, ``/health``, ``/static/``, ``/favicon.ico`` and everything not found."""

    app = Klein()

    def __init__(self, deps: PageDependencies) -> None:
        self.deps = deps

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(health_document(self.deps.hub)).encode()

    @app.route("/", methods=["GET", "HEAD"])
    async def index(self, request: IRequest) -> bytes:
        principal = await self.deps.auth.session(request)
        if principal is None:
            return self.deps.renderer.redirect(request, "/login")
        assert principal.session_id is not None
        return self.deps.renderer.render(
            request,
            "index.html",
            user=principal.username,
            is_admin=principal.is_admin,
            can_control=principal.may_control,
            csrf_token=self.deps.csrf.issue(principal.session_id),
        )

    @app.route("/static/", branch=True)
    def static(self, request: IRequest) -> IResource:
        return File(str(self.deps.static_dir))

    @app.route("/favicon.ico")
    def favicon(self, request: IRequest) -> IResource:
        return File(str(self.deps.static_dir / "favicon.ico"))

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        return self.deps.renderer.not_found(request)
