"""The contract's camera and viewer promises, end to end over 127.0.0.1 sockets."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest_twisted
import treq
from PIL import Image

from tests.conftest import wait_until
from tests.wsclient import close_viewer


def assert_jpeg(data: bytes) -> None:
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    Image.open(io.BytesIO(data)).verify()


async def get_json(url: str) -> tuple[int, Any]:
    response = await treq.get(url)
    return response.code, json.loads(await response.text())


async def handshake_status(port: int, headers: dict[str, str]) -> int:
    """Status of a WebSocket upgrade request that is expected to be refused."""
    upgrade: dict[bytes | str, bytes | str] = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    upgrade.update(headers)
    response = await treq.get(f"http://127.0.0.1:{port}/ws", headers=upgrade)
    await response.content()
    return int(response.code)


@pytest_twisted.ensureDeferred
async def test_health_and_hello_with_a_connected_camera(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    await wait_until(reactor, lambda: daemon.hub.connected)
    code, health = await get_json(daemon.url + "/health")
    assert code == 200
    assert health == {
        "status": "healthy",
        "esp32_connected": True,
        "clients": 0,
        "cameras": {"total": 1, "connected": 1, "degraded": 0},
    }

    viewer = await daemon.viewer()
    await viewer.wait_event("client_count", count=1)
    hello = viewer.events[0]
    assert hello["type"] == "hello" and hello["esp32_connected"] is True
    assert {"user", "is_admin"} <= hello.keys()
    code, health = await get_json(daemon.url + "/health")
    assert health["clients"] == 1
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_viewer_gets_valid_jpeg_frames_exactly_as_sent(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory(push_frames=False)
    daemon = await daemon_factory(camera_url=camera.url, max_fps=20)
    viewer = await daemon.viewer()
    await viewer.wait_frames(5)
    for frame in viewer.frames:
        assert_jpeg(frame)
    assert camera.camera.received.count("getframe") >= 5
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_servo_command_moves_the_camera_and_updates_everyone(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    mover = await daemon.viewer()
    other = await daemon.viewer()
    await other.wait_event("position_update")
    mover.send_json({"type": "servo_command", "command": "up"})
    await other.wait_event("position_update", x=90, y=35)
    assert "up" in camera.camera.received

    mover.send_json({"type": "position_command", "x": 120, "y": 60})
    await other.wait_event("position_update", x=120, y=60)
    assert '{"x":120,"y":60}' in camera.camera.received

    mover.send_json({"type": "light_command", "state": True})
    await other.wait_event("light_update", state=True)
    assert "light_on" in camera.camera.received
    await close_viewer(mover)
    await close_viewer(other)


@pytest_twisted.ensureDeferred
async def test_bad_messages_get_errors_and_never_reach_the_camera(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    viewer = await daemon.viewer()
    # The camera's limits are known once its position (asked after them) arrives.
    await viewer.wait_event("position_update")
    before = list(camera.camera.received)
    bad = [
        "nonsense",
        json.dumps({"type": "servo_command", "command": "getframe"}),
        json.dumps({"type": "position_command", "x": 45.5, "y": 10}),
        json.dumps({"type": "position_command", "x": "90", "y": 10}),
        json.dumps({"type": "position_command", "x": 90, "y": 91}),
        json.dumps({"type": "light_command", "state": 1}),
    ]
    for text in bad:
        viewer.sendMessage(text.encode(), isBinary=False)
    viewer.sendMessage(b"\xff\xd8binary\xff\xd9", isBinary=True)
    await viewer.wait_for(lambda v: len(v.of_type("error")) >= len(bad) + 1)
    assert [m for m in camera.camera.received[len(before) :] if m != "getframe"] == []
    assert viewer.closed.called is False
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_oversized_text_closes_with_1009(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    viewer = await daemon.viewer()
    viewer.sendMessage(b'{"type":"get_position","pad":"' + b"x" * 70000 + b'"}')
    _clean, code, _reason = await viewer.closed
    assert code == 1009


@pytest_twisted.ensureDeferred
async def test_silent_camera_requests_are_given_up_and_resent(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory(push_frames=False, answer_getframe=False)
    daemon = await daemon_factory(camera_url=camera.url, frame_timeout=0.5)
    viewer = await daemon.viewer()
    await wait_until(reactor, lambda: camera.camera.received.count("getframe") >= 3)
    assert viewer.frames == []
    assert daemon.hub.stats.frame_request_timeouts >= 2
    camera.camera.answer_getframe = True
    await viewer.wait_frames(2)
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_garbage_from_the_camera_never_reaches_viewers(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    junk = iter([b"\xff\xd8truncated", b"GIF89a....", b"\x00" * 100] * 1000)
    camera = await demo_camera_factory(push_frames=False, frame_source=lambda: next(junk))
    daemon = await daemon_factory(camera_url=camera.url, max_fps=50)
    viewer = await daemon.viewer()
    await wait_until(reactor, lambda: daemon.hub.stats.frames_invalid >= 10)
    assert viewer.frames == []
    assert daemon.hub.connected
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_camera_drops_and_returns(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    viewer = await daemon.viewer()
    await viewer.wait_frames(1)
    camera.camera.drop_all()
    await viewer.wait_event("camera_status", esp32_connected=False)
    await viewer.wait_for(lambda v: v.of_type("camera_status")[-1]["esp32_connected"] is True)
    await viewer.wait_frames(3)
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_unreachable_camera_degrades_health_and_refuses_commands(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory(client_limit=0)
    daemon = await daemon_factory(camera_url=camera.url)
    viewer = await daemon.viewer()
    await viewer.wait_event("hello", esp32_connected=False)
    code, health = await get_json(daemon.url + "/health")
    assert (code, health["status"], health["esp32_connected"]) == (200, "degraded", False)
    viewer.send_json({"type": "servo_command", "command": "up"})
    await viewer.wait_event("error")
    await close_viewer(viewer)
    code, health = await get_json(daemon.url + "/health")
    assert health["status"] == "healthy"


@pytest_twisted.ensureDeferred
async def test_idle_close_and_reopen_by_next_viewer(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url, idle_close=0.3)
    viewer = await daemon.viewer()
    await viewer.wait_frames(1)
    await close_viewer(viewer)
    await wait_until(reactor, lambda: not daemon.hub.link_open and not daemon.hub.connected)
    await wait_until(reactor, lambda: len(camera.camera.clients) == 0)
    _code, health = await get_json(daemon.url + "/health")
    assert health["status"] == "healthy"
    viewer = await daemon.viewer()
    await viewer.wait_frames(2)
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_origin_is_checked_at_the_handshake(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(
        camera_url=camera.url, allowed_origins=("https://cam.example.org",)
    )
    host = f"127.0.0.1:{daemon.port}"
    assert await handshake_status(daemon.port, {"Origin": "http://evil.example"}) == 403
    assert await handshake_status(daemon.port, {"Origin": f"https://{host}"}) == 403
    for origin in (f"http://{host}", "https://cam.example.org"):
        viewer = await daemon.viewer(headers={"Origin": origin})
        await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_no_autobahn_status_page(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    response = await treq.get(daemon.url + "/ws")
    body = await response.text()
    assert response.code >= 400
    assert "Autobahn" not in body
