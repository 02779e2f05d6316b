"""What every page route needs: templates, error pages, redirects, form fields, the
cross-site check and the session cookie."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from hyperlink import URL
from jinja2 import Environment, FileSystemLoader, select_autoescape
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from camproxy.web.auth import SESSION_COOKIE
from camproxy.web.origins import OriginPolicy

SESSION_LIFETIME = 86400


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


def is_on(value: str) -> bool:
    """A checkbox or flag field that is set."""
    return value in ("1", "on", "true")


def json_response(request: IRequest, code: int, body: object) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body).encode()


def cross_site(request: IRequest, origins: OriginPolicy) -> bool:
    """A browser request sent from another site (its ``Origin`` says so)."""
    origin = request.getHeader(b"origin")
    host = request.getHeader(b"host")
    return not origins.allows(
        origin.decode("latin-1") if origin is not None else None,
        host.decode("latin-1") if host is not None else None,
        request.isSecure(),
    )


def set_cookie(request: Request, name: str, value: str, *, max_age: int, path: str = "/") -> None:
    """An HttpOnly, SameSite=Lax cookie, Secure under TLS (``max_age`` 0 deletes it)."""
    extra = {"expires": "Thu, 01 Jan 1970 00:00:00 GMT"} if max_age == 0 else {}
    request.addCookie(
        name,
        value,
        path=path,
        max_age=str(max_age),
        httpOnly=True,
        secure=request.isSecure(),
        sameSite="lax",
        **extra,
    )


def set_session_cookie(request: Request, session_id: str) -> None:
    set_cookie(request, SESSION_COOKIE, session_id, max_age=SESSION_LIFETIME)


def clear_session_cookie(request: Request) -> None:
    set_cookie(request, SESSION_COOKIE, "", max_age=0)


class Renderer:
    """Renders the site's templates and its standard answers."""

    def __init__(self, templates: Environment) -> None:
        self.templates = templates

    def render(self, request: IRequest, template: str, code: int = 200, **context: Any) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return self.templates.get_template(template).render(**context).encode("utf-8")

    def error_page(self, request: IRequest, status: int, message: str) -> bytes:
        return self.render(request, "error.html", status, status=status, message=message)

    def not_found(self, request: IRequest) -> bytes:
        return self.error_page(request, 404, "There is nothing here.")

    def database_unavailable(self, request: IRequest) -> bytes:
        """The accounts database cannot be reached (PostgreSQL restarting, say): 503."""
        request.setHeader(b"Retry-After", b"5")
        return self.error_page(
            request, 503, "The account database is unavailable; try again in a moment."
        )

    def redirect(self, request: IRequest, location: str, status: int = 302) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Location", location.encode("utf-8"))
        request.setHeader(b"Cache-Control", b"no-store")
        return b""
