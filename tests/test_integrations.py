"""CONTRACT §5: MJPEG stream, snapshot and the REST API (session and token access)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
from email.message import Message
from email.parser import BytesParser
from typing import Any

import pytest
import pytest_twisted
import treq
from PIL import Image
from twisted.internet import defer, task, threads
from twisted.internet.protocol import Protocol

from camproxy.viewers.mjpeg import BOUNDARY
from camproxy.web.auth import SESSION_COOKIE
from tests.browserlike import Browser
from tests.conftest import PASSWORD
from tests.wsclient import close_viewer


class PartCollector(Protocol):
    """Reads a multipart/x-mixed-replace body; the stdlib's MIME parser splits the parts."""

    def __init__(self, wanted: int) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()
        self._wanted = wanted
        self.raw = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        if self.raw.count(b"--" + BOUNDARY + b"\r\n") > self._wanted and not self.done.called:
            self.done.callback(None)
            self.transport.stopProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)

    def parts(self, content_type: str) -> list[Message]:
        """The complete parts received, parsed as one MIME multipart document."""
        complete = bytes(self.raw[: self.raw.rindex(b"--" + BOUNDARY + b"\r\n")])
        document = (
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + complete
            + b"--"
            + BOUNDARY
            + b"--\r\n"
        )
        message = BytesParser().parsebytes(document)
        assert message.is_multipart()
        return list(message.get_payload())


#: treq's header mapping type.
Headers = dict[bytes | str, bytes | str]


def bearer_header(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


async def logged_in(daemon: Any, name: str = "alice", **flags: Any) -> Browser:
    await daemon.user(name, **flags)
    browser = Browser(daemon.url)
    assert (await browser.login(name, PASSWORD)).code == 302
    return browser


def session_headers(browser: Browser) -> Headers:
    return {"Cookie": f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"}


@pytest_twisted.ensureDeferred
async def test_mjpeg_stream_parts_are_jpegs_and_count_as_viewers(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory(push_frames=False)
    daemon = await daemon_factory(camera_url=camera.url, max_fps=25)
    browser = await logged_in(daemon)
    watcher = await daemon.viewer("watcher")
    response = await treq.get(
        daemon.url + "/stream.mjpg", headers=session_headers(browser), unbuffered=True
    )
    assert response.code == 200
    content_type = response.headers.getRawHeaders("Content-Type")[0]
    assert content_type.startswith("multipart/x-mixed-replace")
    await watcher.wait_event("client_count", count=2)
    collector = PartCollector(wanted=10)
    response.deliverBody(collector)
    await collector.done
    parts = collector.parts(content_type)
    assert len(parts) >= 10
    for part in parts:
        body = part.get_payload(decode=True)
        assert isinstance(body, bytes)
        assert part.get_content_type() == "image/jpeg"
        assert int(part["Content-Length"]) == len(body)
        Image.open(io.BytesIO(body)).verify()
    await watcher.wait_event("client_count", count=1)


@pytest_twisted.ensureDeferred
async def test_media_routes_need_credentials(demo_camera_factory: Any, daemon_factory: Any) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    for path in ("/stream.mjpg", "/snapshot.jpg", "/api/status"):
        response = await treq.get(daemon.url + path)
        assert response.code == 401, path
        assert "error" in json.loads(await response.text())
    for path in ("/api/servo", "/api/position", "/api/light"):
        response = await treq.post(daemon.url + path, data=b"{}")
        assert response.code == 401, path


@pytest_twisted.ensureDeferred
async def test_snapshot_is_fresh_and_wakes_an_idle_link(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url, idle_close=0.2)
    browser = await logged_in(daemon)
    from tests.conftest import wait_until

    await wait_until(reactor, lambda: not daemon.hub.link_open)
    response = await treq.get(daemon.url + "/snapshot.jpg", headers=session_headers(browser))
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type") == ["image/jpeg"]
    body = await response.content()
    Image.open(io.BytesIO(body)).verify()
    assert daemon.hub.newest is not None
    assert reactor.seconds() - daemon.hub.newest.received_at < 1.5


@pytest_twisted.ensureDeferred
async def test_snapshot_503_when_the_camera_is_down(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory(client_limit=0)
    daemon = await daemon_factory(camera_url=camera.url)
    browser = await logged_in(daemon)
    response = await treq.get(daemon.url + "/snapshot.jpg", headers=session_headers(browser))
    assert response.code == 503
    assert int(response.headers.getRawHeaders("Retry-After")[0]) > 0


@pytest_twisted.ensureDeferred
async def test_rest_with_a_session_needs_the_csrf_header(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    browser = await logged_in(daemon)
    watcher = await daemon.viewer("watcher")
    await watcher.wait_event("position_update")
    page = await browser.get("/")
    token = page.csrf_token
    no_csrf = await browser._page(
        "POST", "/api/servo", headers={"Content-Type": "application/json"}, data=b'{"command":"up"}'
    )
    assert no_csrf.code == 403
    ok = await browser._page(
        "POST", "/api/servo", data=b'{"command":"up"}', headers={"X-CSRF-Token": token}
    )
    assert ok.code == 200 and json.loads(ok.text) == {"ok": True}
    await watcher.wait_event("position_update", x=90, y=35)
    status = await browser.get("/api/status")
    assert status.code == 200
    body = json.loads(status.text)
    assert body["esp32_connected"] is True and body["clients"] == 1
    assert body["limits"] == {"min_x": 0, "max_x": 180, "min_y": 0, "max_y": 90}
    assert set(body) == {"esp32_connected", "clients", "position", "light", "limits"}
    for path, payload, code in [
        ("/api/position", b'{"x":120,"y":60}', 200),
        ("/api/position", b'{"x":120.5,"y":60}', 400),
        ("/api/position", b'{"x":500,"y":60}', 400),
        ("/api/light", b'{"state":true}', 200),
        ("/api/light", b'{"state":"on"}', 400),
        ("/api/servo", b"not json", 400),
        ("/api/servo", b'{"command":"sideways"}', 400),
    ]:
        answer = await browser._page("POST", path, data=payload, headers={"X-CSRF-Token": token})
        assert answer.code == code, (path, payload, answer.text)
    await watcher.wait_event("light_update", state=True)
    assert '{"x":120,"y":60}' in camera.camera.received


@pytest_twisted.ensureDeferred
async def test_openapi_describes_exactly_the_api_routes(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    response = await treq.get(daemon.url + "/api/openapi.json")
    document = json.loads(await response.text())
    assert document["openapi"].startswith("3.")
    from camproxy.web.api import IntegrationApi

    routes = {
        rule.rule.replace("<name>", "{name}")
        for rule in IntegrationApi.app.url_map.iter_rules()
        if rule.rule.startswith("/api/") and rule.rule != "/api/openapi.json"
    }
    assert set(document["paths"]) == routes


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian's ffmpeg) missing")
@pytest_twisted.ensureDeferred
async def test_ffprobe_reads_the_mjpeg_stream(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url, max_fps=10)
    browser = await logged_in(daemon)
    cookie = f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"
    probe = await threads.deferToThread(
        subprocess.run,
        [
            "ffprobe",
            "-v",
            "error",
            "-headers",
            f"Cookie: {cookie}\r\n",
            "-f",
            "mpjpeg",
            "-read_intervals",
            "%+#5",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
            daemon.url + "/stream.mjpg",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == "mjpeg" and (stream["width"], stream["height"]) == (640, 480)


async def make_token(daemon: Any, user: str, name: str, scope: str, **flags: Any) -> str:
    await daemon.user(user, **flags)
    tokens = daemon.accounts.tokens
    assert tokens is not None
    _record, secret = await tokens.create(user, name, scope)
    return str(secret)


@pytest_twisted.ensureDeferred
async def test_tokens_scopes_query_parameter_and_revocation(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    viewer_token = await make_token(daemon, "ha", "home-assistant", "view")
    control_token = await make_token(daemon, "bot", "script", "control")
    watcher = await daemon.viewer("watcher")
    await watcher.wait_event("position_update")

    def bearer(token: str) -> Headers:
        return {"Authorization": f"Bearer {token}"}

    status = await treq.get(daemon.url + "/api/status", headers=bearer(viewer_token))
    assert status.code == 200
    refused = await treq.post(
        daemon.url + "/api/servo", data=b'{"command":"up"}', headers=bearer(viewer_token)
    )
    assert refused.code == 403
    moved = await treq.post(
        daemon.url + "/api/servo", data=b'{"command":"down"}', headers=bearer(control_token)
    )
    assert moved.code == 200
    await watcher.wait_event("position_update", x=90, y=55)
    assert "up" not in camera.camera.received

    snapshot = await treq.get(daemon.url + f"/snapshot.jpg?token={viewer_token}")
    assert snapshot.code == 200
    assert (await snapshot.content())[:2] == b"\xff\xd8"
    not_here = await treq.get(daemon.url + f"/api/status?token={viewer_token}")
    assert not_here.code == 401
    wrong = await treq.get(daemon.url + "/api/status", headers=bearer("cpx_nonsense"))
    assert wrong.code == 401

    tokens = daemon.accounts.tokens
    await tokens.revoke("ha", "home-assistant")
    revoked = await treq.get(daemon.url + "/api/status", headers=bearer(viewer_token))
    assert revoked.code == 401
    await daemon.accounts.users.set_active("bot", False)
    disabled = await treq.post(
        daemon.url + "/api/servo", data=b'{"command":"down"}', headers=bearer(control_token)
    )
    assert disabled.code == 401


@pytest_twisted.ensureDeferred
async def test_tokens_page_shows_a_new_token_once_and_admins_see_all(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    alice = await logged_in(daemon, "alice")
    watcher = await logged_in(daemon, "watcher", control=False)
    root = await logged_in(daemon, "root", admin=True)

    page = await alice.get("/tokens")
    assert page.code == 200
    created = await alice.post(
        "/tokens/add", {"name": "ha", "scope": "view", "csrf_token": page.csrf_token}
    )
    assert created.code == 200
    secret = created.text.split('id="new-token" class="token">')[1].split("<")[0]
    assert secret.startswith("cpx_")
    again = await alice.get("/tokens")
    assert secret not in again.text and "ha" in again.text
    status = await treq.get(daemon.url + "/api/status", headers=bearer_header(secret))
    assert status.code == 200

    refused = await watcher.post(
        "/tokens/add",
        {"name": "x", "scope": "control", "csrf_token": (await watcher.get("/tokens")).csrf_token},
    )
    assert refused.code == 403
    forged = await alice.post("/tokens/add", {"name": "y", "scope": "view"})
    assert forged.code == 403

    admin_view = await root.get("/tokens")
    assert "alice" in admin_view.text and "ha" in admin_view.text
    not_yours = await watcher.post(
        "/tokens/revoke",
        {"user": "alice", "name": "ha", "csrf_token": (await watcher.get("/tokens")).csrf_token},
    )
    assert not_yours.code == 403
    revoked = await root.post(
        "/tokens/revoke", {"user": "alice", "name": "ha", "csrf_token": admin_view.csrf_token}
    )
    assert revoked.code == 303
    status = await treq.get(daemon.url + "/api/status", headers=bearer_header(secret))
    assert status.code == 401


def open_stalled_stream(port: int, cookie: str) -> socket.socket:
    """An MJPEG client with a tiny receive window that stops reading after the headers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_stalled_mjpeg_client_neither_grows_memory_nor_slows_websockets(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    from tests.test_slow_viewer import buffered_bytes

    camera = await demo_camera_factory(push_frames=False)
    daemon = await daemon_factory(camera_url=camera.url, max_fps=25)
    browser = await logged_in(daemon)
    fast = await daemon.viewer("fast")
    await fast.wait_frames(3)
    cookie = f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"
    stalled = await threads.deferToThread(open_stalled_stream, daemon.port, cookie)
    await fast.wait_for(lambda v: daemon.hub.viewer_count == 2)
    from camproxy.viewers.mjpeg import MjpegViewer

    (mjpeg,) = [v for v in daemon.hub._viewers if isinstance(v, MjpegViewer)]
    received_before, fast_before = daemon.hub.stats.frames_received, len(fast.frames)
    peak = 0
    for _ in range(50):  # 5 s
        await task.deferLater(reactor, 0.1, lambda: None)
        peak = max(peak, buffered_bytes(mjpeg._request.channel.transport))
    camera_frames = daemon.hub.stats.frames_received - received_before
    assert len(fast.frames) - fast_before >= camera_frames - 2
    assert mjpeg.frames.frames_skipped > 0
    assert peak <= 3 * len(fast.frames[-1]) + 65536
    stalled.close()
    await close_viewer(fast)
