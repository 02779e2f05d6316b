"""HTTP routes (Klein) and the one site that also carries the viewer socket.

Pages, login and logout (CONTRACT §2), the admin's user page, static files and
``/health``. Every state-changing form carries a CSRF token; every response carries the
security headers.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from autobahn.twisted.resource import WebSocketResource
from hyperlink import URL
from jinja2 import Environment, FileSystemLoader, select_autoescape
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from twisted.web.static import File
from werkzeug.exceptions import NotFound

from camproxy.accounts.passwords import BadPassword
from camproxy.accounts.service import AccountsService
from camproxy.accounts.sessions import Session
from camproxy.accounts.users import (
    AccountError,
    InvalidUsername,
    LastAdmin,
    UnknownUser,
    UserExists,
)
from camproxy.hub.hub import CameraHub
from camproxy.ops.metrics import DaemonMetrics
from camproxy.viewers.websocket import ViewerFactory
from camproxy.web.auth import Authenticator
from camproxy.web.csrf import CsrfTokens
from camproxy.web.gate import (
    CLOSE_PERMISSIONS_CHANGED,
    CLOSE_SESSION_ENDED,
    SESSION_COOKIE,
)
from camproxy.web.login_throttle import LoginThrottle
from camproxy.web.origins import OriginPolicy

SESSION_LIFETIME = 86400
LOGIN_BINDING = "login"
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
GENERIC_LOGIN_ERROR = "Invalid username or password."
MESSAGES = {"revoked": "Token revoked."}

ADMIN_MESSAGES = {
    "added": "User {user} created.",
    "password": "Password of {user} changed; their sessions were ended.",
    "enabled": "User {user} enabled.",
    "disabled": "User {user} disabled; their sessions were ended.",
    "promoted": "{user} is now an admin.",
    "demoted": "{user} is no longer an admin.",
    "control": "{user} may now control the camera.",
    "nocontrol": "{user} may now only watch.",
    "deleted": "User {user} deleted.",
}
ADMIN_ERRORS: dict[type[Exception], str] = {
    UserExists: "A user with that name exists already.",
    LastAdmin: "That would leave no active admin.",
    UnknownUser: "No such user.",
    InvalidUsername: "User names are 1 to 50 letters, digits and . _ - @.",
    BadPassword: "Passwords must not be empty and at most 72 bytes long.",
}


def health_document(hub: CameraHub) -> dict[str, object]:
    """CONTRACT §2 ``/health``: degraded only while the camera is wanted but unreachable."""
    degraded = hub.wants_camera and not hub.connected
    return {
        "status": "degraded" if degraded else "healthy",
        "esp32_connected": hub.connected,
        "clients": hub.viewer_count,
    }


def local_path(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/``: no open redirects."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    try:
        url = URL.from_text(target)
    except ValueError:
        return "/"
    if url.scheme or url.host or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    return target


def form_value(request: IRequest, name: str) -> str:
    values = request.args.get(name.encode(), [b""])
    try:
        return str(values[0].decode("utf-8"))
    except UnicodeDecodeError:
        return ""


def templates_environment(directory: Path) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(str(directory)),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    environment.filters["timestamp"] = _format_timestamp
    return environment


def _format_timestamp(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@attrs.define
class WebDependencies:
    """What the routes need, handed in from ``tap.build_service``."""

    hub: CameraHub
    viewers: ViewerFactory
    accounts: AccountsService
    auth: Authenticator
    origins: OriginPolicy
    csrf: CsrfTokens
    throttle: LoginThrottle
    templates: Environment
    static_dir: Path
    clock: IReactorTime
    metrics: DaemonMetrics


class CamProxyWeb:
    """The routes of one daemon; its dependencies are fields, not globals."""

    app = Klein()
    log = Logger()

    def __init__(self, deps: WebDependencies) -> None:
        self.deps = deps
        self.hub = deps.hub

    # -- helpers ---------------------------------------------------------------

    def render(self, request: IRequest, template: str, code: int = 200, **context: Any) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return self.deps.templates.get_template(template).render(**context).encode("utf-8")

    def error_page(self, request: IRequest, status: int, message: str) -> bytes:
        return self.render(request, "error.html", status, status=status, message=message)

    async def current_session(self, request: IRequest) -> Session | None:
        return await self.deps.auth.session(request)

    def client_address(self, request: IRequest) -> str:
        peer = request.getClientAddress()
        return str(getattr(peer, "host", "unknown"))

    def cross_site(self, request: IRequest) -> bool:
        """A browser request sent from another site (its Origin says so)."""
        origin = request.getHeader(b"origin")
        host = request.getHeader(b"host")
        return not self.deps.origins.allows(
            origin.decode("latin-1") if origin is not None else None,
            host.decode("latin-1") if host is not None else None,
            request.isSecure(),
        )

    def set_session_cookie(self, request: Request, session_id: str) -> None:
        request.addCookie(
            SESSION_COOKIE,
            session_id,
            path="/",
            max_age=str(SESSION_LIFETIME),
            httpOnly=True,
            secure=request.isSecure(),
            sameSite="lax",
        )

    def clear_session_cookie(self, request: Request) -> None:
        request.addCookie(
            SESSION_COOKIE,
            "",
            path="/",
            max_age="0",
            expires="Thu, 01 Jan 1970 00:00:00 GMT",
            httpOnly=True,
            secure=request.isSecure(),
            sameSite="lax",
        )

    def redirect(self, request: IRequest, location: str, status: int = 302) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Location", location.encode("utf-8"))
        request.setHeader(b"Cache-Control", b"no-store")
        return b""

    def unavailable(self, request: IRequest) -> bytes:
        request.setHeader(b"Retry-After", b"1")
        return self.error_page(request, 503, "CamProxy is starting; try again in a moment.")

    # -- health -----------------------------------------------------------------

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(health_document(self.hub)).encode()

    # -- the viewer page ----------------------------------------------------------

    @app.route("/", methods=["GET", "HEAD"])
    async def index(self, request: IRequest) -> bytes:
        session = await self.current_session(request)
        if session is None:
            return self.redirect(request, "/login")
        return self.render(
            request,
            "index.html",
            user=session.username,
            is_admin=session.is_admin,
            can_control=session.may_control,
            csrf_token=self.deps.csrf.issue(session.id),
        )

    # -- login and logout -----------------------------------------------------------

    def login_page(
        self, request: IRequest, status: int = 200, error: str | None = None, **fields: str
    ) -> bytes:
        return self.render(
            request,
            "login.html",
            status,
            csrf_token=self.deps.csrf.issue(LOGIN_BINDING),
            error=error,
            next=local_path(fields.get("next")),
            username=fields.get("username", ""),
        )

    @app.route("/login", methods=["GET", "HEAD"])
    def login_form(self, request: IRequest) -> bytes:
        return self.login_page(request, next=form_value(request, "next"))

    @app.route("/login", methods=["POST"])
    async def login(self, request: Request) -> bytes:
        username = form_value(request, "username").strip()
        password = form_value(request, "password")
        target = local_path(form_value(request, "next"))
        if self.cross_site(request) or not self.deps.csrf.valid(
            form_value(request, "csrf_token"), LOGIN_BINDING
        ):
            return self.login_page(
                request, 403, "The form expired; please try again.", username=username, next=target
            )
        await self.deps.accounts.when_ready()
        users, sessions = self.deps.accounts.users, self.deps.accounts.sessions
        if users is None or sessions is None:
            return self.unavailable(request)
        address = self.client_address(request)
        wait = self.deps.throttle.retry_after(address, username)
        if wait > 0:
            self.deps.metrics.login_failures.inc()
            request.setHeader(b"Retry-After", str(math.ceil(wait)).encode())
            return self.login_page(
                request,
                429,
                f"Too many attempts, try again in {math.ceil(wait)} s.",
                username=username,
                next=target,
            )
        user = await users.authenticate(username, password)
        if user is None:
            self.deps.metrics.login_failures.inc()
            self.deps.throttle.failed(address, username)
            self.log.info(
                "failed login for {name!r} from {address}", name=username, address=address
            )
            return self.login_page(
                request, 401, GENERIC_LOGIN_ERROR, username=username, next=target
            )
        self.deps.throttle.succeeded(username)
        previous = request.getCookie(SESSION_COOKIE.encode())
        if previous:
            await self.end_session(previous.decode("ascii", "replace"))
        session_id = await sessions.create(user.id)
        self.set_session_cookie(request, session_id)
        self.log.info("{name!r} logged in from {address}", name=user.username, address=address)
        return self.redirect(request, target)

    async def end_session(self, session_id: str) -> None:
        sessions = self.deps.accounts.sessions
        if sessions is not None:
            await sessions.end(session_id)
        self.deps.viewers.close_where(
            lambda identity: identity.session_id == session_id,
            CLOSE_SESSION_ENDED,
            "logged out",
        )

    @app.route("/logout", methods=["GET", "POST"])
    async def logout(self, request: Request) -> bytes:
        if request.method == b"POST" and self.cross_site(request):
            return self.error_page(request, 403, "Cross-site request refused.")
        session_id = request.getCookie(SESSION_COOKIE.encode())
        if session_id:
            await self.end_session(session_id.decode("ascii", "replace"))
        self.clear_session_cookie(request)
        return self.redirect(request, "/login")

    # -- admin: users ------------------------------------------------------------------

    async def admin_session(self, request: IRequest) -> Session | bytes:
        """The admin's session, or the response to send instead."""
        session = await self.current_session(request)
        if session is None:
            path = request.path.decode("utf-8", "replace")
            return self.redirect(request, "/login?next=" + path)
        if not session.is_admin:
            return self.error_page(request, 403, "Only admins may manage users.")
        return session

    @app.route("/admin/users", methods=["GET", "HEAD"])
    async def admin_users(self, request: IRequest) -> bytes:
        session = await self.admin_session(request)
        if isinstance(session, bytes):
            return session
        users = self.deps.accounts.users
        if users is None:
            return self.unavailable(request)
        done = form_value(request, "done")
        name = form_value(request, "user")
        failed = form_value(request, "error")
        message = ADMIN_MESSAGES[done].format(user=name) if done in ADMIN_MESSAGES else None
        error = next((text for kind, text in ADMIN_ERRORS.items() if kind.__name__ == failed), None)
        return self.render(
            request,
            "admin_users.html",
            users=await users.list(),
            csrf_token=self.deps.csrf.issue(session.id),
            current_user=session.username,
            message=message,
            error=error,
        )

    async def admin_action(
        self,
        request: IRequest,
        action: Callable[[Session], Any],
        done: str,
        name: str,
        close: int | None = None,
    ) -> bytes:
        """Run one CSRF-checked admin change, close affected sockets, redirect back."""
        session = await self.admin_session(request)
        if isinstance(session, bytes):
            return session
        if self.cross_site(request) or not self.deps.csrf.valid(
            form_value(request, "csrf_token"), session.id
        ):
            return self.error_page(request, 403, "The form expired; reload the page.")
        if self.deps.accounts.users is None:
            return self.unavailable(request)
        try:
            await action(session)
        except (AccountError, BadPassword) as problem:
            kind = next((k for k in ADMIN_ERRORS if isinstance(problem, k)), UnknownUser)
            return self.redirect(request, f"/admin/users?error={kind.__name__}", 303)
        if close is not None:
            self.deps.viewers.close_where(
                lambda identity: (identity.user or "").lower() == name.lower(),
                close,
                "account changed",
            )
        self.log.info(
            "admin {admin!r} {done} user {name!r}", admin=session.username, done=done, name=name
        )
        return self.redirect(request, f"/admin/users?done={done}&user={name}", 303)

    @app.route("/admin/users/add", methods=["POST"])
    async def admin_add(self, request: IRequest) -> bytes:
        name = form_value(request, "username").strip()

        async def add(session: Session) -> Any:
            assert self.deps.accounts.users is not None
            return await self.deps.accounts.users.add(
                name,
                form_value(request, "password"),
                admin=form_value(request, "is_admin") in ("1", "on", "true"),
                can_control=form_value(request, "can_control") in ("1", "on", "true"),
            )

        return await self.admin_action(request, add, "added", name)

    @app.route("/admin/users/<name>/<change>", methods=["POST"])
    async def admin_change(self, request: IRequest, name: str, change: str) -> bytes:
        flag = form_value(
            request,
            {"active": "active", "admin": "is_admin", "control": "can_control"}.get(change, change),
        )
        on = flag in ("1", "on", "true")
        users = self.deps.accounts.users

        def do(method: str, *args: Any) -> Callable[[Session], Any]:
            async def run(session: Session) -> Any:
                assert users is not None
                return await getattr(users, method)(name, *args)

            return run

        close: int | None
        if change == "password":
            action, done, close = (
                do("set_password", form_value(request, "password")),
                "password",
                CLOSE_SESSION_ENDED,
            )
        elif change == "active":
            action, done, close = (
                do("set_active", on),
                "enabled" if on else "disabled",
                None if on else CLOSE_SESSION_ENDED,
            )
        elif change == "admin":
            action, done, close = (
                do("set_admin", on),
                "promoted" if on else "demoted",
                CLOSE_PERMISSIONS_CHANGED,
            )
        elif change == "control":
            action, done, close = (
                do("set_can_control", on),
                "control" if on else "nocontrol",
                CLOSE_PERMISSIONS_CHANGED,
            )
        elif change == "delete":
            action, done, close = do("delete"), "deleted", CLOSE_SESSION_ENDED
        else:
            return self.error_page(request, 404, "No such action.")
        return await self.admin_action(request, action, done, name, close)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        return self.error_page(request, 404, "There is nothing here.")

    # -- API tokens: each user their own, admins all -------------------------------------

    async def tokens_page(
        self,
        request: IRequest,
        session: Session,
        code: int = 200,
        **extra: Any,
    ) -> bytes:
        tokens = self.deps.accounts.tokens
        assert tokens is not None
        listed = await tokens.list(None if session.is_admin else session.username)
        return self.render(
            request,
            "tokens.html",
            code,
            tokens=listed,
            csrf_token=self.deps.csrf.issue(session.id),
            current_user=session.username,
            is_admin=session.is_admin,
            can_control=session.may_control,
            **{"new_token": None, "new_token_name": None, "message": None, "error": None, **extra},
        )

    async def token_session(self, request: IRequest, *, post: bool) -> Session | bytes:
        session = await self.current_session(request)
        if session is None:
            return self.redirect(request, "/login?next=/tokens")
        if post and (
            self.cross_site(request)
            or not self.deps.csrf.valid(form_value(request, "csrf_token"), session.id)
        ):
            return self.error_page(request, 403, "The form expired; reload the page.")
        return session

    @app.route("/tokens", methods=["GET", "HEAD"])
    async def tokens(self, request: IRequest) -> bytes:
        session = await self.token_session(request, post=False)
        if isinstance(session, bytes):
            return session
        return await self.tokens_page(
            request, session, message=MESSAGES.get(form_value(request, "done"))
        )

    @app.route("/tokens/add", methods=["POST"])
    async def token_add(self, request: IRequest) -> bytes:
        session = await self.token_session(request, post=True)
        if isinstance(session, bytes):
            return session
        tokens = self.deps.accounts.tokens
        assert tokens is not None
        name = form_value(request, "name").strip()
        scope = form_value(request, "scope") or "view"
        if scope == "control" and not session.may_control:
            return await self.tokens_page(
                request, session, 403, error="You may not control the camera, so no control token."
            )
        try:
            record, secret = await tokens.create(session.username, name, scope)
        except (AccountError, ValueError) as problem:
            return await self.tokens_page(request, session, 400, error=str(problem))
        self.log.info(
            "{user!r} created API token {name!r}", user=session.username, name=record.name
        )
        # Shown in this response only: never in a URL, never again.
        return await self.tokens_page(
            request, session, new_token=secret, new_token_name=record.name
        )

    @app.route("/tokens/revoke", methods=["POST"])
    async def token_revoke(self, request: IRequest) -> bytes:
        session = await self.token_session(request, post=True)
        if isinstance(session, bytes):
            return session
        tokens = self.deps.accounts.tokens
        assert tokens is not None
        owner = form_value(request, "user") or session.username
        if owner.lower() != session.username.lower() and not session.is_admin:
            return self.error_page(request, 403, "You may revoke only your own tokens.")
        try:
            await tokens.revoke(owner, form_value(request, "name"))
        except AccountError as problem:
            return await self.tokens_page(request, session, 400, error=str(problem))
        return self.redirect(request, "/tokens?done=revoked", 303)

    # -- static files -----------------------------------------------------------------

    @app.route("/static/", branch=True)
    def static(self, request: IRequest) -> IResource:
        return File(str(self.deps.static_dir))

    @app.route("/favicon.ico")
    def favicon(self, request: IRequest) -> IResource:
        return File(str(self.deps.static_dir / "favicon.ico"))


class SiteRoot(Resource):
    """``/ws`` is the viewer socket; every other path goes to the Klein routes.

    Also the one place that sets the security headers, for every response.
    """

    MACHINE_PATHS = (b"api", b"stream.mjpg", b"snapshot.jpg", b"metrics")

    def __init__(self, routes: IResource, api: IResource, websocket: WebSocketResource) -> None:
        super().__init__()
        self._routes = routes
        self._api = api
        self._websocket = websocket

    def getChild(self, path: bytes, request: Any) -> IResource:
        if path == b"ws" and not request.postpath:
            return self._websocket
        self._secure(request)
        # Hand the whole path to Klein, which routes on what is left unconsumed.
        request.postpath.insert(0, request.prepath.pop())
        return self._api if path in self.MACHINE_PATHS else self._routes

    def render(self, request: Request) -> Any:
        self._secure(request)
        return self._routes.render(request)

    @staticmethod
    def _secure(request: Any) -> None:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if request.isSecure():
            request.setHeader(b"Strict-Transport-Security", b"max-age=31536000")
