"""The viewer pages (the grid of cameras, one camera's page), ``/health``, static files
and the 404 page."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.static import File
from werkzeug.exceptions import NotFound

from camproxy.accounts.principal import Principal
from camproxy.fleet import DEFAULT_CAMERA, Fleet
from camproxy.web.auth import Authenticator
from camproxy.web.cameras import CameraAccess, VisibleCamera
from camproxy.web.csrf import CsrfTokens
from camproxy.web.rendering import Renderer


@attrs.frozen
class ClusterHealth:
    """In a cluster (CONTRACT §8): this daemon's name, and whether its bus is up."""

    node: str
    redis: Callable[[], bool]


def health_document(fleet: Fleet, cluster: ClusterHealth | None = None) -> dict[str, object]:
    """CONTRACT §2, §6, §8 ``/health``: degraded while any camera the proxy wants cannot be
    reached (or the cluster's Redis); ``esp32_connected`` is the ``default`` camera's link
    as the cluster sees it; no camera is named."""
    stacks = list(fleet)
    degraded = sum(1 for s in stacks if s.hub.wants_camera and not s.hub.connected)
    default = fleet.get(DEFAULT_CAMERA)
    redis = cluster.redis() if cluster is not None else True
    extra: dict[str, object] = {} if cluster is None else {"node": cluster.node, "redis": redis}
    return {
        "status": "degraded" if degraded or not redis else "healthy",
        "esp32_connected": default is not None and default.hub.connected,
        "clients": sum(s.hub.viewer_count for s in stacks),
        "cameras": {
            "total": len(stacks),
            "connected": sum(1 for s in stacks if s.hub.connected),
            "degraded": degraded,
        },
        **extra,
    }


def camera_summary(camera: VisibleCamera) -> dict[str, Any]:
    """A camera as ``/api/cameras`` and the pages list it (CONTRACT §6)."""
    stack, hub = camera.stack, camera.stack.hub
    return {
        "name": stack.name,
        "title": stack.title,
        "kind": stack.kind,
        "esp32_connected": hub.connected,
        "clients": hub.viewer_count,
        "access": camera.level.text,
        "control": stack.control,
        "capabilities": hub.capabilities.as_json(),
        "holder": hub.holder,
    }


@attrs.define
class PageDependencies:
    fleet: Fleet
    cameras: CameraAccess
    auth: Authenticator
    csrf: CsrfTokens
    renderer: Renderer
    static_dir: Path
    cluster: ClusterHealth | None = None


class PageRoutes:
    """``/``, ``/cam/NAME/``, ``/health``, ``/static/``, ``/favicon.ico`` and the 404s."""

    app = Klein()

    def __init__(self, deps: PageDependencies) -> None:
        self.deps = deps

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(health_document(self.deps.fleet, self.deps.cluster)).encode()

    @app.route("/", methods=["GET", "HEAD"])
    async def index(self, request: IRequest) -> bytes:
        """The cameras the user may view as a grid; with only one, its viewer page (v1)."""
        principal = await self.deps.auth.session(request)
        if principal is None:
            return self.deps.renderer.redirect(request, "/login")
        visible = self.deps.cameras.all_visible(principal)
        if len(visible) == 1:
            return self.viewer_page(request, principal, visible[0], visible)
        assert principal.session_id is not None
        return self.deps.renderer.render(
            request,
            "cameras.html",
            user=principal.username,
            is_admin=principal.is_admin,
            csrf_token=self.deps.csrf.issue(principal.session_id),
            cameras=[camera_summary(camera) for camera in visible],
        )

    @app.route("/cam/<name>/", methods=["GET", "HEAD"])
    async def camera_page(self, request: IRequest, name: str) -> bytes:
        principal = await self.deps.auth.session(request)
        if principal is None:
            path = request.path.decode("utf-8", "replace")
            return self.deps.renderer.redirect(request, "/login?next=" + path)
        camera = self.deps.cameras.visible(principal, name)
        if camera is None:
            return self.deps.renderer.not_found(request)
        return self.viewer_page(
            request, principal, camera, self.deps.cameras.all_visible(principal)
        )

    @app.route("/cam/<name>", methods=["GET", "HEAD"])
    def camera_page_without_slash(self, request: IRequest, name: str) -> bytes:
        return self.deps.renderer.redirect(request, f"/cam/{name}/", 301)

    def viewer_page(
        self,
        request: IRequest,
        principal: Principal,
        camera: VisibleCamera,
        others: list[VisibleCamera],
    ) -> bytes:
        assert principal.session_id is not None
        summary = camera_summary(camera)
        return self.deps.renderer.render(
            request,
            "index.html",
            user=principal.username,
            is_admin=principal.is_admin,
            can_control=camera.may_control,
            csrf_token=self.deps.csrf.issue(principal.session_id),
            camera=summary,
            cameras=[camera_summary(other) for other in others],
            socket_path=f"/cam/{camera.name}/ws",
            api_path=f"/api/cameras/{camera.name}",
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
