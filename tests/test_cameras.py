"""Several cameras in one daemon (CONTRACT §6), on 127.0.0.1: routes, access, live changes,
exclusive control, tokens limited to cameras."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import threads
from twisted.internet.defer import Deferred

from camproxy.accounts.access import Level
from camproxy.accounts.cameras import CameraChanges
from camproxy.web.auth import SESSION_COOKIE
from tests.clirun import camproxy
from tests.conftest import RunningCamera, RunningDaemon, wait_until
from tests.test_reported_defects import raw_upgrade
from tests.wsclient import RecordingViewer, close_viewer, connect_viewer

Headers = dict[bytes | str, bytes | str]


async def two_cameras(demo_camera_factory: Any, daemon_factory: Any) -> RunningDaemon:
    daemon, _default, _garden = await two_emulated_cameras(demo_camera_factory, daemon_factory)
    return daemon


async def two_emulated_cameras(
    demo_camera_factory: Any, daemon_factory: Any
) -> tuple[RunningDaemon, RunningCamera, RunningCamera]:
    """A daemon with ``default`` and ``garden``, and the emulators behind them (in order)."""
    first = await demo_camera_factory()
    second = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=first.url)
    await daemon.accounts.cameras.add("garden", second.url, title="The garden")
    await apply_changes(daemon)
    return daemon, first, second


async def apply_changes(daemon: RunningDaemon) -> None:
    """What the camera watcher does every two seconds, now."""
    await daemon.service.getServiceNamed("camera-watcher").check()


async def check_credentials(daemon: RunningDaemon) -> None:
    """What the credential watcher does every five seconds, now."""
    await daemon.service.getServiceNamed("credentials").check()


async def cookie(daemon: RunningDaemon, name: str, **flags: Any) -> Headers:
    return {"Cookie": f"{SESSION_COOKIE}={await daemon.session(name, **flags)}"}


async def camera_viewer(
    daemon: RunningDaemon, camera: str, name: str = "viewer", **flags: Any
) -> RecordingViewer:
    headers = {"Cookie": f"{SESSION_COOKIE}={await daemon.session(name, **flags)}"}
    viewer = await connect_viewer(
        daemon.reactor, daemon.port, headers=headers, path=f"/cam/{camera}/ws"
    )
    await viewer.wait_event("hello")
    return viewer


async def within(daemon: RunningDaemon, waiting: Deferred[Any], seconds: float = 10.0) -> Any:
    """Wait for an event that should come, failing (not hanging) when it does not."""
    waiting.addTimeout(seconds, daemon.reactor)
    return await waiting


async def get(daemon: RunningDaemon, path: str, headers: Headers) -> tuple[int, bytes]:
    response = await treq.get(daemon.url + path, headers=headers)
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_each_camera_has_its_routes_and_hello(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await two_cameras(demo_camera_factory, daemon_factory)
    viewer = await camera_viewer(daemon, "garden")
    hello = viewer.of_type("hello")[0]
    assert (hello["camera"], hello["access"], hello["control"]) == ("garden", "control", "shared")
    assert hello["capabilities"] == {"pan_tilt": True, "light": True}
    await viewer.wait_frames(2)
    headers = await cookie(daemon, "viewer")
    code, body = await get(daemon, "/api/cameras", headers)
    listed = json.loads(body)
    assert code == 200 and [c["name"] for c in listed] == ["default", "garden"]
    assert set(listed[1]) >= {
        "name",
        "title",
        "kind",
        "esp32_connected",
        "clients",
        "access",
        "control",
        "capabilities",
    }
    assert listed[1]["title"] == "The garden" and listed[1]["clients"] == 1
    for path in ("/cam/garden/snapshot.jpg", "/snapshot.jpg"):
        code, body = await get(daemon, path, headers)
        assert code == 200 and body[:2] == b"\xff\xd8", path
    code, body = await get(daemon, "/api/cameras/garden/status", headers)
    assert code == 200 and json.loads(body)["esp32_connected"] is True
    code, body = await get(daemon, "/cam/garden/", headers)
    assert code == 200 and b"/cam/garden/ws" in body
    code, body = await get(daemon, "/", headers)
    assert code == 200 and b"camera-grid" in body
    health = json.loads((await get(daemon, "/health", {}))[1])
    assert health["cameras"] == {"total": 2, "connected": 2, "degraded": 0}
    assert health["clients"] == 1 and "garden" not in json.dumps(health)
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_a_camera_one_may_not_see_is_like_one_that_does_not_exist(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await two_cameras(demo_camera_factory, daemon_factory)
    await daemon.user("carol")
    await daemon.accounts.cameras.grant("garden", "carol", Level.NONE)
    headers = await cookie(daemon, "carol")
    listed = json.loads((await get(daemon, "/api/cameras", headers))[1])
    assert [c["name"] for c in listed] == ["default"]
    for suffix in ("/", "/snapshot.jpg", "/stream.mjpg"):
        hidden = await get(daemon, f"/cam/garden{suffix}", headers)
        missing = await get(daemon, f"/cam/nowhere{suffix}", headers)
        assert hidden[0] == missing[0] == 404, suffix
        assert hidden[1] == missing[1].replace(b"nowhere", b"garden"), suffix
    for suffix in ("/status",):
        hidden = await get(daemon, f"/api/cameras/garden{suffix}", headers)
        missing = await get(daemon, f"/api/cameras/nowhere{suffix}", headers)
        assert hidden == missing and hidden[0] == 404
    invalid = await get(daemon, "/cam/Not-A-Name/", headers)
    assert invalid[0] == 404
    raw_cookie = headers["Cookie"]
    assert isinstance(raw_cookie, str)
    hidden_ws = await threads.deferToThread(
        raw_upgrade_to, daemon.port, "/cam/garden/ws", raw_cookie
    )
    missing_ws = await threads.deferToThread(
        raw_upgrade_to, daemon.port, "/cam/nowhere/ws", raw_cookie
    )
    assert hidden_ws[0] == missing_ws[0] == 404
    assert hidden_ws[1].split(b"\r\nDate:")[0] == missing_ws[1].split(b"\r\nDate:")[0]


def raw_upgrade_to(port: int, path: str, cookie: str) -> tuple[int, bytes]:
    status, answer = raw_upgrade(port, {"Cookie": cookie}, path=path)
    return status, answer


@pytest_twisted.ensureDeferred
async def test_live_changes_apply_and_spare_the_other_cameras(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await two_cameras(demo_camera_factory, daemon_factory)
    third = await demo_camera_factory()
    watching_default = await camera_viewer(daemon, "default")
    watching_garden = await camera_viewer(daemon, "garden")
    await watching_garden.wait_frames(1)

    # A new URL reconnects: the viewers stay and hear the link go down and up.
    await daemon.accounts.cameras.set("garden", CameraChanges(url=third.url))
    await apply_changes(daemon)
    await watching_garden.wait_event("camera_status", esp32_connected=False)
    await watching_garden.wait_for(
        lambda v: v.of_type("camera_status")[-1]["esp32_connected"] is True
    )
    frames = len(watching_garden.frames)
    await watching_garden.wait_frames(frames + 1)
    assert third.camera.connects >= 1

    # A removed camera closes its viewers' sockets, and only those.
    await daemon.accounts.cameras.remove("garden")
    await apply_changes(daemon)
    _clean, code, reason = await watching_garden.closed
    assert code == 4004 and reason == "camera removed"
    assert daemon.fleet.get("garden") is None
    frames = len(watching_default.frames)
    await watching_default.wait_frames(frames + 2)
    assert not watching_default.closed.called
    await close_viewer(watching_default)


@pytest_twisted.ensureDeferred
async def test_changed_access_closes_what_it_no_longer_allows(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await two_cameras(demo_camera_factory, daemon_factory)
    carol = await camera_viewer(daemon, "garden", "carol")
    alice = await camera_viewer(daemon, "garden", "alice")
    assert alice.of_type("hello")[0]["access"] == "control"
    await daemon.accounts.cameras.grant("garden", "alice", Level.VIEW)
    await daemon.accounts.cameras.set("garden", CameraChanges(access=Level.NONE))
    await apply_changes(daemon)
    await check_credentials(daemon)
    _clean, code, _reason = await carol.closed
    assert code == 4002
    # Alice dropped from control to view: she stays, is told, and her commands are refused.
    await alice.wait_event("access", access="view")
    assert not alice.closed.called
    alice.send_json({"type": "servo_command", "command": "up"})
    await alice.wait_event("error")
    with pytest.raises(ConnectionError):
        await camera_viewer(daemon, "garden", "carol")
    await close_viewer(alice)


@pytest_twisted.ensureDeferred
async def test_exclusive_control_as_two_users_see_it(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await two_cameras(demo_camera_factory, daemon_factory)
    await daemon.accounts.cameras.set("garden", CameraChanges(control="exclusive"))
    await apply_changes(daemon)
    alice = await camera_viewer(daemon, "garden", "alice")
    bob = await camera_viewer(daemon, "garden", "bob")
    assert alice.of_type("hello")[0]["control"] == "exclusive"
    alice.send_json({"type": "servo_command", "command": "up"})
    await bob.wait_event("control", holder="alice")
    bob.send_json({"type": "servo_command", "command": "down"})
    await bob.wait_for(lambda v: any("alice" in e["message"] for e in v.of_type("error")))
    # REST: 409 for another user, while alice holds it.
    await daemon.user("bot")
    _record, secret = await daemon.accounts.tokens.create("bot", "script", "control")
    bearer: Headers = {"Authorization": f"Bearer {secret}"}
    answer = await treq.post(
        daemon.url + "/api/cameras/garden/servo", data=b'{"command":"left"}', headers=bearer
    )
    assert answer.code == 409 and "alice" in json.loads(await answer.content())["error"]
    # A viewer that joins while the control is held is told who holds it, after hello.
    joined = await camera_viewer(daemon, "garden", "carol")
    await within(daemon, joined.wait_event("control", holder="alice"))
    kinds = [e["type"] for e in joined.events]
    assert kinds.index("hello") < kinds.index("control")
    alice.send_json({"type": "release_control"})
    await bob.wait_event("control", holder=None)
    await within(daemon, joined.wait_event("control", holder=None))
    # Once released, a newcomer gets no control message. The answer to a message of its
    # own comes after everything sent on joining, so it is a barrier; not get_position's
    # position_update, since joining brings one already: an error, which joining does not.
    late = await camera_viewer(daemon, "garden", "dave")
    late.send_json({"type": "no_such_message"})
    await within(daemon, late.wait_event("error"))
    assert late.of_type("control") == []
    for viewer in (alice, bob, joined, late):
        await close_viewer(viewer)


async def bearer_token(daemon: RunningDaemon, user: str, scope: str, **flags: Any) -> Headers:
    """A fresh API token of ``user`` (created on first use) as an Authorization header."""
    cameras = flags.pop("cameras", ())
    await daemon.user(user, **flags)
    _record, secret = await daemon.accounts.tokens.create(
        user, f"token-{secrets.token_hex(4)}", scope, cameras=cameras
    )
    return {"Authorization": f"Bearer {secret}"}


async def post(
    daemon: RunningDaemon, path: str, fields: object, headers: Headers
) -> tuple[int, Any]:
    response = await treq.post(daemon.url + path, data=json.dumps(fields).encode(), headers=headers)
    return response.code, json.loads(await response.content())


def commands(camera: RunningCamera) -> list[str]:
    """What an emulated RoboCam was sent, frame requests left out."""
    return [m for m in camera.camera.received if m != "getframe"]


@pytest_twisted.ensureDeferred
async def test_per_camera_commands_reach_that_camera_and_no_other(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, default, garden = await two_emulated_cameras(demo_camera_factory, daemon_factory)
    # Watched, both links stay up (a command to a camera that is down gets 503).
    on_default = await camera_viewer(daemon, "default")
    on_garden = await camera_viewer(daemon, "garden")
    await within(daemon, on_default.wait_event("position_update"))
    await within(daemon, on_garden.wait_event("position_update"))
    bot = await bearer_token(daemon, "bot", "control")
    sent = [
        ("servo", {"command": "left"}, "left"),
        ("position", {"x": 120, "y": 60}, '{"x":120,"y":60}'),
        ("light", {"state": True}, "light_on"),
    ]
    for route, fields, message in sent:
        answer = await post(daemon, f"/api/cameras/garden/{route}", fields, bot)
        assert answer == (200, {"ok": True}), route
        await wait_until(reactor, lambda m=message: m in commands(garden))  # type: ignore[misc]
    await within(daemon, on_garden.wait_event("position_update", x=120, y=60))
    await within(daemon, on_garden.wait_event("light_update", state=True))
    # A barrier on default's link: the v1 route addresses default; once its command has
    # arrived, anything sent to default before it has too.
    assert await post(daemon, "/api/servo", {"command": "down"}, bot) == (200, {"ok": True})
    await wait_until(reactor, lambda: "down" in commands(default))
    assert not any(message in commands(default) for _route, _fields, message in sent)
    assert "down" not in commands(garden)
    assert default.camera.camera.light is False and garden.camera.camera.light is True
    await close_viewer(on_default)
    await close_viewer(on_garden)


@pytest_twisted.ensureDeferred
async def test_per_camera_commands_below_control_get_403_and_hidden_ones_404(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon, _default, garden = await two_emulated_cameras(demo_camera_factory, daemon_factory)
    on_garden = await camera_viewer(daemon, "garden")
    await within(daemon, on_garden.wait_event("position_update"))
    await daemon.user("eve")
    await daemon.user("mallory")
    await daemon.accounts.cameras.grant("garden", "eve", Level.VIEW)
    await daemon.accounts.cameras.grant("garden", "mallory", Level.NONE)
    await apply_changes(daemon)
    await check_credentials(daemon)
    below_control = {
        "a view token": await bearer_token(daemon, "ha", "view"),
        "a control token of a view grant": await bearer_token(daemon, "eve", "control"),
        "a control token of a nocontrol user": await bearer_token(
            daemon, "kid", "control", control=False
        ),
    }
    routes = [
        ("servo", {"command": "right"}),
        ("position", {"x": 10, "y": 10}),
        ("light", {"state": True}),
    ]
    for who, headers in below_control.items():
        for route, fields in routes:
            code, _body = await post(daemon, f"/api/cameras/garden/{route}", fields, headers)
            assert code == 403, (who, route)
    # Eve's level is per camera: on default (access control) her control token works.
    eve = below_control["a control token of a view grant"]
    assert await post(daemon, "/api/cameras/default/servo", {"command": "up"}, eve) == (
        200,
        {"ok": True},
    )

    hidden = {
        "a control token of a none grant": await bearer_token(daemon, "mallory", "control"),
        "a control token for default only": await bearer_token(
            daemon, "bot", "control", cameras=["default"]
        ),
    }
    for who, headers in hidden.items():
        for route, fields in routes:
            refused = await post(daemon, f"/api/cameras/garden/{route}", fields, headers)
            missing = await post(daemon, f"/api/cameras/nowhere/{route}", fields, headers)
            assert refused == missing and refused[0] == 404, (who, route)

    # None of that reached the camera: a command that may pass is a barrier behind them.
    bot = await bearer_token(daemon, "bot", "control")
    assert await post(daemon, "/api/cameras/garden/servo", {"command": "down"}, bot) == (
        200,
        {"ok": True},
    )
    await wait_until(reactor, lambda: "down" in commands(garden))
    assert not {"right", "light_on", '{"x":10,"y":10}', "up"} & set(commands(garden))
    assert garden.camera.camera.light is False
    await close_viewer(on_garden)


@pytest_twisted.ensureDeferred
async def test_without_default_the_v1_routes_answer_404(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await two_cameras(demo_camera_factory, daemon_factory)
    watching_default = await camera_viewer(daemon, "default")
    await daemon.accounts.cameras.remove("default")
    await apply_changes(daemon)
    await within(daemon, watching_default.closed)
    assert daemon.fleet.get("default") is None
    headers = await cookie(daemon, "viewer")
    bot = await bearer_token(daemon, "bot", "control")
    for path in ("/snapshot.jpg", "/stream.mjpg", "/api/status"):
        for credentials in (headers, bot):
            code, _body = await get(daemon, path, credentials)
            assert code == 404, path
    for path, fields in (
        ("/api/servo", {"command": "up"}),
        ("/api/position", {"x": 90, "y": 45}),
        ("/api/light", {"state": True}),
    ):
        code, _body = await post(daemon, path, fields, bot)
        assert code == 404, path
    raw_cookie = headers["Cookie"]
    assert isinstance(raw_cookie, str)
    v1_ws = await threads.deferToThread(raw_upgrade_to, daemon.port, "/ws", raw_cookie)
    missing_ws = await threads.deferToThread(
        raw_upgrade_to, daemon.port, "/cam/nowhere/ws", raw_cookie
    )
    assert v1_ws[0] == missing_ws[0] == 404
    with pytest.raises(ConnectionError):
        await daemon.viewer("viewer")

    health = json.loads((await get(daemon, "/health", {}))[1])
    assert health["esp32_connected"] is False
    assert health["cameras"]["total"] == 1

    # The other camera is untouched.
    listed = json.loads((await get(daemon, "/api/cameras", headers))[1])
    assert [c["name"] for c in listed] == ["garden"]
    code, body = await get(daemon, "/cam/garden/", headers)
    assert code == 200 and b"/cam/garden/ws" in body
    code, body = await get(daemon, "/cam/garden/snapshot.jpg", headers)
    assert code == 200 and body[:2] == b"\xff\xd8"
    viewer = await camera_viewer(daemon, "garden")
    await within(daemon, viewer.wait_frames(2))
    assert await post(daemon, "/api/cameras/garden/light", {"state": True}, bot) == (
        200,
        {"ok": True},
    )
    await within(daemon, viewer.wait_event("light_update", state=True))
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_tokens_limited_to_cameras_see_no_others(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    daemon = await two_cameras(demo_camera_factory, daemon_factory)
    await daemon.user("ha")
    _record, secret = await daemon.accounts.tokens.create("ha", "garden only", cameras=["garden"])
    headers: Headers = {"Authorization": f"Bearer {secret}"}
    listed = json.loads((await get(daemon, "/api/cameras", headers))[1])
    assert [c["name"] for c in listed] == ["garden"] and listed[0]["access"] == "view"
    assert (await get(daemon, "/snapshot.jpg", headers))[0] == 404
    assert (await get(daemon, "/cam/garden/snapshot.jpg", headers))[0] == 200
    assert (await get(daemon, f"/cam/default/snapshot.jpg?token={secret}", {}))[0] == 404


@pytest_twisted.ensureDeferred
async def test_a_hundred_cameras_in_the_table(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    """Many cameras neither slow the start nor the list (their links are lazy: idle)."""
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    for number in range(100):
        await daemon.accounts.cameras.add(
            f"cam-{number:03d}", "http://127.0.0.1:9/", idle_close=1.0
        )
    started = reactor.seconds()
    await apply_changes(daemon)
    applied = reactor.seconds() - started
    headers = await cookie(daemon, "viewer")
    started = reactor.seconds()
    listed = json.loads((await get(daemon, "/api/cameras", headers))[1])
    listing = reactor.seconds() - started
    assert len(listed) == 101
    await wait_until(reactor, lambda: len(daemon.fleet) == 101)
    print(f"100 cameras: applied in {applied * 1000:.0f} ms, listed in {listing * 1000:.0f} ms")
    # Loose bounds (a loaded CI machine is slow), far below what an eager link per camera
    # or a per-camera database query would cost.
    assert applied < 5.0, f"applying 100 cameras took {applied:.2f} s"
    assert listing < 1.0, f"listing 101 cameras took {listing:.2f} s"


def test_the_default_camera_at_start(reactor: Any, tmp_path: Any) -> None:
    """CONTRACT §6: --camera creates or re-points default; without it an empty database
    gets default at the v1 address, and one with other cameras is left alone."""
    from camproxy.accounts.cameras import CameraSeed
    from camproxy.accounts.passwords import FastHasher
    from camproxy.accounts.service import AccountsService, StartupSettings

    def cameras_after(database: str, *seeds: CameraSeed) -> dict[str, str]:
        settings = StartupSettings(database=database, cameras=seeds)
        accounts = AccountsService.open(reactor, settings, FastHasher())
        try:
            return {r.name: r.url for r in accounts.cameras.list_now()}
        finally:
            accounts.database.close()

    empty = str(tmp_path / "empty.db")
    assert cameras_after(empty) == {"default": "ws://192.168.1.100:80/ws"}
    given = str(tmp_path / "given.db")
    assert cameras_after(given, CameraSeed("default", "ws://cam.lan/ws")) == {
        "default": "ws://cam.lan/ws"
    }
    assert cameras_after(given, CameraSeed("default", "http://esp.lan/")) == {
        "default": "http://esp.lan/"
    }
    others = str(tmp_path / "others.db")
    settings = StartupSettings(database=others, cameras=(CameraSeed("garden", "http://g/"),))
    AccountsService.open(reactor, settings, FastHasher()).database.close()
    assert cameras_after(others) == {"garden": "http://g/"}


@pytest_twisted.ensureDeferred
async def test_changes_from_the_shell_reach_a_running_daemon_on_their_own(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, tmp_path: Any
) -> None:
    # CONTRACT §6: a running daemon applies every change made from the shell within 10 s,
    # by its own watcher (no test calls it here).
    first = await demo_camera_factory()
    porch = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=first.url)
    database = daemon.config.database
    started = reactor.seconds()
    added = await threads.deferToThread(
        camproxy, tmp_path, "camera", "add", "porch", porch.url, "--database", database
    )
    assert added.code == 0, added.err
    await wait_until(reactor, lambda: daemon.fleet.get("porch") is not None, 12.0)
    assert reactor.seconds() - started < 10.0 + 2.0  # the CLI process's start included
    viewer = await camera_viewer(daemon, "porch")
    await within(daemon, viewer.wait_frames(1))

    started = reactor.seconds()
    removed = await threads.deferToThread(
        camproxy, tmp_path, "camera", "remove", "porch", "--database", database
    )
    assert removed.code == 0, removed.err
    _clean, code, reason = await within(daemon, viewer.closed, 12.0)
    assert (code, reason) == (4004, "camera removed")
    assert reactor.seconds() - started < 10.0 + 2.0
