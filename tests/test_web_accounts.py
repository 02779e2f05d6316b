"""CONTRACT §2 (pages, login, logout), §3's handshake and the admin page, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer

from camproxy.web.auth import SESSION_COOKIE
from tests.browserlike import Browser
from tests.conftest import PASSWORD
from tests.test_core_integration import handshake_status
from tests.wsclient import close_viewer, connect_viewer


def daemon_factory_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def daemon_with_camera(demo_camera_factory: Any, daemon_factory: Any, **settings: Any) -> Any:
    camera = await demo_camera_factory()
    return await daemon_factory(camera_url=camera.url, **settings)


@pytest_twisted.ensureDeferred
async def test_pages_need_a_session(demo_camera_factory: Any, daemon_factory: Any) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    browser = Browser(daemon.url)
    page = await browser.get("/")
    assert (page.code, page.header("Location")) == (302, "/login")
    admin = await browser.get("/admin/users")
    assert admin.code == 302 and (admin.header("Location") or "").startswith("/login?next=")
    form = await browser.get("/login")
    assert form.code == 200 and form.csrf_token
    assert 'name="username"' in form.text and 'name="password"' in form.text


@pytest_twisted.ensureDeferred
async def test_login_sets_a_fresh_hardened_session_cookie(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    await daemon.user("alice")
    browser = Browser(daemon.url)
    first = await browser.login("alice", PASSWORD)
    assert (first.code, first.header("Location")) == (302, "/")
    (cookie_header,) = [c for c in first.all_headers("Set-Cookie") if SESSION_COOKIE in c]
    flags = {part.strip().split("=")[0].lower() for part in cookie_header.split(";")}
    assert {"httponly", "path", "samesite"} <= flags and "secure" not in flags
    assert "samesite=lax" in cookie_header.lower() and "path=/" in cookie_header.lower()
    first_id = browser.cookie(SESSION_COOKIE)
    assert first_id and len(first_id) >= 22  # >= 128 bits, url-safe base64

    page = await browser.get("/")
    assert page.code == 200 and "alice" in page.text

    again = await browser.login("alice", PASSWORD)
    assert again.code == 302
    second_id = browser.cookie(SESSION_COOKIE)
    assert second_id != first_id
    stale = Browser(daemon.url, {SESSION_COOKIE: first_id})
    assert (await stale.get("/")).code == 302  # the earlier id is not reused


@pytest_twisted.ensureDeferred
async def test_failed_logins_are_generic_401s(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    await daemon.user("alice")
    browser = Browser(daemon.url)
    wrong = await browser.login("alice", "wrong password")
    unknown = await browser.login("nobody", "wrong password")
    assert wrong.code == unknown.code == 401
    assert 'name="csrf_token"' in wrong.text
    assert "Invalid username or password" in wrong.text
    assert "Invalid username or password" in unknown.text
    assert browser.cookie(SESSION_COOKIE) is None


@pytest_twisted.ensureDeferred
async def test_login_without_or_with_a_bad_csrf_token_is_403(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    await daemon.user("alice")
    browser = Browser(daemon.url)
    missing = await browser.post("/login", {"username": "alice", "password": PASSWORD})
    forged = await browser.post(
        "/login", {"username": "alice", "password": PASSWORD, "csrf_token": "1.2.3"}
    )
    assert missing.code == forged.code == 403
    assert browser.cookie(SESSION_COOKIE) is None
    token = (await browser.get("/login")).csrf_token
    cross_site = await browser.post(
        "/login",
        {"username": "alice", "password": PASSWORD, "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.code == 403


@pytest_twisted.ensureDeferred
async def test_failed_logins_are_throttled_with_retry_after(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    await daemon.user("alice")
    browser = Browser(daemon.url)
    codes = [(await browser.login("alice", "nope")).code for _ in range(5)]
    assert codes == [401] * 5
    blocked = await browser.login("alice", PASSWORD)
    assert blocked.code == 429
    retry_after = blocked.header("Retry-After")
    assert retry_after is not None and int(retry_after) > 0
    # Another name from the same address still gets in until the address limit.
    await daemon.user("bob")
    assert (await browser.login("bob", PASSWORD)).code == 302


@pytest_twisted.ensureDeferred
async def test_next_redirects_only_to_local_paths(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    await daemon.user("alice")
    for target, expected in [
        ("/admin/users", "/admin/users"),
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ]:
        page = await Browser(daemon.url).login("alice", PASSWORD, next_path=target)
        assert (page.code, page.header("Location")) == (302, expected), target


@pytest_twisted.ensureDeferred
async def test_logout_ends_the_session_and_closes_its_socket(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    await daemon.user("alice")
    for method in ("POST", "GET"):
        browser = Browser(daemon.url)
        await browser.login("alice", PASSWORD)
        session_id = browser.cookie(SESSION_COOKIE)
        viewer = await connect_viewer(
            daemon.reactor, daemon.port, headers={"Cookie": f"{SESSION_COOKIE}={session_id}"}
        )
        await viewer.wait_event("hello")
        page = await (browser.post("/logout") if method == "POST" else browser.get("/logout"))
        assert (page.code, page.header("Location")) == (302, "/login")
        _clean, code, _reason = await viewer.closed
        assert code == 4001
        status = await handshake_status(daemon.port, {"Cookie": f"{SESSION_COOKIE}={session_id}"})
        assert status == 403
        assert browser.cookie(SESSION_COOKIE) is None
        assert session_id is not None
        assert (await Browser(daemon.url, {SESSION_COOKIE: session_id}).get("/")).code == 302


@pytest_twisted.ensureDeferred
async def test_websocket_needs_a_session_and_an_allowed_origin(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(
        demo_camera_factory, daemon_factory, allowed_origins=("https://cam.example.org",)
    )
    session_id = await daemon.session("alice", admin=True)
    cookie = f"{SESSION_COOKIE}={session_id}"
    own = f"http://127.0.0.1:{daemon.port}"
    assert await handshake_status(daemon.port, {}) == 403
    assert await handshake_status(daemon.port, {"Origin": own}) == 403
    assert await handshake_status(daemon.port, {"Cookie": f"{SESSION_COOKIE}=forged"}) == 403
    assert await handshake_status(daemon.port, {"Cookie": cookie, "Origin": "http://evil"}) == 403
    for headers in (
        {"Cookie": cookie},
        {"Cookie": cookie, "Origin": own},
        {"Cookie": cookie, "Origin": "https://cam.example.org"},
    ):
        viewer = await connect_viewer(daemon.reactor, daemon.port, headers=headers)
        await viewer.wait_event("hello")
        hello = viewer.events[0]
        assert (hello["type"], hello["user"], hello["is_admin"]) == ("hello", "alice", True)
        await close_viewer(viewer)
    sessions = daemon.accounts.sessions
    assert sessions is not None
    assert await sessions.lookup("forged") is None


@pytest_twisted.ensureDeferred
async def test_watchers_without_control_get_errors(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    watcher = await daemon.viewer("watcher", control=False)
    await watcher.wait_event("position_update")
    assert watcher.events[0]["can_control"] is False
    watcher.send_json({"type": "servo_command", "command": "up"})
    watcher.send_json({"type": "light_command", "state": True})
    await watcher.wait_for(lambda v: len(v.of_type("error")) == 2)
    assert "up" not in camera.camera.received and "light_on" not in camera.camera.received
    await close_viewer(watcher)


@pytest_twisted.ensureDeferred
async def test_disable_delete_and_password_change_close_sockets(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    users = daemon.accounts.users
    watcher = daemon.service.getServiceNamed("credentials")
    assert users is not None and watcher is not None
    changes = [
        ("carol", lambda: users.set_active("carol", False)),
        ("dave", lambda: users.delete("dave")),
        ("erin", lambda: users.set_password("erin", "another password")),
    ]
    for name, change in changes:
        viewer = await daemon.viewer(name)
        await viewer.wait_event("hello")
        await change()  # as `camproxy user …` would, in another process: no direct close
        await _session_watcher(daemon).check()
        _clean, code, _reason = await viewer.closed
        assert code == 4001, name


def _session_watcher(daemon: Any) -> Any:
    return daemon.service.getServiceNamed("credentials")


@pytest_twisted.ensureDeferred
async def test_sessions_survive_a_restart(
    demo_camera_factory: Any, daemon_factory: Any, tmp_path: Any
) -> None:
    camera = await demo_camera_factory()
    database = str(tmp_path / "shared.db")
    first = await daemon_factory(camera_url=camera.url, database=database)
    await first.user("alice")
    browser = Browser(first.url)
    await browser.login("alice", PASSWORD)
    await defer.maybeDeferred(first.service.stopService)
    second = await daemon_factory(camera_url=camera.url, database=database)
    browser.base = second.url
    page = await browser.get("/")
    assert page.code == 200 and "alice" in page.text


@pytest_twisted.ensureDeferred
async def test_security_headers_on_every_page(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    browser = Browser(daemon.url)
    for path in ("/login", "/", "/health", "/static/css/style.css", "/nonexistent"):
        page = await browser.get(path)
        csp = page.header("Content-Security-Policy") or ""
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp
        assert page.header("X-Content-Type-Options") == "nosniff"
        assert page.header("Referrer-Policy")


@pytest_twisted.ensureDeferred
async def test_admin_page(demo_camera_factory: Any, daemon_factory: Any) -> None:
    daemon = await daemon_with_camera(demo_camera_factory, daemon_factory)
    await daemon.user("root", admin=True)
    await daemon.user("plain")
    plain = Browser(daemon.url)
    await plain.login("plain", PASSWORD)
    assert (await plain.get("/admin/users")).code == 403
    assert (await plain.post("/admin/users/add", {"username": "x", "password": "y"})).code == 403

    admin = Browser(daemon.url)
    await admin.login("root", PASSWORD)
    listing = await admin.get("/admin/users")
    assert listing.code == 200 and "plain" in listing.text
    token = listing.csrf_token

    no_token = await admin.post("/admin/users/add", {"username": "new", "password": "pw"})
    assert no_token.code == 403
    added = await admin.post(
        "/admin/users/add", {"username": "newbie", "password": "pw", "csrf_token": token}
    )
    assert added.code == 303
    assert (await Browser(daemon.url).login("newbie", "pw")).code == 302

    for path, field in [
        ("/admin/users/newbie/control", {"can_control": "0"}),
        ("/admin/users/newbie/control", {"can_control": "1"}),
        ("/admin/users/newbie/control", {"can_control": "0"}),
        ("/admin/users/newbie/admin", {"is_admin": "1"}),
        ("/admin/users/newbie/password", {"password": "changed"}),
        ("/admin/users/newbie/active", {"active": "0"}),
    ]:
        assert (await admin.post(path, {**field, "csrf_token": token})).code == 303, path
    users = daemon.accounts.users
    newbie = await users.get("newbie")
    assert newbie is not None
    assert (newbie.can_control, newbie.is_admin, newbie.active) == (False, True, False)
    assert (await admin.post("/admin/users/newbie/delete", {"csrf_token": token})).code == 303
    assert await users.get("newbie") is None

    last = await admin.post("/admin/users/root/admin", {"is_admin": "0", "csrf_token": token})
    assert last.code == 303 and "error=LastAdmin" in (last.header("Location") or "")
    shown = await admin.get(last.header("Location") or "")
    assert "no active admin" in shown.text
    root = await users.get("root")
    assert root is not None and root.is_admin


@pytest_twisted.ensureDeferred
async def test_admin_bootstrap_from_environment(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await daemon_with_camera(
        demo_camera_factory, daemon_factory, admin_username="boss", admin_password="letmein"
    )
    page = await Browser(daemon.url).login("boss", "letmein")
    assert page.code == 302
    boss = await daemon.accounts.users.get("boss")
    assert boss is not None and boss.is_admin


@pytest_twisted.ensureDeferred
async def test_flask_users_log_in_with_their_old_passwords(
    demo_camera_factory: Any, daemon_factory: Any, tmp_path: Any
) -> None:
    from camproxy.accounts.passwords import BcryptHasher
    from tests.legacy_db import LegacyUser, create_legacy_database

    database = tmp_path / "robocam.db"
    create_legacy_database(database, [LegacyUser("olduser", "old-secret")], rounds=4)
    daemon = await daemon_with_camera(
        demo_camera_factory,
        daemon_factory,
        database=str(database),
        hasher=BcryptHasher(daemon_factory_reactor(), rounds=4),
    )
    page = await Browser(daemon.url).login("olduser", "old-secret")
    assert page.code == 302
