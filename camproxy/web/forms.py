"""What every signed-in page with forms needs: the user (or the way to the login form),
admins only where a page says so, and forms that provably came from this site."""

from __future__ import annotations

import attrs
from twisted.web.iweb import IRequest

from camproxy.accounts.principal import Principal
from camproxy.web.auth import Authenticator
from camproxy.web.csrf import CsrfTokens
from camproxy.web.origins import OriginPolicy
from camproxy.web.rendering import Renderer, cross_site, form_value

FORM_EXPIRED = "The form expired; reload the page."


@attrs.define
class FormPages:
    """Sign-in, admin and CSRF checks for the pages of signed-in users."""

    auth: Authenticator
    csrf: CsrfTokens
    origins: OriginPolicy
    renderer: Renderer

    async def signed_in(
        self, request: IRequest, *, admins: str | None = None, back_to: str | None = None
    ) -> Principal | bytes:
        """The session's principal, or the answer to send instead: the login form (then
        back to ``back_to``, else this page), or 403 with ``admins`` (the refusal for a
        non-admin) on an admins' page."""
        principal = await self.auth.session(request)
        if principal is None:
            path = back_to or request.path.decode("utf-8", "replace")
            return self.renderer.redirect(request, "/login?next=" + path)
        if admins is not None and not principal.is_admin:
            return self.renderer.error_page(request, 403, admins)
        assert principal.session_id is not None
        return principal

    async def signed_in_form(
        self, request: IRequest, *, admins: str | None = None, back_to: str | None = None
    ) -> Principal | bytes:
        """As :meth:`signed_in`, for a posted form: also from this site (its ``Origin``),
        with a CSRF token bound to the session."""
        principal = await self.signed_in(request, admins=admins, back_to=back_to)
        if isinstance(principal, bytes):
            return principal
        assert principal.session_id is not None
        if cross_site(request, self.origins) or not self.csrf.valid(
            form_value(request, "csrf_token"), principal.session_id
        ):
            return self.renderer.error_page(request, 403, FORM_EXPIRED)
        return principal
