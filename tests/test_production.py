"""Production promises: TLS (https and wss, and a wss camera), logs, metrics, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.ssl import Certificate
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from camproxy.democam.robocam import listen_demo_camera
from camproxy.web.auth import SESSION_COOKIE
from tests.browserlike import Browser
from tests.certs import make_self_signed
from tests.conftest import PASSWORD, wait_until
from tests.processes import free_port, running, twistd, wait_for_health
from tests.test_twistd import run_briefly
from tests.wsclient import close_viewer, connect_viewer


def https_client(reactor: Any, cert: Path) -> HTTPClient:
    trust = Certificate.loadPEM(cert.read_bytes())
    return HTTPClient(Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust)))


@pytest_twisted.ensureDeferred
async def test_https_and_wss_end_to_end_with_a_self_signed_certificate(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, tmp_path: Path
) -> None:
    files = make_self_signed(tmp_path)
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url, listen=files.endpoint())
    await daemon.user("alice")
    browser = Browser(f"https://localhost:{daemon.port}", client=https_client(reactor, files.cert))
    page = await browser.login("alice", PASSWORD)
    assert page.code == 302
    (cookie,) = [c for c in page.all_headers("Set-Cookie") if c.startswith(SESSION_COOKIE)]
    assert "secure" in cookie.lower()
    assert (page.header("Strict-Transport-Security") or "").startswith("max-age=")
    trust = Certificate.loadPEM(files.cert.read_bytes())
    viewer = await connect_viewer(
        reactor,
        daemon.port,
        trust=trust,
        headers={
            "Cookie": f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}",
            "Origin": f"https://localhost:{daemon.port}",
        },
    )
    await viewer.wait_frames(3)
    # The https page's origin is allowed; the http one is not, under TLS.
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_wss_camera_checked_against_a_private_ca(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, tmp_path: Path
) -> None:
    files = make_self_signed(tmp_path)
    other = make_self_signed(tmp_path, name="other")

    port, factory = await listen_demo_camera(reactor, files.endpoint())
    try:
        address: Any = port.getHost()
        url = f"wss://localhost:{address.port}/ws"
        trusted = await daemon_factory(camera_url=url, camera_ca=str(files.cert))
        await wait_until(reactor, lambda: trusted.hub.connected)
        untrusted = await daemon_factory(
            camera_url=url, camera_ca=str(other.cert), database=str(tmp_path / "other.db")
        )
        await wait_until(reactor, lambda: untrusted.hub.stats.camera_connects == 0)
        viewer = await untrusted.viewer()
        await viewer.wait_event("hello", esp32_connected=False)
        assert not untrusted.hub.connected
        await close_viewer(viewer)
    finally:
        factory.drop_all()
        await defer.maybeDeferred(port.stopListening)


def test_missing_or_mismatched_tls_files_are_one_line_errors(tmp_path: Path) -> None:
    files = make_self_signed(tmp_path)
    other = make_self_signed(tmp_path, name="other")
    env = {"SECRET_KEY": "k"}
    missing = run_briefly(
        twistd("--listen", f"ssl:0:privateKey={tmp_path}/nope.pem:certKey={files.cert}"),
        env,
        tmp_path,
    )
    mismatched = run_briefly(
        twistd("--listen", f"ssl:0:privateKey={other.key}:certKey={files.cert}"), env, tmp_path
    )
    for result in (missing, mismatched):
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "invalid --listen endpoint" in lines[0], result.stderr


@pytest_twisted.ensureDeferred
async def test_logs_have_access_lines_and_no_secrets(
    reactor: Any, demo_camera_factory: Any, tmp_path: Path
) -> None:
    camera = await demo_camera_factory()
    port = free_port()
    log_file = tmp_path / "camproxy.log"
    password = "hunter2-very-secret"
    env = {
        "SECRET_KEY": "k",
        "ADMIN_USERNAME": "admin",
        "ADMIN_PASSWORD": password,
        "LOG_FILE": str(log_file),
        "LOG_LEVEL": "DEBUG",
    }
    argv = twistd(
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--camera",
        camera.url,
        "--database",
        str(tmp_path / "db.sqlite"),
        "--log-format",
        "json",
    )
    with running(argv, env=env, cwd=tmp_path) as daemon:
        wait_for_health(port, daemon)
        browser = Browser(f"http://127.0.0.1:{port}")
        assert (await browser.login("admin", "wrong " + password)).code == 401
        assert (await browser.login("admin", password)).code == 302
        session = browser.cookie(SESSION_COOKIE)
        form_token = (await browser.get("/login")).csrf_token
        snapshot = await treq.get(f"http://127.0.0.1:{port}/snapshot.jpg?token=cpx_secret_value")
        assert snapshot.code == 401
        await browser.get("/health")
    text = log_file.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    access = [r["message"] for r in records if r["namespace"].startswith("camproxy.web.requestlog")]
    assert any('"POST /login" 302' in line and "ms" in line for line in access), access
    assert any("/snapshot.jpg?token=[redacted]" in line for line in access)
    for secret in (password, str(session), form_token, "cpx_secret_value"):
        assert secret not in text


@pytest_twisted.ensureDeferred
async def test_metrics_for_admins_and_allowed_addresses(
    demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory()
    daemon = await daemon_factory(camera_url=camera.url)
    await daemon.user("root", admin=True)
    await daemon.user("plain")
    assert (await treq.get(daemon.url + "/metrics")).code == 401
    plain = Browser(daemon.url)
    await plain.login("plain", PASSWORD)
    assert (await plain.get("/metrics")).code == 403
    admin = Browser(daemon.url)
    await admin.login("root", PASSWORD)
    await admin.login("root", "wrong")
    viewer = await daemon.viewer()
    await viewer.wait_frames(2)
    page = await admin.get("/metrics")
    assert page.code == 200
    for name in (
        "camproxy_viewers",
        "camproxy_frames_received_total",
        "camproxy_frames_sent_total",
        "camproxy_frames_skipped_total",
        "camproxy_frames_invalid_total",
        "camproxy_camera_connects_total",
        "camproxy_camera_timeouts_total",
        "camproxy_http_requests_total",
        "camproxy_http_request_seconds_bucket",
        "camproxy_login_failures_total 1.0",
    ):
        assert name in page.text, name
    open_daemon = await daemon_factory(
        camera_url=camera.url, metrics_allow=("127.0.0.0/8",), database=daemon.config.database + "2"
    )
    assert (await treq.get(open_daemon.url + "/metrics")).code == 200
    await close_viewer(viewer)


@pytest_twisted.ensureDeferred
async def test_sigterm_says_goodbye_with_1001(
    reactor: Any, demo_camera_factory: Any, tmp_path: Path
) -> None:
    camera = await demo_camera_factory()
    port = free_port()
    env = {"SECRET_KEY": "k", "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "pw"}
    argv = twistd(
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--camera",
        camera.url,
        "--database",
        str(tmp_path / "db.sqlite"),
    )
    with running(argv, env=env, cwd=tmp_path) as daemon:
        wait_for_health(port, daemon)
        browser = Browser(f"http://127.0.0.1:{port}")
        await browser.login("admin", "pw")
        viewer = await connect_viewer(
            reactor, port, headers={"Cookie": f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"}
        )
        await viewer.wait_frames(1)
        os.kill(daemon.pid, signal.SIGTERM)
        _clean, code, _reason = await viewer.closed
        assert code == 1001
        await camera.camera.when_clients(0)
        # twistd re-raises the signal once it has shut down cleanly.
        assert daemon.wait(timeout=10) in (0, -signal.SIGTERM)
