"""Defects found by trying the daemon as new users and third-party clients would.

Each test here failed on the code before its fix. The process-level ones (the admin
bootstrap, exit statuses on SIGTERM) are in ``test_twistd.py``; the hub's own rules
(folded counts, no timers after stop) in ``test_hub.py``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, task, threads
from twisted.internet.protocol import Protocol

from camproxy.viewers.socketopts import TCP_NOTSENT_LOWAT
from camproxy.web.auth import SESSION_COOKIE
from tests.browserlike import Browser
from tests.conftest import PASSWORD, RunningDaemon, wait_until
from tests.wsclient import RecordingViewer, close_viewer, connect_viewer

#: treq's header mapping type.
Headers = dict[bytes | str, bytes | str]


def raw_upgrade(port: int, headers: dict[str, str], path: str = "/ws") -> tuple[int, bytes]:
    """Send a WebSocket upgrade by hand; the status code and the whole answer's head."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


async def cookie_of(daemon: RunningDaemon, name: str = "viewer") -> str:
    return f"{SESSION_COOKIE}={await daemon.session(name)}"


# -- 2. a login form's CSRF token works only for the browser that fetched it ---------------


@pytest_twisted.ensureDeferred
async def test_a_login_token_fetched_by_one_client_is_refused_for_another(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    await daemon.user("alice")
    attacker, victim = Browser(daemon.url), Browser(daemon.url)
    stolen = (await attacker.get("/login")).csrf_token
    await victim.get("/login")  # the victim's browser has a pre-session cookie of its own
    fields = {"username": "alice", "password": PASSWORD, "csrf_token": stolen}
    assert (await victim.post("/login", fields)).code == 403
    cookieless = Browser(daemon.url)
    assert (await cookieless.post("/login", fields)).code == 403
    assert (await attacker.post("/login", fields)).code == 302


@pytest_twisted.ensureDeferred
async def test_two_tabs_can_both_log_in(demo_camera_factory: Any, daemon_factory: Any) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    await daemon.user("alice")
    browser = Browser(daemon.url)
    first_tab = (await browser.get("/login")).csrf_token
    second_tab = (await browser.get("/login")).csrf_token
    for token in (second_tab, first_tab):
        fields = {"username": "alice", "password": PASSWORD, "csrf_token": token}
        assert (await browser.post("/login", fields)).code == 302
    login_cookie = await treq.get(daemon.url + "/login")
    (set_cookie,) = [
        c for c in login_cookie.headers.getRawHeaders("Set-Cookie") if c.startswith("camproxy_l")
    ]
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie.replace("Lax", "lax")
    await login_cookie.content()


# -- 3. Origin: null (and any origin not allowed) is a 403 -----------------------------------


@pytest.mark.parametrize(
    "origin", ["null", "file://", "not an origin", "http://evil.example", "https://127.0.0.1"]
)
@pytest_twisted.ensureDeferred
async def test_origins_not_allowed_get_403_not_400(
    origin: str, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    cookie = await cookie_of(daemon)
    status, answer = await threads.deferToThread(
        raw_upgrade, daemon.port, {"Origin": origin, "Cookie": cookie}
    )
    assert status == 403, answer
    own = f"http://127.0.0.1:{daemon.port}"
    status, answer = await threads.deferToThread(
        raw_upgrade, daemon.port, {"Origin": own, "Cookie": cookie}
    )
    assert status == 101, answer


@pytest_twisted.ensureDeferred
async def test_null_origin_allowed_only_when_the_operator_says_so(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url, allowed_origins=("https://app.example",))
    cookie = await cookie_of(daemon)
    allowed = await threads.deferToThread(
        raw_upgrade, daemon.port, {"Origin": "https://app.example", "Cookie": cookie}
    )
    assert allowed[0] == 101
    refused = await threads.deferToThread(
        raw_upgrade, daemon.port, {"Origin": "null", "Cookie": cookie}
    )
    assert refused[0] == 403


# -- 5. no old frame as a snapshot once the camera is down -------------------------------------


@pytest_twisted.ensureDeferred
async def test_snapshot_is_503_right_after_the_camera_went_down(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    viewer = await daemon.viewer()
    await viewer.wait_frames(2)
    headers: Headers = {"Cookie": await cookie_of(daemon)}
    assert (await treq.get(daemon.url + "/snapshot.jpg", headers=headers)).code == 200
    camera.camera.client_limit = 0
    camera.camera.drop_all()
    await viewer.wait_event("camera_status", esp32_connected=False)
    health = json.loads(await (await treq.get(daemon.url + "/health")).content())
    assert health["esp32_connected"] is False
    started = reactor.seconds()
    snapshot = await treq.get(daemon.url + "/snapshot.jpg", headers=headers)
    assert snapshot.code == 503
    assert int(snapshot.headers.getRawHeaders("Retry-After")[0]) > 0
    assert reactor.seconds() - started < 1.0  # told at once, not after a wait
    await snapshot.content()
    await close_viewer(viewer)


# -- 7. the kernel keeps at most about two frames unsent for a viewer ----------------------------


@pytest_twisted.ensureDeferred
async def test_viewer_sockets_cap_unsent_bytes_in_the_kernel(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    viewer = await daemon.viewer()
    await viewer.wait_frames(1)
    (protocol,) = daemon.viewers.viewers
    handle = protocol.transport.getHandle()
    assert handle.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT) == 64 * 1024
    await close_viewer(viewer)


class CountingStream(Protocol):
    """Reads an MJPEG body slowly: it is paused by the test, then resumed."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)


def sequenced_frames(size: int) -> Any:
    """A camera frame source whose JPEGs carry their number: ``FF D8 #000042# … FF D9``."""
    counter = iter(range(10**9))

    def next_frame() -> bytes:
        number = next(counter)
        body = f"#{number:09d}#".encode()
        return b"\xff\xd8" + body + b"x" * (size - len(body) - 4) + b"\xff\xd9"

    return next_frame


def frame_numbers(data: bytes) -> list[int]:
    numbers = []
    start = 0
    while (at := data.find(b"\xff\xd8#", start)) >= 0 and len(data) >= at + 13:
        numbers.append(int(data[at + 3 : at + 12]))
        start = at + 13
    return numbers


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_slow_viewer_gets_the_newest_frame_not_seconds_old_ones(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    """A viewer that stops reading for 3 s, with a small receive window as on weak WiFi,
    gets a frame at most a few frames old once it reads again — not the backlog."""
    camera = await demo_camera_factory(frame_interval=0.04, frame_source=sequenced_frames(30_000))
    daemon = await daemon_factory(camera_url=camera.url, max_fps=25)
    cookie = await cookie_of(daemon)

    def stalled_client() -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(("127.0.0.1", daemon.port))
        sock.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode())
        return sock

    sock = await threads.deferToThread(stalled_client)
    try:
        await wait_until(reactor, lambda: daemon.hub.viewer_count == 1)
        await task.deferLater(reactor, 3.0, lambda: None)  # not reading: frames pile up
        newest_at_resume = frame_numbers(daemon.hub.newest.data if daemon.hub.newest else b"")[0]

        def read_a_while() -> bytes:
            sock.settimeout(5)
            received = b""
            while len(frame_numbers(received)) < 40:
                received += sock.recv(65536)
            return received

        received = await threads.deferToThread(read_a_while)
    finally:
        sock.close()
    numbers = frame_numbers(received)
    # What was already in flight comes first (the receive window, the kernel's capped
    # queue, Twisted's one frame); right after it must come the newest frame, not the
    # seconds of video a kernel buffer of megabytes would have queued.
    caught_up = next(i for i, n in enumerate(numbers) if n >= newest_at_resume - 1)
    assert caught_up <= 10, f"caught up only after {caught_up} old frames: {numbers[:20]}"


# -- 8. snapshots have a Content-Length; /ws gets request-log lines -----------------------------


def fetch(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    """A plain HTTP/1.1 request (treq's decoding agent drops Content-Length)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


@pytest_twisted.ensureDeferred
async def test_snapshot_has_a_content_length_also_on_head(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    headers = {"Cookie": await cookie_of(daemon)}
    status, got, body = await threads.deferToThread(
        fetch, daemon.port, "GET", "/snapshot.jpg", headers
    )
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert got["Content-Length"] == str(len(body))
    assert got["Transfer-Encoding"] is None
    status, head, empty = await threads.deferToThread(
        fetch, daemon.port, "HEAD", "/snapshot.jpg", headers
    )
    assert status == 200 and empty == b""
    assert int(head["Content-Length"]) > 100
    assert head["Transfer-Encoding"] is None


# -- 9. every viewer ends with its credential, MJPEG streams included ----------------------------


class StreamUntilClosed(Protocol):
    def __init__(self) -> None:
        self.received = 0
        self.first: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if not self.first.called:
            self.first.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback(None)


async def open_stream(url: str, headers: Headers | None = None) -> StreamUntilClosed:
    response = await treq.get(url, headers=headers, unbuffered=True)
    assert response.code == 200
    reader = StreamUntilClosed()
    response.deliverBody(reader)
    await reader.first
    return reader


@pytest_twisted.ensureDeferred
async def test_mjpeg_streams_end_when_their_credential_ends_in_another_process(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    """``camproxy token revoke`` / ``user disable`` elsewhere: ended at the next check."""
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    await daemon.user("ha")
    _record, secret = await daemon.accounts.tokens.create("ha", "home-assistant", "view")
    by_token = await open_stream(daemon.url + f"/stream.mjpg?token={secret}")
    by_session = await open_stream(
        daemon.url + "/stream.mjpg", {"Cookie": await cookie_of(daemon, "carol")}
    )
    other = await open_stream(daemon.url + "/stream.mjpg", {"Cookie": await cookie_of(daemon)})
    assert daemon.hub.viewer_count == 3
    await daemon.accounts.tokens.revoke("ha", "home-assistant")  # as the CLI would
    await daemon.accounts.users.set_active("carol", False)
    await daemon.service.getServiceNamed("credentials").check()
    await by_token.ended
    await by_session.ended
    assert not other.ended.called and daemon.hub.viewer_count == 1


@pytest_twisted.ensureDeferred
async def test_logout_and_web_revocation_end_streams_at_once(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    await daemon.user("alice")
    browser = Browser(daemon.url)
    assert (await browser.login("alice", PASSWORD)).code == 302
    session: Headers = {"Cookie": f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"}
    stream = await open_stream(daemon.url + "/stream.mjpg", session)
    page = await browser.post("/tokens/add", {"name": "vlc", "csrf_token": await _csrf(browser)})
    found = re.search(r'id="new-token"[^>]*>(cpx_[^<]+)<', page.text)
    assert found, page.text
    secret = found.group(1)
    by_token = await open_stream(daemon.url + "/stream.mjpg", {"Authorization": f"Bearer {secret}"})
    revoked = await browser.post(
        "/tokens/revoke", {"name": "vlc", "csrf_token": await _csrf(browser)}
    )
    assert revoked.code == 303
    await by_token.ended
    assert not stream.ended.called
    await browser.post("/logout", {})
    await stream.ended


async def _csrf(browser: Browser) -> str:
    return (await browser.get("/tokens")).csrf_token


# -- 6. a crowd joining at once settles quickly, and the listen backlog fits it ---------------


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_crowd_joining_at_once_gets_one_final_count_quickly(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    headers = {"Cookie": await cookie_of(daemon)}
    crowd = 150
    joining = [
        defer.Deferred.fromCoroutine(connect_viewer(reactor, daemon.port, headers=headers))
        for _ in range(crowd)
    ]
    viewers: list[RecordingViewer] = await defer.gatherResults(joining)

    def counted_all(viewer: RecordingViewer) -> bool:
        return any(e.get("count") == crowd for e in viewer.of_type("client_count"))

    await defer.gatherResults([v.wait_for(counted_all) for v in viewers])
    messages = sum(len(v.of_type("client_count")) for v in viewers)
    assert messages < crowd * 10, f"{messages} client_count messages for {crowd} joins"
    await defer.gatherResults([defer.Deferred.fromCoroutine(close_viewer(v)) for v in viewers])


def test_the_listen_backlog_fits_a_crowd() -> None:
    from camproxy.tap import LISTEN_BACKLOG, with_backlog

    assert with_backlog("tcp:5000:interface=127.0.0.1").endswith(f":backlog={LISTEN_BACKLOG}")
    assert with_backlog("ssl:443:privateKey=k.pem").endswith(f":backlog={LISTEN_BACKLOG}")
    assert with_backlog("tcp:5000:backlog=10") == "tcp:5000:backlog=10"
    assert LISTEN_BACKLOG >= 1000


# -- 8. /ws upgrades get request-log lines ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_viewer_sockets_get_request_log_lines(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
    from zope.interface import provider

    lines: list[str] = []

    @provider(ILogObserver)
    def observe(event: Any) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        camera = await demo_camera_factory()
        daemon = await daemon_factory(camera_url=camera.url)
        viewer = await daemon.viewer("alice")
        await viewer.wait_frames(2)
        await close_viewer(viewer)
        await wait_until(daemon.reactor, lambda: any("closed user=alice" in x for x in lines))
        refused = await threads.deferToThread(raw_upgrade, daemon.port, {})
        origin = await threads.deferToThread(
            raw_upgrade, daemon.port, {"Origin": "null", "Cookie": await cookie_of(daemon)}
        )
    finally:
        globalLogPublisher.removeObserver(observe)
    assert refused[0] == 403 and origin[0] == 403
    opened = [x for x in lines if '"GET /ws" 101' in x]
    assert opened and "127.0.0.1" in opened[0] and "user=alice" in opened[0]
    (closed,) = [x for x in lines if '"GET /ws" closed' in x]
    assert "user=alice" in closed and "code=1000" in closed
    assert re.search(r"after \d+\.\ds, [1-9]\d* frames sent, \d+ skipped", closed)
    assert any('"GET /ws" 403 refused: login required' in x for x in lines)
    assert any("origin 'null'" in x and "not allowed" in x for x in lines)
    assert any(re.search(r'"GET /ws" 403 [\d.]+ms', x) for x in lines)
