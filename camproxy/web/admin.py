"""The admin's pages: users (add, password, enable/disable, promote/demote, control,
delete). Every change is a CSRF-checked form; a change that ends a user's sessions or
rights closes their sockets and streams at once. The cameras' pages are in
:mod:`camproxy.web.admin_cameras`; :class:`AdminSections` serves both under ``/admin``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import NotFound

from camproxy.accounts.passwords import BadPassword
from camproxy.accounts.principal import Principal
from camproxy.accounts.service import AccountsService
from camproxy.accounts.users import (
    AccountError,
    InvalidUsername,
    LastAdmin,
    UnknownUser,
    UserExists,
    UserStore,
)
from camproxy.hub.events import CloseReason
from camproxy.web.forms import FormPages
from camproxy.web.gate import ViewerDirectory
from camproxy.web.rendering import Renderer, form_value, is_on

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

Change = Callable[[UserStore], Awaitable[Any]]
ADMINS_ONLY = "Only admins may manage users."


@attrs.define
class AdminDependencies:
    accounts: AccountsService
    forms: FormPages
    directory: ViewerDirectory

    @property
    def renderer(self) -> Renderer:
        return self.forms.renderer


class AdminRoutes:
    """``/admin/...``: for admins only."""

    app = Klein()
    log = Logger()

    def __init__(self, deps: AdminDependencies) -> None:
        self.deps = deps

    async def admin(self, request: IRequest) -> Principal | bytes:
        """The admin's principal, or the response to send instead."""
        return await self.deps.forms.signed_in(request, admins=ADMINS_ONLY)

    def users(self) -> UserStore:
        return self.deps.accounts.users

    @app.route("/admin/users", methods=["GET", "HEAD"])
    async def admin_users(self, request: IRequest) -> bytes:
        admin = await self.admin(request)
        if isinstance(admin, bytes):
            return admin
        assert admin.session_id is not None
        done = form_value(request, "done")
        name = form_value(request, "user")
        failed = form_value(request, "error")
        message = ADMIN_MESSAGES[done].format(user=name) if done in ADMIN_MESSAGES else None
        error = next((text for kind, text in ADMIN_ERRORS.items() if kind.__name__ == failed), None)
        return self.deps.renderer.render(
            request,
            "admin_users.html",
            users=await self.users().list(),
            csrf_token=self.deps.forms.csrf.issue(admin.session_id),
            current_user=admin.username,
            message=message,
            error=error,
        )

    async def change(
        self,
        request: IRequest,
        change: Change,
        done: str,
        name: str,
        close: CloseReason | None = None,
    ) -> bytes:
        """Run one CSRF-checked change, close the affected viewers, redirect back."""
        deps = self.deps
        admin = await deps.forms.signed_in_form(request, admins=ADMINS_ONLY)
        if isinstance(admin, bytes):
            return admin
        try:
            await change(self.users())
        except (AccountError, BadPassword) as problem:
            kind = next((k for k in ADMIN_ERRORS if isinstance(problem, k)), UnknownUser)
            return deps.renderer.redirect(request, f"/admin/users?error={kind.__name__}", 303)
        if close is not None:
            deps.forms.auth.forget()
            deps.directory.close_where(
                lambda principal: principal.username.lower() == name.lower(), close
            )
        self.log.info(
            "admin {admin!r} {done} user {name!r}", admin=admin.username, done=done, name=name
        )
        return deps.renderer.redirect(request, f"/admin/users?done={done}&user={name}", 303)

    @app.route("/admin/users/add", methods=["POST"])
    async def admin_add(self, request: IRequest) -> bytes:
        name = form_value(request, "username").strip()

        def add(users: UserStore) -> Awaitable[Any]:
            return users.add(
                name,
                form_value(request, "password"),
                admin=is_on(form_value(request, "is_admin")),
                can_control=is_on(form_value(request, "can_control")),
            )

        return await self.change(request, add, "added", name)

    @app.route("/admin/users/<name>/<change>", methods=["POST"])
    async def admin_change(self, request: IRequest, name: str, change: str) -> bytes:
        field = {"active": "active", "admin": "is_admin", "control": "can_control"}.get(change)
        on = is_on(form_value(request, field)) if field else False
        if change == "password":
            password = form_value(request, "password")
            return await self.change(
                request,
                lambda users: users.set_password(name, password),
                "password",
                name,
                CloseReason.SESSION_ENDED,
            )
        if change == "active":
            return await self.change(
                request,
                lambda users: users.set_active(name, on),
                "enabled" if on else "disabled",
                name,
                None if on else CloseReason.SESSION_ENDED,
            )
        if change == "admin":
            return await self.change(
                request,
                lambda users: users.set_admin(name, on),
                "promoted" if on else "demoted",
                name,
                CloseReason.ACCESS_CHANGED,
            )
        if change == "control":
            return await self.change(
                request,
                lambda users: users.set_can_control(name, on),
                "control" if on else "nocontrol",
                name,
                CloseReason.ACCESS_CHANGED,
            )
        if change == "delete":
            return await self.change(
                request,
                lambda users: users.delete(name),
                "deleted",
                name,
                CloseReason.SESSION_ENDED,
            )
        return self.deps.renderer.error_page(request, 404, "No such action.")

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        return self.deps.renderer.not_found(request)


class AdminSections(Resource):
    """``/admin/...``: one resource for the site's ``admin`` segment, handing each request
    to the route group of its section (``/admin/cameras``, ``/admin/probe``: the
    cameras'; anything else: the users').

    A leaf, like the Klein resources it hands to, so they see the whole path and route
    on it as they would at the top of the site.
    """

    isLeaf = True

    def __init__(self, users: IResource, sections: dict[bytes, IResource]) -> None:
        super().__init__()
        self._users = users
        self._sections = sections

    def render(self, request: Any) -> Any:
        path = request.postpath
        section = path[1] if len(path) > 1 and path[0] == b"admin" else b""
        return self._sections.get(section, self._users).render(request)
