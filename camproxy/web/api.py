"""Integrations (CONTRACT §5): MJPEG stream, snapshot and the REST control API.

Commands go through the same parser and the same ``CameraHub.execute`` as the WebSocket
viewers' commands: one code path for validation, permission and translation.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound
from zope.interface import implementer

from camproxy.accounts.database import DatabaseUnavailable
from camproxy.accounts.principal import Principal
from camproxy.fleet import DEFAULT_CAMERA
from camproxy.hub.commands import InvalidCommand, command_from_fields
from camproxy.hub.events import Refusal, Refused
from camproxy.hub.hub import NOT_CONNECTED, CameraUnavailable
from camproxy.hub.viewer import IRequester
from camproxy.ops.metrics import DaemonMetrics
from camproxy.viewers.mjpeg import MjpegStream
from camproxy.web.auth import Authenticator
from camproxy.web.cameras import CameraAccess, VisibleCamera
from camproxy.web.csrf import CsrfTokens
from camproxy.web.openapi import openapi_document
from camproxy.web.pages import camera_summary
from camproxy.web.proxies import IPNetwork, address_in
from camproxy.web.rendering import json_response

#: A snapshot older than this is refreshed from the camera first.
SNAPSHOT_FRESH = 1.5
SNAPSHOT_WAIT = 5.0
MAX_BODY = 4096


#: The HTTP status of each refusal of a command.
REFUSAL_STATUS = {
    Refusal.NO_CONTROL: 403,
    Refusal.NOT_CONNECTED: 503,
    Refusal.UNSUPPORTED: 400,
    Refusal.OUT_OF_BOUNDS: 400,
    Refusal.CONTROL_HELD: 409,
    Refusal.FAILED: 502,
}


@implementer(IRequester)
@attrs.define
class ApiRequester:
    """A REST caller as the hub sees it: the first refusal becomes the HTTP answer."""

    may_control: bool
    user: str | None
    is_admin: bool
    refused: Refused | None = None

    def command_refused(self, refused: Refused) -> None:
        if self.refused is None:
            self.refused = refused


class IntegrationApi:
    """Routes for machines: no forms, no pages; tokens or sessions.

    The v1 routes address the camera ``default``; ``/cam/NAME/...`` and
    ``/api/cameras/NAME/...`` any camera the caller may view (others answer 404).
    """

    app = Klein()

    def __init__(
        self,
        cameras: CameraAccess,
        auth: Authenticator,
        csrf: CsrfTokens,
        clock: IReactorTime,
        *,
        metrics: DaemonMetrics,
        metrics_allow: tuple[IPNetwork, ...] = (),
    ) -> None:
        self.cameras = cameras
        self.auth = auth
        self.csrf = csrf
        self.clock = clock
        self.metrics = metrics
        self.metrics_allow = metrics_allow

    def unauthorized(self, request: IRequest) -> bytes:
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="camproxy"')
        return json_response(request, 401, {"error": "authentication required"})

    def no_camera(self, request: IRequest) -> bytes:
        return json_response(request, 404, {"error": "no such camera"})

    async def camera(
        self, request: IRequest, name: str, *, allow_query_token: bool
    ) -> tuple[Principal, VisibleCamera] | bytes:
        """The caller and the camera, or the response to send instead (401, 404)."""
        principal = await self.auth.principal(request, allow_query_token=allow_query_token)
        if principal is None:
            return self.unauthorized(request)
        camera = self.cameras.visible(principal, name)
        if camera is None:
            return self.no_camera(request)
        return principal, camera

    # -- media ------------------------------------------------------------------

    @app.route("/stream.mjpg", methods=["GET"])
    def default_stream(self, request: Request) -> Any:
        return self.stream(request, DEFAULT_CAMERA)

    @app.route("/cam/<name>/stream.mjpg", methods=["GET"])
    async def stream(self, request: Request, name: str) -> Any:
        found = await self.camera(request, name, allow_query_token=True)
        if isinstance(found, bytes):
            return found
        principal, camera = found
        return MjpegStream(camera.stack.hub, principal, principal.username)

    @app.route("/snapshot.jpg", methods=["GET", "HEAD"])
    def default_snapshot(self, request: IRequest) -> Any:
        return self.snapshot(request, DEFAULT_CAMERA)

    @app.route("/cam/<name>/snapshot.jpg", methods=["GET", "HEAD"])
    async def snapshot(self, request: IRequest, name: str) -> bytes:
        found = await self.camera(request, name, allow_query_token=True)
        if isinstance(found, bytes):
            return found
        hub = found[1].stack.hub
        if hub.link_open and hub.wants_camera and not hub.connected:
            # The camera is down while watched: say so now rather than hold the client
            # (CONTRACT §5). An idle camera is woken up below.
            return self.camera_down(request)
        frame = hub.newest
        if frame is None or self.clock.seconds() - frame.received_at > SNAPSHOT_FRESH:
            waiting = hub.next_frame()
            waiting.addTimeout(SNAPSHOT_WAIT, self.clock)
            try:
                frame = await waiting
            except (CameraUnavailable, TimeoutError, CancelledError):
                return self.camera_down(request)
        request.setHeader(b"Content-Type", b"image/jpeg")
        request.setHeader(b"Cache-Control", b"no-store")
        # One JPEG of known size: still-image clients and caches want Content-Length,
        # not chunks (also on HEAD, which has no body).
        request.setHeader(b"Content-Length", str(len(frame.data)).encode())
        return frame.data

    def camera_down(self, request: IRequest) -> bytes:
        request.setHeader(b"Retry-After", b"5")
        return json_response(request, 503, {"error": NOT_CONNECTED.message})

    # -- REST ---------------------------------------------------------------------

    @app.route("/api/cameras", methods=["GET"])
    async def list_cameras(self, request: IRequest) -> bytes:
        principal = await self.auth.principal(request, allow_query_token=False)
        if principal is None:
            return self.unauthorized(request)
        visible = self.cameras.all_visible(principal)
        return json_response(request, 200, [camera_summary(camera) for camera in visible])

    @app.route("/api/status", methods=["GET"])
    def default_status(self, request: IRequest) -> Any:
        return self.status(request, DEFAULT_CAMERA)

    @app.route("/api/cameras/<name>/status", methods=["GET"])
    async def status(self, request: IRequest, name: str) -> bytes:
        found = await self.camera(request, name, allow_query_token=False)
        if isinstance(found, bytes):
            return found
        camera = found[1]
        hub = camera.stack.hub
        position = None if hub.position is None else {"x": hub.position.x, "y": hub.position.y}
        return json_response(
            request,
            200,
            {
                "esp32_connected": hub.connected,
                "clients": hub.viewer_count,
                "position": position,
                "light": hub.light,
                "limits": hub.limits.as_json(),
            },
        )

    async def command(self, request: IRequest, name: str, kind: str) -> bytes:
        found = await self.camera(request, name, allow_query_token=False)
        if isinstance(found, bytes):
            return found
        principal, camera = found
        if not self._csrf_ok(request, principal):
            return json_response(request, 403, {"error": "missing or invalid X-CSRF-Token"})
        body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(body) > MAX_BODY:
            return json_response(request, 400, {"error": "request body too large"})
        try:
            fields = json.loads(body)
        except (ValueError, RecursionError):
            return json_response(request, 400, {"error": "body is not valid JSON"})
        if not isinstance(fields, dict):
            return json_response(request, 400, {"error": "body must be a JSON object"})
        hub = camera.stack.hub
        try:
            command = command_from_fields(kind, fields, hub.limits)
        except InvalidCommand as problem:
            return json_response(request, 400, {"error": str(problem)})
        requester = ApiRequester(camera.may_control, principal.username, principal.is_admin)
        hub.execute(command, requester)
        refused = requester.refused
        if refused is not None:
            code = REFUSAL_STATUS[refused.reason]
            if code == 503:
                request.setHeader(b"Retry-After", b"5")
            return json_response(request, code, {"error": refused.message})
        return json_response(request, 200, {"ok": True})

    def _csrf_ok(self, request: IRequest, principal: Principal) -> bool:
        """A session (a browser) must prove the request came from our page; a token need not."""
        if principal.session_id is None:
            return True
        token = request.getHeader(b"x-csrf-token")
        return token is not None and self.csrf.valid(token.decode("latin-1"), principal.session_id)

    @app.route("/api/servo", methods=["POST"])
    def servo(self, request: IRequest) -> Any:
        return self.command(request, DEFAULT_CAMERA, "servo_command")

    @app.route("/api/position", methods=["POST"])
    def position(self, request: IRequest) -> Any:
        return self.command(request, DEFAULT_CAMERA, "position_command")

    @app.route("/api/light", methods=["POST"])
    def light(self, request: IRequest) -> Any:
        return self.command(request, DEFAULT_CAMERA, "light_command")

    @app.route("/api/cameras/<name>/servo", methods=["POST"])
    def camera_servo(self, request: IRequest, name: str) -> Any:
        return self.command(request, name, "servo_command")

    @app.route("/api/cameras/<name>/position", methods=["POST"])
    def camera_position(self, request: IRequest, name: str) -> Any:
        return self.command(request, name, "position_command")

    @app.route("/api/cameras/<name>/light", methods=["POST"])
    def camera_light(self, request: IRequest, name: str) -> Any:
        return self.command(request, name, "light_command")

    @app.route("/metrics", methods=["GET"])
    async def prometheus(self, request: IRequest) -> bytes:
        """For admins, and without login for the addresses given with --metrics-allow."""
        client = str(getattr(request.getClientAddress(), "host", ""))
        if not address_in(client, self.metrics_allow):
            principal = await self.auth.principal(request, allow_query_token=False)
            if principal is None:
                return self.unauthorized(request)
            if not principal.is_admin:
                return json_response(request, 403, {"error": "admins only"})
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return bytes(generate_latest(self.metrics.registry))

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        return json_response(request, 404, {"error": "no such route"})

    @app.handle_errors(DatabaseUnavailable)
    def database_unavailable(self, request: IRequest, failure: Any) -> bytes:
        request.setHeader(b"Retry-After", b"5")
        return json_response(request, 503, {"error": "the account database is unavailable"})

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Any) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        request.setHeader(b"Allow", ", ".join(sorted(allowed)).encode())
        return json_response(request, 405, {"error": "method not allowed"})

    @app.route("/api/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        return json_response(request, 200, openapi_document(self.cameras.default_limits()))
