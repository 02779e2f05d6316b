"""The API tokens page: each user makes and revokes their own tokens, admins see all.

A new token may be limited to some of the cameras its user may view (none picked: every
camera its user may access, now and later); the list says which. A token never gets more
than its user's level: the access decision applies both limits.

(API tokens are the credentials of integrations; not CSRF tokens, not token buckets.)
"""

from __future__ import annotations

from typing import Any

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import NotFound

from camproxy.accounts.principal import Principal
from camproxy.accounts.service import AccountsService
from camproxy.accounts.tokens import TokenStore
from camproxy.accounts.users import AccountError
from camproxy.hub.events import CloseReason
from camproxy.web.cameras import CameraAccess
from camproxy.web.forms import FormPages
from camproxy.web.gate import ViewerDirectory
from camproxy.web.rendering import Renderer, form_value

MESSAGES = {"revoked": "Token revoked."}


@attrs.define
class ApiTokenDependencies:
    accounts: AccountsService
    forms: FormPages
    directory: ViewerDirectory
    cameras: CameraAccess

    @property
    def renderer(self) -> Renderer:
        return self.forms.renderer


class ApiTokenRoutes:
    """``/tokens``: list, create (shown once), revoke."""

    app = Klein()
    log = Logger()

    def __init__(self, deps: ApiTokenDependencies) -> None:
        self.deps = deps

    def tokens(self) -> TokenStore:
        return self.deps.accounts.tokens

    async def page(
        self, request: IRequest, principal: Principal, code: int = 200, **extra: Any
    ) -> bytes:
        assert principal.session_id is not None
        listed = await self.tokens().list(None if principal.is_admin else principal.username)
        limits = await self.deps.accounts.cameras.token_cameras(token.id for token in listed)
        visible = self.deps.cameras.all_visible(principal)
        return self.deps.renderer.render(
            request,
            "tokens.html",
            code,
            tokens=listed,
            token_cameras={token_id: sorted(names) for token_id, names in limits.items()},
            cameras=[
                {"name": camera.name, "title": camera.stack.title, "access": camera.level.text}
                for camera in visible
            ],
            csrf_token=self.deps.forms.csrf.issue(principal.session_id),
            current_user=principal.username,
            is_admin=principal.is_admin,
            can_control=principal.may_control,
            **{
                "new_token": None,
                "new_token_name": None,
                "message": None,
                "error": None,
                "picked": (),
                **extra,
            },
        )

    async def signed_in(self, request: IRequest, *, post: bool) -> Principal | bytes:
        forms = self.deps.forms
        if post:
            return await forms.signed_in_form(request, back_to="/tokens")
        return await forms.signed_in(request, back_to="/tokens")

    @app.route("/tokens", methods=["GET", "HEAD"])
    async def list_tokens(self, request: IRequest) -> bytes:
        principal = await self.signed_in(request, post=False)
        if isinstance(principal, bytes):
            return principal
        return await self.page(
            request, principal, message=MESSAGES.get(form_value(request, "done"))
        )

    @app.route("/tokens/add", methods=["POST"])
    async def add(self, request: IRequest) -> bytes:
        principal = await self.signed_in(request, post=True)
        if isinstance(principal, bytes):
            return principal
        name = form_value(request, "name").strip()
        scope = form_value(request, "scope") or "view"
        if scope == "control" and not principal.may_control:
            return await self.page(
                request,
                principal,
                403,
                error="You may not control the camera, so no control token.",
            )
        picked = self.picked_cameras(request)
        unknown = [
            camera for camera in picked if self.deps.cameras.visible(principal, camera) is None
        ]
        if unknown:
            # A camera one may not see is answered as one that does not exist.
            return await self.page(
                request,
                principal,
                400,
                error=f"There is no camera named {unknown[0]!r} that you may watch.",
                picked=picked,
            )
        try:
            record, secret = await self.tokens().create(principal.username, name, scope, picked)
        except (AccountError, ValueError) as problem:
            return await self.page(request, principal, 400, error=str(problem), picked=picked)
        self.log.info(
            "{user!r} created API token {name!r} for {cameras}",
            user=principal.username,
            name=record.name,
            cameras=", ".join(picked) if picked else "all cameras",
        )
        # Shown in this response only: never in a URL, never again.
        return await self.page(request, principal, new_token=secret, new_token_name=record.name)

    @staticmethod
    def picked_cameras(request: IRequest) -> tuple[str, ...]:
        """The cameras ticked on the form (repeated ``camera`` fields), each once."""
        names = []
        for value in request.args.get(b"camera", []):
            try:
                name = value.decode("utf-8").strip()
            except UnicodeDecodeError:
                continue
            if name and name not in names:
                names.append(name)
        return tuple(names)

    @app.route("/tokens/revoke", methods=["POST"])
    async def revoke(self, request: IRequest) -> bytes:
        principal = await self.signed_in(request, post=True)
        if isinstance(principal, bytes):
            return principal
        owner = form_value(request, "user") or principal.username
        name = form_value(request, "name")
        if owner.lower() != principal.username.lower() and not principal.is_admin:
            return self.deps.renderer.error_page(
                request, 403, "You may revoke only your own tokens."
            )
        try:
            await self.tokens().revoke(owner, name)
        except AccountError as problem:
            return await self.page(request, principal, 400, error=str(problem))
        # Streams opened with that token end now, not at the watcher's next check.
        self.deps.directory.close_where(
            lambda p: (
                p.token_name is not None
                and p.username.lower() == owner.lower()
                and p.token_name.lower() == name.lower()
            ),
            CloseReason.SESSION_ENDED,
        )
        return self.deps.renderer.redirect(request, "/tokens?done=revoked", 303)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        return self.deps.renderer.not_found(request)
