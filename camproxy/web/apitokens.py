"""The API tokens page: each user makes and revokes their own tokens, admins see all.

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
from camproxy.web.auth import Authenticator
from camproxy.web.csrf import CsrfTokens
from camproxy.web.gate import ViewerDirectory
from camproxy.web.origins import OriginPolicy
from camproxy.web.rendering import Renderer, cross_site, form_value

MESSAGES = {"revoked": "Token revoked."}


@attrs.define
class ApiTokenDependencies:
    accounts: AccountsService
    auth: Authenticator
    csrf: CsrfTokens
    origins: OriginPolicy
    directory: ViewerDirectory
    renderer: Renderer


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
        return self.deps.renderer.render(
            request,
            "tokens.html",
            code,
            tokens=listed,
            csrf_token=self.deps.csrf.issue(principal.session_id),
            current_user=principal.username,
            is_admin=principal.is_admin,
            can_control=principal.may_control,
            **{"new_token": None, "new_token_name": None, "message": None, "error": None, **extra},
        )

    async def signed_in(self, request: IRequest, *, post: bool) -> Principal | bytes:
        deps = self.deps
        principal = await deps.auth.session(request)
        if principal is None:
            return deps.renderer.redirect(request, "/login?next=/tokens")
        assert principal.session_id is not None
        if post and (
            cross_site(request, deps.origins)
            or not deps.csrf.valid(form_value(request, "csrf_token"), principal.session_id)
        ):
            return deps.renderer.error_page(request, 403, "The form expired; reload the page.")
        return principal

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
        try:
            record, secret = await self.tokens().create(principal.username, name, scope)
        except (AccountError, ValueError) as problem:
            return await self.page(request, principal, 400, error=str(problem))
        self.log.info(
            "{user!r} created API token {name!r}", user=principal.username, name=record.name
        )
        # Shown in this response only: never in a URL, never again.
        return await self.page(request, principal, new_token=secret, new_token_name=record.name)

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
