"""The admin's camera pages (CONTRACT §6): list, add, edit, remove, "test connection" and
each user's access to each camera.

Every change is a CSRF-checked form from this site, for admins only; refusals come back
as one line on the page, with what was typed kept (except a password in a URL, which a
page never shows: ``***`` stands in for it, and on a camera's own page ``***`` means
"the password stored now"). The daemon applies a change on its own within two seconds
(its camera watcher polls the database's change counter); after a change made here it
is also asked to apply it at once (:attr:`CameraTools.apply_changes`).

The site may not know how cameras are reached (import contracts: no ``sources``), so
the composition root hands in the URL check and the probe as :class:`CameraTools`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import attrs
from klein import Klein
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import NotFound

from camproxy.accounts.access import LEVEL_NAMES, Caller, Level, access_level
from camproxy.accounts.cameras import (
    CAMERA_KINDS,
    CONTROL_MODES,
    CameraChanges,
    CameraError,
    CameraRecord,
    CameraStore,
    check_camera_name,
)
from camproxy.accounts.principal import Principal
from camproxy.accounts.service import AccountsService
from camproxy.accounts.users import AccountError, User
from camproxy.fleet import Fleet
from camproxy.urls import HIDDEN, redacted_url, split_userinfo
from camproxy.web.cameras import CAMERA_NAME
from camproxy.web.forms import FormPages
from camproxy.web.rendering import Renderer, form_value, json_response

#: What the kind menu offers: "detect" stores no kind (the URL or its first answer tells).
KIND_CHOICES = ("detect", *CAMERA_KINDS)
#: A user's row in the grants table: "default" is no grant (the camera's default access).
GRANT_CHOICES = ("default", *LEVEL_NAMES)
GRANT_FIELD = "grant."
#: Probes that may run at once: each one holds a connection to a camera for seconds.
MAX_PROBES = 2

MESSAGES = {
    "added": "Camera {camera} added; the daemon is connecting to it.",
    "changed": "Camera {camera} saved.",
    "grants": "Access to {camera} saved.",
    "removed": "Camera {camera} removed; its viewers were closed.",
}


class ProbeReport(Protocol):
    """What ``camproxy.sources.probe.probe`` answers (the fields this page shows)."""

    @property
    def ok(self) -> bool: ...

    @property
    def error(self) -> str | None: ...

    def summary(self) -> str: ...


@attrs.frozen
class CameraTools:
    """What the camera pages need from the daemon's camera code, handed in by ``tap``.

    :ivar url_problem: ``(url, kind)`` -> why that URL cannot be a camera of that kind
        (``None`` kind: any), one line with the password hidden; ``None`` if it can.
    :ivar probe: ``(url, kind)`` -> a Deferred :class:`ProbeReport`: connect once, as
        the daemon would, and say what was found. Never fails.
    :ivar apply_changes: make the running daemon apply the database's camera changes
        now (and check its viewers' access), instead of at its next poll.
    """

    url_problem: Callable[[str, str | None], str | None]
    probe: Callable[[str, str | None], Deferred[Any]]
    apply_changes: Callable[[], Deferred[Any]] = lambda: succeed(None)


@attrs.define
class AdminCameraDependencies:
    accounts: AccountsService
    forms: FormPages
    fleet: Fleet
    tools: CameraTools

    @property
    def renderer(self) -> Renderer:
        return self.forms.renderer


ADMINS_ONLY = "Only admins may manage cameras."


class FormError(ValueError):
    """A form field that cannot be used; the message is one line for the page."""


def one_line(problem: Exception | str) -> str:
    """A refusal as one sentence for the page."""
    text = " ".join(str(problem).split()) or "That did not work."
    return text[0].upper() + text[1:]


def url_password(url: str) -> str | None:
    """The password of a URL's user info, as written in it (still percent-encoded)."""
    parts = split_userinfo(url)
    return parts[1] if parts is not None else None


def restore_password(submitted: str, stored: str | None) -> str:
    """A URL from an edit form: ``***`` as its password stands for the stored password."""
    parts = split_userinfo(submitted)
    password = url_password(stored) if stored is not None else None
    if parts is None or parts[1] != HIDDEN or password is None:
        return submitted
    before, _, after = parts
    return f"{before}{password}{after}"


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's password taken out, wherever it appears (belt and braces:
    the probe hides it already)."""
    password = url_password(url)
    if not password or password == HIDDEN:
        return text
    for form in {password, quote(password, safe="")}:
        text = text.replace(form, HIDDEN)
    return text


@attrs.frozen
class CameraForm:
    """The fields of the add and edit forms, as typed (strings), and their checks."""

    name: str = ""
    url: str = ""
    kind: str = "detect"
    title: str = ""
    max_fps: str = ""
    idle_close: str = ""
    access: str = "control"
    control: str = "shared"

    @classmethod
    def of_request(cls, request: IRequest, name: str | None = None) -> CameraForm:
        return cls(
            name=form_value(request, "name").strip() if name is None else name,
            url=form_value(request, "url").strip(),
            kind=form_value(request, "kind") or "detect",
            title=" ".join(form_value(request, "title").split()),
            max_fps=form_value(request, "max_fps").strip(),
            idle_close=form_value(request, "idle_close").strip(),
            access=form_value(request, "access") or "control",
            control=form_value(request, "control") or "shared",
        )

    @classmethod
    def of_record(cls, record: CameraRecord) -> CameraForm:
        return cls(
            name=record.name,
            url=redacted_url(record.url),
            kind=record.kind or "detect",
            title=record.title,
            max_fps="" if record.max_fps is None else f"{record.max_fps:g}",
            idle_close="" if record.idle_close is None else f"{record.idle_close:g}",
            access=record.access.text,
            control=record.control,
        )

    def shown(self) -> CameraForm:
        """The form as it may go back to the page: no password in the URL."""
        return attrs.evolve(self, url=redacted_url(self.url))

    @property
    def had_password(self) -> bool:
        password = url_password(self.url)
        return password is not None and password != HIDDEN

    def kind_value(self) -> str | None:
        if self.kind not in KIND_CHOICES:
            raise FormError(f"Unknown kind {self.kind!r}: use detect, {', '.join(CAMERA_KINDS)}.")
        return None if self.kind == "detect" else self.kind

    def access_value(self) -> Level:
        if self.access not in LEVEL_NAMES:
            raise FormError(f"Unknown access {self.access!r}: use none, view or control.")
        return Level.parse(self.access)

    def control_value(self) -> str:
        if self.control not in CONTROL_MODES:
            raise FormError(f"Unknown control mode {self.control!r}: use shared or exclusive.")
        return self.control

    @staticmethod
    def _number(text: str, label: str) -> float | None:
        if not text:
            return None
        try:
            value = float(text.replace(",", "."))
        except ValueError:
            raise FormError(f"{label} must be a number, not {text!r}.") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise FormError(f"{label} must be a number, not {text!r}.")
        return value

    def max_fps_value(self) -> float | None:
        return self._number(self.max_fps, "Max fps")

    def idle_close_value(self) -> float | None:
        return self._number(self.idle_close, "Idle close")


@attrs.frozen
class CameraRow:
    """One camera as the list shows it: stored settings and, if running, its state."""

    record: CameraRecord
    url: str
    kind: str
    status: str
    viewers: int
    grants: int
    holder: str | None


@attrs.frozen
class GrantRow:
    """One user in a camera's grants table."""

    user: User
    grant: str
    effective: str
    note: str | None


def _status(fleet: Fleet, name: str) -> tuple[str, int, str | None, str | None]:
    """(status, viewers, detected kind, holder) of a camera in the running daemon."""
    stack = fleet.get(name)
    if stack is None:
        return "starting", 0, None, None
    hub = stack.hub
    if hub.connected:
        status = "online"
    elif hub.wants_camera:
        status = "offline"
    else:
        status = "idle"
    return status, hub.viewer_count, hub.kind, hub.holder


class AdminCameraRoutes:
    """``/admin/cameras``, ``/admin/cameras/NAME`` and ``/admin/probe``: for admins only."""

    app = Klein()
    log = Logger()

    def __init__(self, deps: AdminCameraDependencies) -> None:
        self.deps = deps
        self._probes = 0

    def cameras(self) -> CameraStore:
        return self.deps.accounts.cameras

    # -- who may ---------------------------------------------------------------------

    async def admin(self, request: IRequest) -> Principal | bytes:
        """The admin's principal, or the response to send instead."""
        return await self.deps.forms.signed_in(request, admins=ADMINS_ONLY)

    async def admin_form(self, request: IRequest) -> Principal | bytes:
        """As :meth:`admin`, for a form: also from this site, with a valid CSRF token."""
        return await self.deps.forms.signed_in_form(request, admins=ADMINS_ONLY)

    # -- pages -------------------------------------------------------------------------

    async def list_page(
        self,
        request: IRequest,
        admin: Principal,
        code: int = 200,
        *,
        form: CameraForm | None = None,
        error: str | None = None,
        probe: dict[str, Any] | None = None,
        password_dropped: bool = False,
    ) -> bytes:
        assert admin.session_id is not None
        records = await self.cameras().list()
        grants = await self.cameras().all_grants()
        per_camera: dict[str, int] = {}
        for levels in grants.values():
            for camera in levels:
                per_camera[camera] = per_camera.get(camera, 0) + 1
        rows = [self._row(record, per_camera.get(record.name, 0)) for record in records]
        done = form_value(request, "done")
        camera = form_value(request, "camera")
        message = MESSAGES[done].format(camera=camera) if done in MESSAGES and camera else None
        return self._render(
            request,
            admin,
            "admin_cameras.html",
            code,
            cameras=rows,
            form=form or CameraForm(),
            message=message,
            error=error,
            probe=probe,
            password_dropped=password_dropped,
        )

    async def edit_page(
        self,
        request: IRequest,
        admin: Principal,
        record: CameraRecord,
        code: int = 200,
        *,
        form: CameraForm | None = None,
        error: str | None = None,
        grants_error: str | None = None,
        probe: dict[str, Any] | None = None,
    ) -> bytes:
        assert admin.session_id is not None
        users = await self.deps.accounts.users.list()
        granted = dict(await self.cameras().grants_on(record.name))
        rows = [self._grant_row(user, granted.get(user.username), record) for user in users]
        shown = self._row(record)
        done = form_value(request, "done")
        message = MESSAGES[done].format(camera=record.name) if done in MESSAGES else None
        return self._render(
            request,
            admin,
            "admin_camera.html",
            code,
            camera=record,
            url=shown.url,
            kind=shown.kind,
            status=shown.status,
            viewers=shown.viewers,
            holder=shown.holder,
            form=form or CameraForm.of_record(record),
            grants=rows,
            grant_choices=GRANT_CHOICES,
            message=message,
            error=error,
            grants_error=grants_error,
            probe=probe,
        )

    def _row(self, record: CameraRecord, grants: int = 0) -> CameraRow:
        """The camera as the pages show it: its stored settings and its running state."""
        status, viewers, detected, holder = _status(self.deps.fleet, record.name)
        return CameraRow(
            record=record,
            url=redacted_url(record.url),
            kind=detected or record.kind or "detect",
            status=status,
            viewers=viewers,
            grants=grants,
            holder=holder,
        )

    def _render(
        self, request: IRequest, admin: Principal, template: str, code: int, **context: Any
    ) -> bytes:
        """A camera admin page, with what every one of them needs."""
        assert admin.session_id is not None
        return self.deps.renderer.render(
            request,
            template,
            code,
            kinds=KIND_CHOICES,
            levels=LEVEL_NAMES,
            modes=CONTROL_MODES,
            csrf_token=self.deps.forms.csrf.issue(admin.session_id),
            current_user=admin.username,
            **context,
        )

    @staticmethod
    def _grant_row(user: User, grant: Level | None, record: CameraRecord) -> GrantRow:
        caller = Caller(
            is_admin=user.is_admin,
            can_control=user.can_control,
            grants={record.name: grant} if grant is not None else {},
        )
        effective = access_level(caller, record.name, record.access)
        note = None
        if user.is_admin:
            note = "admins always control"
        elif not user.can_control and (grant or record.access) is Level.CONTROL:
            note = "watches only (account setting)"
        elif not user.active:
            note = "disabled"
        return GrantRow(user, "default" if grant is None else grant.text, effective.text, note)

    async def existing(self, name: str) -> CameraRecord | None:
        """The stored camera of that name (a name no camera could have: None)."""
        return await self.cameras().get(name) if CAMERA_NAME.fullmatch(name) else None

    # -- the list and adding ------------------------------------------------------

    @app.route("/admin/cameras", methods=["GET", "HEAD"])
    async def list_cameras(self, request: IRequest) -> bytes:
        admin = await self.admin(request)
        if isinstance(admin, bytes):
            return admin
        return await self.list_page(request, admin)

    @app.route("/admin/cameras", methods=["POST"])
    async def add_camera(self, request: IRequest) -> bytes:
        admin = await self.admin_form(request)
        if isinstance(admin, bytes):
            return admin
        form = CameraForm.of_request(request)
        try:
            check_camera_name(form.name)
            kind = form.kind_value()
            if not form.url:
                raise FormError("Give the camera's URL.")
            if url_password(form.url) == HIDDEN:
                raise FormError("Type the password in the URL again (it is not kept).")
            problem = self.deps.tools.url_problem(form.url, kind)
            if problem is not None:
                raise FormError(problem)
            record = await self.cameras().add(
                form.name,
                form.url,
                kind,
                title=form.title or None,
                max_fps=form.max_fps_value(),
                idle_close=form.idle_close_value(),
                access=form.access_value(),
                control=form.control_value(),
            )
        except (FormError, CameraError) as problem:
            return await self.list_page(
                request,
                admin,
                400,
                form=form.shown(),
                error=scrub(one_line(problem), form.url),
                password_dropped=form.had_password,
            )
        self.log_saved(admin, "added", record)
        await self.applied()
        return self.deps.renderer.redirect(
            request, f"/admin/cameras?done=added&camera={record.name}", 303
        )

    def log_saved(self, admin: Principal, done: str, record: CameraRecord) -> None:
        self.log.info(
            "admin {admin!r} {done} camera {name!r} ({kind}, {url})",
            admin=admin.username,
            done=done,
            name=record.name,
            kind=record.kind or "detect",
            url=redacted_url(record.url),
        )

    async def applied(self) -> None:
        """Let the daemon apply a change now; a failure only means it waits for its poll."""
        self.deps.forms.auth.forget()
        try:
            await self.deps.tools.apply_changes()
        except Exception:
            self.log.failure("applying a camera change at once failed; the watcher will")

    # -- one camera ----------------------------------------------------------------

    @app.route("/admin/cameras/<name>", methods=["GET", "HEAD"])
    async def camera_page(self, request: IRequest, name: str) -> bytes:
        admin = await self.admin(request)
        if isinstance(admin, bytes):
            return admin
        record = await self.existing(name)
        if record is None:
            return self.deps.renderer.not_found(request)
        return await self.edit_page(request, admin, record)

    @app.route("/admin/cameras/<name>", methods=["POST"])
    async def change_camera(self, request: IRequest, name: str) -> bytes:
        admin = await self.admin_form(request)
        if isinstance(admin, bytes):
            return admin
        current = await self.existing(name)
        if current is None:
            return self.deps.renderer.not_found(request)
        form = CameraForm.of_request(request, name=current.name)
        try:
            changes = self.changes(current, form)
            record = await self.cameras().set(current.name, changes)
        except (FormError, CameraError) as problem:
            return await self.edit_page(
                request,
                admin,
                current,
                400,
                form=form.shown(),
                error=scrub(one_line(problem), restore_password(form.url, current.url)),
            )
        if changes != CameraChanges():
            self.log_saved(admin, "changed", record)
            await self.applied()
        return self.deps.renderer.redirect(
            request, f"/admin/cameras/{record.name}?done=changed", 303
        )

    def changes(self, current: CameraRecord, form: CameraForm) -> CameraChanges:
        """What an edit form changes (``CameraChanges()`` when nothing); ``FormError``
        for a field that cannot be used."""
        url = restore_password(form.url, current.url) if form.url else current.url
        kind = form.kind_value()
        max_fps, idle_close = form.max_fps_value(), form.idle_close_value()
        # An emptied field goes back to the daemon's option.
        daemon_defaults = frozenset(
            setting
            for setting, value, stored in (
                ("max_fps", max_fps, current.max_fps),
                ("idle_close", idle_close, current.idle_close),
            )
            if value is None and stored is not None
        )
        moved = url != current.url or kind != current.kind
        if moved:
            problem = self.deps.tools.url_problem(url, kind)
            if problem is not None:
                raise FormError(problem)
        title = form.title or current.name
        access = form.access_value()
        control = form.control_value()
        return CameraChanges(
            url=url if url != current.url else None,
            kind=kind if moved and kind is not None else None,
            detect_kind=moved and kind is None and current.kind is not None,
            title=title if title != current.title else None,
            max_fps=max_fps if max_fps != current.max_fps else None,
            idle_close=idle_close if idle_close != current.idle_close else None,
            access=access if access is not current.access else None,
            control=control if control != current.control else None,
            daemon_defaults=daemon_defaults,
        )

    @app.route("/admin/cameras/<name>/grants", methods=["POST"])
    async def change_grants(self, request: IRequest, name: str) -> bytes:
        admin = await self.admin_form(request)
        if isinstance(admin, bytes):
            return admin
        current = await self.existing(name)
        if current is None:
            return self.deps.renderer.not_found(request)
        wanted = self.wanted_grants(request)
        before = {
            user.lower(): level.text for user, level in await self.cameras().grants_on(current.name)
        }
        unknown = sorted(choice for choice in wanted.values() if choice not in GRANT_CHOICES)
        changes = {
            user: None if choice == "default" else Level.parse(choice)
            for user, choice in wanted.items()
            if choice in GRANT_CHOICES and before.get(user.lower(), "default") != choice
        }
        try:
            if unknown:
                raise FormError(
                    f"Unknown level {unknown[0]!r}: use default, none, view or control."
                )
            # One transaction: all of the form, or none of it (a user deleted meanwhile).
            stored = await self.cameras().set_grants(current.name, changes) if changes else []
        except (FormError, AccountError) as problem:
            return await self.edit_page(
                request, admin, current, 400, grants_error=one_line(problem)
            )
        changed = [
            f"{name}={wanted[user]}" for name, user in zip(stored, sorted(changes), strict=True)
        ]
        if changed:
            self.log.info(
                "admin {admin!r} set access to camera {name!r}: {changes}",
                admin=admin.username,
                name=current.name,
                changes=", ".join(changed),
            )
            await self.applied()
        return self.deps.renderer.redirect(
            request, f"/admin/cameras/{current.name}?done=grants#access", 303
        )

    @staticmethod
    def wanted_grants(request: IRequest) -> dict[str, str]:
        """``grant.USER`` fields: user name -> the level chosen for them."""
        wanted = {}
        for key, values in request.args.items():
            try:
                field = key.decode("utf-8")
                value = values[0].decode("utf-8") if values else ""
            except UnicodeDecodeError:
                continue
            if field.startswith(GRANT_FIELD) and len(field) > len(GRANT_FIELD):
                wanted[field[len(GRANT_FIELD) :]] = value
        return wanted

    @app.route("/admin/cameras/<name>/remove", methods=["POST"])
    async def remove_camera(self, request: IRequest, name: str) -> bytes:
        admin = await self.admin_form(request)
        if isinstance(admin, bytes):
            return admin
        current = await self.existing(name)
        if current is None:
            return self.deps.renderer.not_found(request)
        if form_value(request, "confirm") != current.name:
            return await self.edit_page(
                request,
                admin,
                current,
                400,
                error=f"Tick the box to confirm that {current.name} should be removed.",
            )
        try:
            await self.cameras().remove(current.name)
        except CameraError as problem:
            return await self.list_page(request, admin, 400, error=one_line(problem))
        self.log.info(
            "admin {admin!r} removed camera {name!r}", admin=admin.username, name=current.name
        )
        await self.applied()
        return self.deps.renderer.redirect(
            request, f"/admin/cameras?done=removed&camera={current.name}", 303
        )

    # -- test connection -------------------------------------------------------------

    @app.route("/admin/probe", methods=["POST"])
    async def probe(self, request: IRequest) -> bytes:
        """Probe a URL (a new camera's, or an edited one's: then ``camera`` names it and
        ``***`` in the URL is its stored password). JSON for ``Accept: application/json``
        (``{"ok", "summary"}`` or ``{"ok": false, "error"}``), else the form's page again
        with the result."""
        admin = await self.admin_form(request)
        if isinstance(admin, bytes):
            return admin
        wants_json = b"application/json" in (request.getHeader(b"accept") or b"")
        camera = form_value(request, "camera")
        current = await self.existing(camera) if camera else None
        form = CameraForm.of_request(request, name=current.name if current else None)
        url = restore_password(form.url, current.url if current else None)
        if current is not None and not form.url:
            url = current.url
        result = await self.run_probe(url, form.kind)
        self.log.info(
            "admin {admin!r} tested {url}: {result}",
            admin=admin.username,
            url=redacted_url(url),
            result="ok" if result["ok"] else result["error"],
        )
        if wants_json:
            return json_response(request, 200, result)
        if current is not None:
            return await self.edit_page(request, admin, current, form=form.shown(), probe=result)
        return await self.list_page(
            request, admin, form=form.shown(), probe=result, password_dropped=form.had_password
        )

    async def run_probe(self, url: str, kind_field: str) -> dict[str, Any]:
        """The probe's answer as the page shows it: never with the URL's password."""
        if not url:
            return {"ok": False, "error": "Give the camera's URL first."}
        try:
            kind = CameraForm(kind=kind_field).kind_value()
        except FormError as refused:
            return {"ok": False, "error": str(refused)}
        if url_password(url) == HIDDEN:
            return {"ok": False, "error": "Type the password in the URL again (it is not kept)."}
        problem = self.deps.tools.url_problem(url, kind)
        if problem is not None:
            return {"ok": False, "error": scrub(one_line(problem), url)}
        if self._probes >= MAX_PROBES:
            return {"ok": False, "error": "Other tests are running; try again in a moment."}
        self._probes += 1
        try:
            report: ProbeReport = await self.deps.tools.probe(url, kind)
        except Exception as failure:
            # Not log.failure: a traceback could carry the URL, password and all.
            reason = scrub(one_line(failure), url)
            self.log.error("probe of {url} failed: {reason}", url=redacted_url(url), reason=reason)
            return {"ok": False, "error": reason}
        finally:
            self._probes -= 1
        if report.ok:
            return {"ok": True, "summary": scrub(report.summary(), url)}
        return {"ok": False, "error": scrub(one_line(report.error or "no frame came"), url)}

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        return self.deps.renderer.not_found(request)
