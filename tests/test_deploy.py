"""The production pieces in ``deploy/``: nginx in front of the daemon, the systemd unit.

The nginx test renders a private variant of ``deploy/nginx.conf`` (the same locations and
proxy settings, but on 127.0.0.1 ports, with a certificate made here and every file in
``tmp_path``), runs nginx and the daemon as processes and goes through nginx's HTTPS port
as a browser would. ``tests/test_cluster_deploy.py`` does the same with
``deploy/nginx-cluster.conf`` in front of two daemons.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from camproxy.web.auth import SESSION_COOKIE
from tests.browserlike import Browser
from tests.certs import CertFiles, make_self_signed
from tests.processes import BIN, REPO, free_port, running, stop, twistd, wait_for_health
from tests.wsclient import RecordingFactory, RecordingViewer, close_viewer, connect_viewer

DEPLOY = REPO / "deploy"
NGINX = Path("/usr/sbin/nginx")
ADMIN = {"ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "deploy-test-pass"}
WAIT = 10.0


# --- the nginx configuration under test ------------------------------------------------


def _substitute(text: str, pattern: str, replacement: str, *, expected: int | None) -> str:
    result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if expected is None:
        assert count >= 1, f"the nginx site has no line matching {pattern!r}"
    else:
        assert count == expected, f"{pattern!r} matched {count} lines of the nginx site"
    return result


def render_site(
    site: str,
    *,
    http: int,
    https: int,
    tls: CertFiles,
    upstream: int | None = None,
    servers: Sequence[int] = (),
) -> str:
    """An nginx site of deploy/ with loopback test ports and our certificate; the daemon's
    port (``upstream``, deploy/nginx.conf) or the daemons' (``servers``, in the order of the
    ``server`` lines of deploy/nginx-cluster.conf's upstream block)."""
    text = re.sub(r"#.*$", "", site, flags=re.MULTILINE)
    text = _substitute(text, r"^\s*listen \[::\]:\d+[^;]*;\n", "", expected=2)
    text = _substitute(text, r"^(\s*)listen 80;$", rf"\1listen 127.0.0.1:{http};", expected=1)
    text = _substitute(
        text, r"^(\s*)listen 443 ssl;$", rf"\1listen 127.0.0.1:{https} ssl;", expected=1
    )
    text = _substitute(text, r"^(\s*ssl_certificate) \S+;$", rf"\1 {tls.cert};", expected=1)
    text = _substitute(text, r"^(\s*ssl_certificate_key) \S+;$", rf"\1 {tls.key};", expected=1)
    if upstream is not None:
        text = _substitute(
            text,
            r"proxy_pass http://127\.0\.0\.1:5000;",
            f"proxy_pass http://127.0.0.1:{upstream};",
            expected=None,
        )
    if servers:
        ports = iter(servers)
        text, count = re.subn(
            r"^(\s*server) 127\.0\.0\.1:\d+",
            lambda m: f"{m[1]} 127.0.0.1:{next(ports)}",
            text,
            flags=re.MULTILINE,
        )
        assert count == len(servers), f"{count} server lines in the upstream block"
    assert not re.search(r":50\d\d\b", text) and "/etc/" not in text, text
    return text


def render_nginx_conf(site: str, directory: Path) -> str:
    """A whole nginx.conf around ``site``: foreground, every file under ``directory``."""
    user = ""
    if os.geteuid() == 0:
        # As root, nginx would run its workers as "nobody", who cannot use tmp_path.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};"
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\n{user}\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} warn;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n    access_log {directory / 'access.log'};\n{temp}\n{site}\n}}\n"
    )


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@attrs.frozen
class Nginx:
    http: int
    https: int
    tls: CertFiles

    @property
    def trust_root(self) -> Certificate:
        """The self-signed certificate nginx serves, as the one CA a client trusts."""
        return Certificate.loadPEM(self.tls.cert.read_bytes())

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https}"


@contextmanager
def running_nginx(
    directory: Path,
    upstream: int | None = None,
    *,
    site: Path = DEPLOY / "nginx.conf",
    servers: Sequence[int] = (),
) -> Iterator[Nginx]:
    """nginx with ``site`` in front of the daemon on ``upstream`` (or the ``servers``)."""
    directory.mkdir()
    tls = make_self_signed(directory)
    nginx = Nginx(free_port(), free_port(), tls)
    rendered = render_site(
        site.read_text(),
        http=nginx.http,
        https=nginx.https,
        tls=tls,
        upstream=upstream,
        servers=servers,
    )
    config = directory / "nginx.conf"
    config.write_text(render_nginx_conf(rendered, directory))
    argv = [
        str(NGINX),
        "-p",
        f"{directory}/",
        "-c",
        str(config),
        "-e",
        str(directory / "error.log"),
    ]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    with running(argv) as process:
        wait_for_port(nginx.https, process)
        yield nginx


# --- nginx in front of the daemon ------------------------------------------------------


class FirstJPEG(Protocol):
    """Reads a response body until one whole JPEG has passed, then hangs up."""

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        start = self.data.find(b"\xff\xd8")
        if start >= 0 and self.data.find(b"\xff\xd9", start) > 0 and not self.done.called:
            self.done.callback(self.data)
            # The transport of a response body is the connection, as a producer.
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.errback(reason)


async def connect_wss_viewer(
    reactor: Any, nginx: Nginx, cookie: str, origin: str, path: str = "/ws"
) -> RecordingViewer:
    """A browser-like viewer on wss://127.0.0.1:HTTPS/ws (or ``path``), verifying nginx's
    certificate."""
    factory = RecordingFactory(
        url=f"wss://127.0.0.1:{nginx.https}{path}",
        origin=origin,
        headers={"Cookie": cookie},
        reactor=reactor,
    )
    factory.setProtocolOptions(failByDrop=False, openHandshakeTimeout=WAIT)
    endpoint = wrapClientTLS(
        optionsForClientTLS("127.0.0.1", trustRoot=nginx.trust_root),
        TCP4ClientEndpoint(reactor, "127.0.0.1", nginx.https),
    )
    viewer = await endpoint.connect(factory)
    assert isinstance(viewer, RecordingViewer)
    return await viewer.opened.addTimeout(WAIT, reactor)


async def first_mjpeg_part(reactor: Any, client: HTTPClient, url: str, cookie: str) -> bytes:
    """GET an MJPEG stream and return what came until its first whole JPEG."""
    with_cookie: dict[str | bytes, str | bytes] = {"Cookie": cookie}
    stream = await client.get(url, headers=with_cookie, unbuffered=True, timeout=WAIT)
    assert stream.code == 200, (url, stream.code)
    body = FirstJPEG()
    stream.deliverBody(body)
    part: bytes = await body.done.addTimeout(WAIT, reactor)
    assert b"image/jpeg" in part.lower()
    return part


def session_cookie_line(set_cookies: list[str]) -> str:
    lines = [line for line in set_cookies if line.startswith(f"{SESSION_COOKIE}=")]
    assert len(lines) == 1, set_cookies
    return lines[0]


@pytest.mark.skipif(not NGINX.exists(), reason="needs nginx (apt-get install nginx)")
@pytest_twisted.ensureDeferred
async def test_behind_nginx_https_login_secure_cookie_and_wss_frames(
    reactor: Any, tmp_path: Path
) -> None:
    port = free_port()
    daemon_argv = twistd(
        "--demo",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--trusted-proxy",
        "127.0.0.1",
        "--database",
        str(tmp_path / "camproxy.db"),
    )
    with (
        running(daemon_argv, env=ADMIN, cwd=tmp_path) as daemon,
        running_nginx(tmp_path / "nginx", port) as nginx,
    ):
        wait_for_health(port, daemon)
        policy = BrowserLikePolicyForHTTPS(trustRoot=nginx.trust_root)
        client = HTTPClient(Agent(reactor, contextFactory=policy))
        base = f"https://127.0.0.1:{nginx.https}"

        health = await client.get(f"{base}/health", timeout=WAIT)
        assert health.code == 200
        assert (await health.json())["status"] == "healthy"

        redirect = await client.get(
            f"http://127.0.0.1:{nginx.http}/health?x=1", allow_redirects=False, timeout=WAIT
        )
        assert redirect.code == 301
        location = redirect.headers.getRawHeaders("Location")[0]
        assert location.startswith("https://127.0.0.1") and location.endswith("/health?x=1")

        browser = Browser(base, client=client)
        login = await browser.login(ADMIN["ADMIN_USERNAME"], ADMIN["ADMIN_PASSWORD"])
        assert login.code == 302
        attributes = session_cookie_line(login.all_headers("Set-Cookie")).lower().split(";")
        assert "secure" in {a.strip() for a in attributes}, "the daemon must trust nginx"
        assert (await browser.get("/")).code == 200
        cookie = f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"

        # The default camera's socket, and another camera's (--demo has two).
        for path in ("/ws", "/cam/esp32/ws"):
            viewer = await connect_wss_viewer(reactor, nginx, cookie, nginx.origin, path)
            await viewer.wait_event("hello").addTimeout(WAIT, reactor)
            await viewer.wait_frames(3).addTimeout(WAIT, reactor)
            assert all(f[:2] == b"\xff\xd8" and f[-2:] == b"\xff\xd9" for f in viewer.frames)
            await close_viewer(viewer)

        for path in ("/stream.mjpg", "/cam/esp32/stream.mjpg"):
            await first_mjpeg_part(reactor, client, base + path, cookie)


# --- systemd ---------------------------------------------------------------------------

UNIT = DEPLOY / "camproxy.service"
ENV_EXAMPLE = DEPLOY / "camproxy.env.example"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="needs systemd-analyze (apt-get install systemd)"
)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60)


def checkable_unit(directory: Path) -> Path:
    """The unit with ExecStart on a stub, so ``verify`` has a binary to find.

    ``verify`` checks that ExecStart's program exists and is executable; here there is no
    /opt/camproxy. Everything else in the copy is the file as shipped.
    """
    stub = directory / "twistd"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    text, count = re.subn(
        r"^ExecStart=/opt/camproxy/venv/bin/twistd ", f"ExecStart={stub} ", text, flags=re.M
    )
    assert count == 1, "ExecStart=/opt/camproxy/venv/bin/twistd ... expected once"
    unit = directory / "camproxy.service"
    unit.write_text(text)
    return unit


@needs_systemd_analyze
def test_systemd_unit_verifies_without_complaints(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "probe.service").write_text("[Service]\nExecStart=/bin/true\n")
    probed = analyze("verify", str(probe / "probe.service"))
    if probed.returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {probed.stderr.strip()}")
    unit = checkable_unit(tmp_path)
    result = analyze("verify", str(unit))
    # Complaints about a unit name its file (unknown keys, bad values, missing programs).
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if unit.name in line
    ]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


@needs_systemd_analyze
def test_systemd_unit_exposure_is_low(tmp_path: Path) -> None:
    if "--offline" not in analyze("security", "--help").stdout:
        pytest.skip("systemd-analyze security has no --offline (systemd < 250)")
    unit = checkable_unit(tmp_path)
    # --threshold is in tenths: fail above an overall exposure of 2.0 ("OK" is below 5).
    result = analyze("security", "--offline=yes", "--threshold=20", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_runs_the_daemon_as_documented() -> None:
    unit = UNIT.read_text()
    for line in (
        "User=camproxy",
        "WorkingDirectory=/var/lib/camproxy",
        "EnvironmentFile=/etc/camproxy/camproxy.env",
        "ExecStart=/opt/camproxy/venv/bin/twistd --nodaemon --pidfile= camproxy",
        "ReadWritePaths=/var/lib/camproxy",
        "CapabilityBoundingSet=",
    ):
        assert re.search(f"^{re.escape(line)}$", unit, re.M), line


CONTRACT_VARIABLES = (
    "HOST",
    "PORT",
    "ESP32CAM_IP",
    "ESP32CAM_PORT",
    "ESP32CAM_PATH",
    "DATABASE_URL",
    "ALLOWED_ORIGINS",
    "MAX_FPS",
    "IDLE_CLOSE",
    "SECRET_KEY",
    "ADMIN_USERNAME",
    "ADMIN_PASSWORD",
    "LOG_LEVEL",
    "LOG_FILE",
)


def environment_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile= reads them (no quotes used)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_env_example_names_every_contract_variable() -> None:
    text = ENV_EXAMPLE.read_text()
    missing = [v for v in CONTRACT_VARIABLES if not re.search(f"^#?{v}=", text, re.M)]
    assert not missing


def test_the_units_command_starts_with_the_example_environment(tmp_path: Path) -> None:
    """ExecStart's command with the env example's values: the daemon starts and answers."""
    settings = environment_file(ENV_EXAMPLE.read_text())
    assert settings["SECRET_KEY"] == "", "the example must not ship a usable key"
    port = free_port()
    unused = free_port()
    settings.update(
        SECRET_KEY="x" * 64,
        PORT=str(port),
        DATABASE_URL=f"sqlite:///{tmp_path / 'robocam.db'}",
        # Nothing listens there: the camera stays away, which /health allows without viewers.
        ESP32CAM_IP="127.0.0.1",
        ESP32CAM_PORT=str(unused),
    )
    command = re.search(r"^ExecStart=/opt/camproxy/venv/bin/(\S+) (.*)$", UNIT.read_text(), re.M)
    assert command is not None
    argv = [str(BIN / command.group(1)), *command.group(2).split()]
    with running(argv, env=settings, cwd=tmp_path) as daemon:
        assert wait_for_health(port, daemon)["status"] == "healthy"


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
MDWE_LAUNCHER = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
    "    sys.exit(77)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _mdwe_available() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", MDWE_LAUNCHER, "/bin/true"], capture_output=True, timeout=30
    )
    return probe.returncode == 0


@pytest_twisted.ensureDeferred
async def test_plain_daemon_works_under_memory_deny_write_execute(
    reactor: Any, tmp_path: Path
) -> None:
    """The unit's comment: without TLS of its own, MemoryDenyWriteExecute=yes is fine.

    Linux's PR_SET_MDWE (6.3+) refuses writable+executable memory as systemd's
    MemoryDenyWriteExecute= does; the daemon runs under it, with bcrypt and frames.
    """
    if not _mdwe_available():
        pytest.skip("the kernel has no PR_SET_MDWE (Linux 6.3+)")
    port = free_port()
    argv = [
        sys.executable,
        "-c",
        MDWE_LAUNCHER,
        *twistd("--demo", "--listen", f"tcp:{port}:interface=127.0.0.1"),
    ]
    with running(argv, env=ADMIN, cwd=tmp_path) as daemon:
        wait_for_health(port, daemon)
        browser = Browser(f"http://127.0.0.1:{port}")
        assert (await browser.login(ADMIN["ADMIN_USERNAME"], ADMIN["ADMIN_PASSWORD"])).code == 302
        cookie = f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"
        viewer = await connect_viewer(reactor, port, headers={"Cookie": cookie})
        await viewer.wait_frames(3).addTimeout(WAIT, reactor)
        await close_viewer(viewer)
        stop(daemon, signal.SIGTERM)
        log = Path(daemon.log_path).read_text("utf-8", "replace")  # type: ignore[attr-defined]
    assert "write+execute" not in log and "Traceback" not in log, log
