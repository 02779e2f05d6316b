"""Logging in and out (CONTRACT §2).

The login form has no session to bind its CSRF token to, so the browser that fetches
it gets a *pre-session* cookie (random, HttpOnly, SameSite=Lax) and the token is bound
to that (OWASP's advice against login CSRF): a token fetched by one client is worthless
to another. The cookie is reused while present, so two tabs' forms both work. Logins
also refuse cross-site ``Origin`` headers, are throttled per name and per address, and
never tell an unknown name from a wrong password.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import NotFound

from camproxy.accounts.database import DatabaseUnavailable
from camproxy.accounts.service import AccountsService
from camproxy.hub.events import CloseReason
from camproxy.ops.metrics import DaemonMetrics
from camproxy.web.auth import SESSION_COOKIE, Authenticator
from camproxy.web.csrf import CsrfTokens
from camproxy.web.gate import ViewerDirectory
from camproxy.web.login_throttle import LoginThrottle
from camproxy.web.origins import OriginPolicy
from camproxy.web.rendering import (
    Renderer,
    clear_session_cookie,
    cross_site,
    form_value,
    local_path,
    set_cookie,
    set_session_cookie,
)

GENERIC_LOGIN_ERROR = "Invalid username or password."
FORM_EXPIRED = "The form expired; please try again."
#: The pre-session cookie the login form's CSRF token is bound to.
LOGIN_COOKIE = "camproxy_login"
LOGIN_COOKIE_LIFETIME = 86400


def _login_binding(pre_session: str) -> str:
    return "login:" + pre_session


@attrs.define
class LoginDependencies:
    accounts: AccountsService
    auth: Authenticator
    csrf: CsrfTokens
    origins: OriginPolicy
    throttle: LoginThrottle
    directory: ViewerDirectory
    renderer: Renderer
    metrics: DaemonMetrics


class LoginRoutes:
    """``/login`` and ``/logout``."""

    app = Klein()
    log = Logger()

    def __init__(self, deps: LoginDependencies) -> None:
        self.deps = deps

    def _pre_session(self, request: Request) -> str:
        """The browser's pre-session id, set now if it has none (or a malformed one)."""
        current = request.getCookie(LOGIN_COOKIE.encode())
        if current is not None:
            text = current.decode("ascii", "replace")
            if 16 <= len(text) <= 64 and text.replace("-", "").replace("_", "").isalnum():
                return text
        fresh = secrets.token_urlsafe(16)
        set_cookie(request, LOGIN_COOKIE, fresh, max_age=LOGIN_COOKIE_LIFETIME)
        return fresh

    def login_page(
        self, request: Request, status: int = 200, error: str | None = None, **fields: str
    ) -> bytes:
        return self.deps.renderer.render(
            request,
            "login.html",
            status,
            csrf_token=self.deps.csrf.issue(_login_binding(self._pre_session(request))),
            error=error,
            next=local_path(fields.get("next")),
            username=fields.get("username", ""),
        )

    @app.route("/login", methods=["GET", "HEAD"])
    def login_form(self, request: Request) -> bytes:
        return self.login_page(request, next=form_value(request, "next"))

    def _form_is_ours(self, request: Request) -> bool:
        pre_session = request.getCookie(LOGIN_COOKIE.encode())
        if cross_site(request, self.deps.origins) or pre_session is None:
            return False
        binding = _login_binding(pre_session.decode("ascii", "replace"))
        return self.deps.csrf.valid(form_value(request, "csrf_token"), binding)

    @app.route("/login", methods=["POST"])
    async def login(self, request: Request) -> bytes:
        deps = self.deps
        username = form_value(request, "username").strip()
        password = form_value(request, "password")
        target = local_path(form_value(request, "next"))
        if not self._form_is_ours(request):
            return self.login_page(request, 403, FORM_EXPIRED, username=username, next=target)
        users, sessions = deps.accounts.users, deps.accounts.sessions
        address = str(getattr(request.getClientAddress(), "host", "unknown"))
        wait = deps.throttle.retry_after(address, username)
        if wait > 0:
            deps.metrics.login_failures.inc()
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
            deps.metrics.login_failures.inc()
            deps.throttle.failed(address, username)
            self.log.info(
                "failed login for {name!r} from {address}", name=username, address=address
            )
            return self.login_page(
                request, 401, GENERIC_LOGIN_ERROR, username=username, next=target
            )
        deps.throttle.succeeded(username)
        previous = request.getCookie(SESSION_COOKIE.encode())
        if previous:
            await self.end_session(previous.decode("ascii", "replace"))
        session_id = await sessions.create(user.id)
        set_session_cookie(request, session_id)
        self.log.info("{name!r} logged in from {address}", name=user.username, address=address)
        return deps.renderer.redirect(request, target)

    async def end_session(self, session_id: str) -> None:
        """End a session at once: its sockets and streams close now, not at the next check."""
        await self.deps.accounts.sessions.end(session_id)
        self.deps.auth.forget(session_id)
        self.deps.directory.close_where(
            lambda principal: principal.session_id == session_id, CloseReason.SESSION_ENDED
        )

    @app.route("/logout", methods=["GET", "POST"])
    async def logout(self, request: Request) -> Any:
        if request.method == b"POST" and cross_site(request, self.deps.origins):
            return self.deps.renderer.error_page(request, 403, "Cross-site request refused.")
        session_id = request.getCookie(SESSION_COOKIE.encode())
        if session_id:
            await self.end_session(session_id.decode("ascii", "replace"))
        clear_session_cookie(request)
        return self.deps.renderer.redirect(request, "/login")

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        return self.deps.renderer.not_found(request)

    @app.handle_errors(DatabaseUnavailable)
    def database_unavailable(self, request: IRequest, failure: Any) -> bytes:
        self.log.warn("login refused: {problem}", problem=failure.value)
        return self.deps.renderer.database_unavailable(request)
