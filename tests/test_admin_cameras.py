"""The admin's camera pages and the tokens page's cameras, over HTTP against loopback
daemons: who may, CSRF and cross-site refusals, one-line errors, passwords never shown
or logged, changes applied at once, grants, removal and "test connection"."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import provider

from camproxy.accounts.access import Level
from camproxy.urls import redacted_url
from camproxy.web.admin_cameras import (
    CameraForm,
    restore_password,
    scrub,
    url_password,
)
from camproxy.web.auth import SESSION_COOKIE
from tests.browserlike import Browser, Page
from tests.conftest import PASSWORD, RunningDaemon
from tests.wsclient import close_viewer, connect_viewer

SECRET = "Pa55-w0rd!"
ERROR = re.compile(r'id="(?:admin-error|grants-error)"[^>]*>([^<]*)<')
PROBE = re.compile(r'id="probe-result"[^>]*>([^<]*)<')


async def admin_daemon(
    demo_camera_factory: Any, daemon_factory: Any
) -> tuple[RunningDaemon, Browser, Any]:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    await daemon.user("root", admin=True)
    browser = Browser(daemon.url)
    assert (await browser.login("root", PASSWORD)).code == 302
    return daemon, browser, camera


async def logged_in(daemon: RunningDaemon, name: str, **flags: Any) -> Browser:
    await daemon.user(name, **flags)
    browser = Browser(daemon.url)
    assert (await browser.login(name, PASSWORD)).code == 302
    return browser


def error_of(page: Page) -> str | None:
    found = ERROR.search(page.text)
    return found.group(1) if found else None


def form(page: Page, **fields: str) -> dict[str, str]:
    defaults = {"kind": "detect", "access": "control", "control": "shared"}
    return {"csrf_token": page.csrf_token, **defaults, **fields}


@contextmanager
def logged_events() -> Iterator[list[str]]:
    """Every log event of the daemon while in the block, formatted."""
    seen: list[str] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        seen.append(formatEvent(event) or "")
        seen.append(repr(event.get("log_failure", "")))

    globalLogPublisher.addObserver(observe)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observe)


# -- helpers without a daemon ---------------------------------------------------------


def test_a_hidden_password_stands_for_the_stored_one() -> None:
    stored = "http://admin:s%40cret@cam.lan/"
    assert url_password(stored) == "s%40cret"
    assert restore_password("http://admin:***@cam.lan/", stored) == stored
    assert restore_password("http://admin:***@other.lan:8080/", stored) == (
        "http://admin:s%40cret@other.lan:8080/"
    )
    assert restore_password("http://admin:new@cam.lan/", stored) == "http://admin:new@cam.lan/"
    assert restore_password("http://cam.lan/", stored) == "http://cam.lan/"
    assert restore_password("http://a:***@x/", None) == "http://a:***@x/"
    assert scrub("failed at http://admin:s%40cret@cam.lan/ (s@cret)", stored) == (
        "failed at http://admin:***@cam.lan/ (s@cret)"
    )
    assert CameraForm(url=stored).shown().url == "http://admin:***@cam.lan/"
    # A raw "@" in a password (it should be %40) still counts as the password.
    raw = "http://admin:p@ss@cam.lan/x?y=1"
    assert url_password(raw) == "p@ss" and redacted_url(raw) == "http://admin:***@cam.lan/x?y=1"
    assert restore_password("http://admin:***@cam.lan/x?y=2", raw) == (
        "http://admin:p@ss@cam.lan/x?y=2"
    )
    assert scrub("at http://admin:p@ss@cam.lan/", raw) == "at http://admin:***@cam.lan/"


@pytest.mark.parametrize(
    "stored",
    [
        "http://u:p@cam?next=a@b",  # an "@" in the query is not the user info's end
        "http://u:p@cam#a@b",
        "http://u:p@cam/x@y",
        "http://u:p@ss@cam:81/x?y=1",
        "ws://u:pw@cam:81/ws",
    ],
)
def test_saving_the_shown_url_keeps_the_stored_one(stored: str) -> None:
    # The edit page shows the URL with ***; saving it unchanged must give back the stored
    # URL, never one with another host.
    assert restore_password(redacted_url(stored), stored) == stored
    assert url_password("http://cam.lan/a@b") is None


# -- who may ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_camera_pages_are_for_admins_only(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, admin, _camera = await admin_daemon(demo_camera_factory, daemon_factory)
    anonymous = Browser(daemon.url)
    for path in ("/admin/cameras", "/admin/cameras/default"):
        page = await anonymous.get(path)
        assert page.code == 302 and page.header("Location") == f"/login?next={path}"
    posted = await anonymous.post("/admin/cameras", {"name": "x", "url": "ws://x/ws"})
    assert posted.code == 302
    watcher = await logged_in(daemon, "bob")
    assert (await watcher.get("/admin/cameras")).code == 403
    token = (await watcher.get("/tokens")).csrf_token
    refused = await watcher.post(
        "/admin/cameras", {"csrf_token": token, "name": "x", "url": "ws://x/ws"}
    )
    assert refused.code == 403 and "admins" in refused.text
    probed = await watcher.post("/admin/probe", {"csrf_token": token, "url": "ws://x/ws"})
    assert probed.code == 403
    assert await daemon.accounts.cameras.get("x") is None

    listed = await admin.get("/admin/cameras")
    assert listed.code == 200 and 'id="camera-default"' in listed.text
    assert 'href="/admin/users"' in listed.text  # cameras -> users
    users = await admin.get("/admin/users")
    assert 'href="/admin/cameras"' in users.text  # users -> cameras
    assert (await admin.get("/admin/cameras/nowhere")).code == 404
    assert (await admin.get("/admin/cameras/Not%20A%20Name")).code == 404


@pytest_twisted.ensureDeferred
async def test_forms_need_the_csrf_token_and_this_site(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, admin, camera = await admin_daemon(demo_camera_factory, daemon_factory)
    page = await admin.get("/admin/cameras")
    fields = form(page, name="garden", url=camera.url)
    missing = await admin.post("/admin/cameras", {**fields, "csrf_token": ""})
    forged = await admin.post("/admin/cameras", {**fields, "csrf_token": "1.2.3"})
    cross = await admin.post("/admin/cameras", fields, headers={"Origin": "https://evil.example"})
    other = Browser(daemon.url)
    await other.login("root", PASSWORD)
    another_session = await other.post("/admin/cameras", fields)
    assert [r.code for r in (missing, forged, cross, another_session)] == [403] * 4
    removal = await admin.post(
        "/admin/cameras/default/remove",
        {"csrf_token": page.csrf_token, "confirm": "default"},
        headers={"Origin": "https://evil.example"},
    )
    assert removal.code == 403
    assert [r.name for r in await daemon.accounts.cameras.list()] == ["default"]


# -- adding ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_camera_added_on_the_page_runs_at_once(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, admin, _camera = await admin_daemon(demo_camera_factory, daemon_factory)
    second = await demo_camera_factory()
    page = await admin.get("/admin/cameras")
    added = await admin.post(
        "/admin/cameras",
        form(
            page,
            name="garden",
            url=second.url,
            title="  The   garden ",
            max_fps="5",
            idle_close="12",
            access="view",
            control="exclusive",
        ),
    )
    assert added.code == 303
    assert added.header("Location") == "/admin/cameras?done=added&camera=garden"
    # Applied before the answer: no waiting for the watcher's poll.
    stack = daemon.fleet.get("garden")
    assert stack is not None and stack.title == "The garden"
    assert (stack.spec.max_fps, stack.spec.idle_close) == (5.0, 12.0)
    assert (stack.access, stack.control) == (Level.VIEW, "exclusive")
    listed = await admin.get(added.header("Location") or "")
    assert "Camera garden added" in listed.text and 'id="camera-garden"' in listed.text
    viewer = await connect_viewer(
        daemon.reactor,
        daemon.port,
        headers={"Cookie": f"{SESSION_COOKIE}={await daemon.session('bob')}"},
        path="/cam/garden/ws",
    )
    await viewer.wait_event("hello")
    assert viewer.of_type("hello")[0]["access"] == "view"
    await viewer.wait_frames(1)
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_refusals_are_one_line_on_the_page_and_keep_what_was_typed(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, admin, camera = await admin_daemon(demo_camera_factory, daemon_factory)
    page = await admin.get("/admin/cameras")
    cases = {
        "invalid camera name": dict(name="Bad Name", url=camera.url),
        "exists already": dict(name="default", url=camera.url),
        "needs an http(s) url": dict(name="cam", url="ws://cam.lan/ws", kind="esp32"),
        "needs a ws(s) url": dict(name="cam", url=f"http://u:{SECRET}@cam.lan/", kind="robocam"),
        "base url": dict(name="cam", url="http://cam.lan/stream", kind="esp32"),
        "must be a number": dict(name="cam", url=camera.url, max_fps="fast"),
        "between 0.1 and 120": dict(name="cam", url=camera.url, max_fps="500"),
        "give the camera's url": dict(name="cam", url=""),
        "unknown kind": dict(name="cam", url=camera.url, kind="webcam"),
        "unknown access": dict(name="cam", url=camera.url, access="all"),
        "unknown control mode": dict(name="cam", url=camera.url, control="mine"),
    }
    for expected, fields in cases.items():
        answer = await admin.post("/admin/cameras", form(page, **fields))
        error = error_of(answer)
        assert answer.code == 400 and error is not None, expected
        assert expected in error.lower().replace("&#39;", "'"), (expected, error)
        assert "\n" not in error
        assert SECRET not in answer.text
        assert f'value="{fields["name"]}"' in answer.text  # typed fields stay
    # The password typed into a refused form is not sent back: the page asks for it again.
    refused = await admin.post(
        "/admin/cameras", form(page, name="default", url=f"http://u:{SECRET}@cam.lan/")
    )
    assert SECRET not in refused.text and "u:***@cam.lan" in refused.text
    assert "type it once more" in refused.text
    again = await admin.post("/admin/cameras", form(page, name="cam", url="http://u:***@cam.lan/"))
    assert again.code == 400 and "password" in (error_of(again) or "")
    assert [r.name for r in await daemon.accounts.cameras.list()] == ["default"]


# -- passwords, editing -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_passwords_are_never_shown_and_edits_keep_them(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, admin, _camera = await admin_daemon(demo_camera_factory, daemon_factory)
    url = f"http://viewer:{SECRET}@127.0.0.1:9/"
    with logged_events() as logged:
        page = await admin.get("/admin/cameras")
        added = await admin.post("/admin/cameras", form(page, name="yard", url=url))
        assert added.code == 303
        for path in ("/admin/cameras", "/admin/cameras/yard"):
            shown = await admin.get(path)
            assert SECRET not in shown.text
            assert "http://viewer:***@127.0.0.1:9/" in shown.text
        edit = await admin.get("/admin/cameras/yard")
        saved = await admin.post(
            "/admin/cameras/yard",
            form(
                edit,
                url="http://viewer:***@127.0.0.1:9/",
                title="Back yard",
                control="exclusive",
                max_fps="4",
            ),
        )
        assert saved.code == 303 and saved.header("Location") == "/admin/cameras/yard?done=changed"
        record = await daemon.accounts.cameras.get("yard")
        assert record is not None and record.url == url
        assert (record.title, record.control, record.max_fps) == ("Back yard", "exclusive", 4.0)
        stack = daemon.fleet.get("yard")
        assert stack is not None and (stack.title, stack.control) == ("Back yard", "exclusive")
        moved = await admin.post(
            "/admin/cameras/yard",
            form(edit, url="http://viewer:***@127.0.0.2:9/", title="Back yard", max_fps="4"),
        )
        assert moved.code == 303
        record = await daemon.accounts.cameras.get("yard")
        assert record is not None and record.url == f"http://viewer:{SECRET}@127.0.0.2:9/"
        # A refused edit says why in one line and shows no password either.
        wrong = await admin.post(
            "/admin/cameras/yard",
            form(edit, url="http://viewer:***@127.0.0.2:9/", kind="robocam", max_fps="4"),
        )
        assert wrong.code == 400 and "ws(s) url" in (error_of(wrong) or "").lower()
        assert SECRET not in wrong.text
        # An emptied max fps goes back to the daemon's option.
        cleared = await admin.post(
            "/admin/cameras/yard", form(edit, url="http://viewer:***@127.0.0.2:9/")
        )
        assert cleared.code == 303
        record = await daemon.accounts.cameras.get("yard")
        assert record is not None and record.max_fps is None and record.title == "yard"
        # Test connection with the stored password: refused by the port, not shown.
        tested = await admin.post(
            "/admin/probe",
            {"csrf_token": edit.csrf_token, "camera": "yard", "url": "", "kind": "detect"},
            headers={"Accept": "application/json"},
        )
        answer = json.loads(tested.text)
        assert answer["ok"] is False and answer["error"] and SECRET not in tested.text
    assert logged and not [line for line in logged if SECRET in line]


# -- grants ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_grants_per_user_apply_at_once(demo_camera_factory: Any, daemon_factory: Any) -> None:
    daemon, admin, _camera = await admin_daemon(demo_camera_factory, daemon_factory)
    for name in ("bob", "carol"):
        await daemon.user(name)
    await daemon.user("dave", control=False)
    bob = await connect_viewer(
        daemon.reactor,
        daemon.port,
        headers={"Cookie": f"{SESSION_COOKIE}={await daemon.session('bob')}"},
        path="/cam/default/ws",
    )
    await bob.wait_event("hello")
    page = await admin.get("/admin/cameras/default")
    assert 'name="grant.bob"' in page.text and 'name="grant.dave"' in page.text
    # The admin's own row cannot be changed: admins always control.
    assert re.search(r'name="grant\.root" value="default"\s+checked\s+disabled', page.text)

    unknown = await admin.post(
        "/admin/cameras/default/grants",
        {"csrf_token": page.csrf_token, "grant.bob": "none", "grant.zed": "view"},
    )
    assert unknown.code == 400 and "zed" in (error_of(unknown) or "")
    assert await daemon.accounts.cameras.grants_on("default") == []  # all or nothing
    bad = await admin.post(
        "/admin/cameras/default/grants", {"csrf_token": page.csrf_token, "grant.bob": "owner"}
    )
    assert bad.code == 400 and "level" in (error_of(bad) or "").lower()

    saved = await admin.post(
        "/admin/cameras/default/grants",
        {
            "csrf_token": page.csrf_token,
            "grant.bob": "none",
            "grant.carol": "view",
            "grant.dave": "control",
        },
    )
    assert saved.code == 303
    assert await daemon.accounts.cameras.grants_on("default") == [
        ("bob", Level.NONE),
        ("carol", Level.VIEW),
        ("dave", Level.CONTROL),
    ]
    # Applied at once: bob's socket is closed (4002), no waiting for the watcher.
    _clean, code, _reason = await bob.closed
    assert code == 4002
    shown = await admin.get("/admin/cameras/default")
    dave = shown.text.split('data-username="dave"')[1].split("</tr>")[0]
    assert 'data-level="view"' in dave and "watches only" in dave
    back = await admin.post(
        "/admin/cameras/default/grants",
        {"csrf_token": page.csrf_token, "grant.bob": "default", "grant.carol": "view"},
    )
    assert back.code == 303
    assert [user for user, _level in await daemon.accounts.cameras.grants_on("default")] == [
        "carol",
        "dave",
    ]


# -- removing -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_removing_needs_a_confirmation_and_closes_viewers(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, admin, _camera = await admin_daemon(demo_camera_factory, daemon_factory)
    second = await demo_camera_factory()
    await daemon.accounts.cameras.add("garden", second.url)
    page = await admin.get("/admin/cameras")
    await admin.post("/admin/cameras", form(page, name="spare", url=second.url))  # applies
    viewer = await connect_viewer(
        daemon.reactor,
        daemon.port,
        headers={"Cookie": f"{SESSION_COOKIE}={await daemon.session('bob')}"},
        path="/cam/garden/ws",
    )
    await viewer.wait_event("hello")
    edit = await admin.get("/admin/cameras/garden")
    assert re.search(r'name="confirm"\s+value="garden" required', edit.text)
    unconfirmed = await admin.post("/admin/cameras/garden/remove", {"csrf_token": edit.csrf_token})
    wrong = await admin.post(
        "/admin/cameras/garden/remove", {"csrf_token": edit.csrf_token, "confirm": "spare"}
    )
    assert unconfirmed.code == wrong.code == 400 and "confirm" in (error_of(wrong) or "")
    assert daemon.fleet.get("garden") is not None
    removed = await admin.post(
        "/admin/cameras/garden/remove", {"csrf_token": edit.csrf_token, "confirm": "garden"}
    )
    assert removed.code == 303
    assert removed.header("Location") == "/admin/cameras?done=removed&camera=garden"
    await viewer.closed
    assert daemon.fleet.get("garden") is None
    assert await daemon.accounts.cameras.get("garden") is None
    listed = await admin.get("/admin/cameras?done=removed&camera=garden")
    assert "Camera garden removed" in listed.text and 'id="camera-garden"' not in listed.text


# -- test connection -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_test_connection_says_what_it_found_or_why_not(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, admin, camera = await admin_daemon(demo_camera_factory, daemon_factory)
    page = await admin.get("/admin/cameras")
    as_json = {"Accept": "application/json"}
    found = await admin.post("/admin/probe", form(page, url=camera.url), headers=as_json)
    answer = json.loads(found.text)
    assert found.code == 200 and answer["ok"] is True
    assert answer["summary"].startswith("robocam, 640x480") and "pan_tilt" in answer["summary"]
    with logged_events() as logged:
        refused = await admin.post(
            "/admin/probe", form(page, url=f"http://u:{SECRET}@127.0.0.1:9/"), headers=as_json
        )
    answer = json.loads(refused.text)
    assert answer["ok"] is False and answer["error"] and "\n" not in answer["error"]
    assert SECRET not in refused.text
    assert not [line for line in logged if SECRET in line]
    misfit = await admin.post(
        "/admin/probe", form(page, url=camera.url, kind="jpeg"), headers=as_json
    )
    assert json.loads(misfit.text) == {
        "ok": False,
        "error": f"A jpeg camera needs an http(s) URL, not {camera.url}",
    }
    # Without JavaScript: the page again, with the result and what was typed.
    plain = await admin.post("/admin/probe", form(page, name="newcam", url=camera.url))
    result = PROBE.search(plain.text)
    assert plain.code == 200 and result is not None and "robocam" in result.group(1)
    assert 'value="newcam"' in plain.text
    assert await daemon.accounts.cameras.get("newcam") is None  # testing adds nothing


# -- the tokens page's cameras ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tokens_page_limits_a_token_to_cameras(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, _admin, _camera = await admin_daemon(demo_camera_factory, daemon_factory)
    second = await demo_camera_factory()
    await daemon.accounts.cameras.add("garden", second.url, title="The garden")
    await daemon.accounts.cameras.add("attic", second.url)
    await daemon.service.getServiceNamed("camera-watcher").check()
    await daemon.user("ha")
    await daemon.accounts.cameras.grant("attic", "ha", Level.NONE)
    ha = await logged_in(daemon, "ha")
    page = await ha.get("/tokens")
    # Checkboxes of the cameras ha may view (attic is invisible to ha).
    assert re.findall(r'name="camera" value="([^"]+)"', page.text) == ["default", "garden"]
    created = await ha.post(
        "/tokens/add",
        {"csrf_token": page.csrf_token, "name": "garden only", "scope": "view", "camera": "garden"},
    )
    assert created.code == 200
    secret = created.text.split('id="new-token" class="token">')[1].split("<")[0]
    everything = await ha.post(
        "/tokens/add", {"csrf_token": page.csrf_token, "name": "everything", "scope": "view"}
    )
    assert everything.code == 200
    listed = await ha.get("/tokens")
    rows = {
        name: cameras.strip()
        for name, cameras in re.findall(
            r'data-token="ha/([^"]+)">.*?class="token-cameras">(.*?)</td>', listed.text, re.S
        )
    }
    assert rows == {"everything": '<span class="muted">all</span>', "garden only": "garden"}
    bearer: dict[bytes | str, bytes | str] = {"Authorization": f"Bearer {secret}"}
    garden = await treq.get(daemon.url + "/cam/garden/snapshot.jpg", headers=bearer)
    default = await treq.get(daemon.url + "/cam/default/snapshot.jpg", headers=bearer)
    assert (garden.code, default.code) == (200, 404)
    await garden.content()
    await default.content()

    for camera in ("attic", "nowhere"):
        hidden = await ha.post(
            "/tokens/add",
            {
                "csrf_token": page.csrf_token,
                "name": f"t-{camera}",
                "scope": "view",
                "camera": camera,
            },
        )
        assert hidden.code == 400
        assert f"There is no camera named &#39;{camera}&#39; that you may watch" in hidden.text
    names = [t.name for t in await daemon.accounts.tokens.list("ha")]
    assert names == ["everything", "garden only"]
