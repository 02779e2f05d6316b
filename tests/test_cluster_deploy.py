"""Several daemons in production (README "Running several daemons"): the real pieces.

One Redis and one PostgreSQL started here, the RoboCam emulator, two daemons started with
``deploy/camproxy@.service``'s command (the instance name is the port) and the shared
environment file the README writes, and a real nginx with ``deploy/nginx-cluster.conf`` in
front of them. Through nginx, as a browser: log in, open viewer sockets that land on both
daemons, get frames on all of them from one camera link; then stop the daemon that holds
the camera and see the other take over. ``camproxy cluster status`` is how the test sees
which daemon has which viewers. The template unit is checked with ``systemd-analyze``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from camproxy.web.auth import SESSION_COOKIE
from tests import servers, stores
from tests.browserlike import Browser
from tests.clirun import camproxy
from tests.processes import BIN, free_port, get_json, running, wait_for_health
from tests.stores import new_postgres_database
from tests.test_deploy import (
    DEPLOY,
    NGINX,
    WAIT,
    analyze,
    connect_wss_viewer,
    environment_file,
    first_mjpeg_part,
    needs_systemd_analyze,
    running_nginx,
    session_cookie_line,
    wait_for_port,
)
from tests.wsclient import RecordingViewer, close_viewer

redis_factory = servers.redis_factory
shared_postgres = stores.shared_postgres

TEMPLATE = DEPLOY / "camproxy@.service"
CLUSTER_SITE = DEPLOY / "nginx-cluster.conf"
ADMIN_PASSWORD = "cluster-admin-pass"
#: CONTRACT §8: another daemon takes the camera within 10 s of the holder's stop.
FAILOVER = 10.0


def shared_environment(database: str, redis: str) -> str:
    """/etc/camproxy/camproxy.env as README "Running several daemons" writes it, plus
    what a copy of deploy/camproxy.env.example would add (HOST, PORT and a NODE_NAME):
    the template's options must win over them."""
    return (
        f"SECRET_KEY={'5e' * 32}\n"
        f"DATABASE_URL={database}\n"
        f"REDIS_URL={redis}\n"
        "TRUSTED_PROXIES=127.0.0.1\n"
        "HOST=127.0.0.1\n"
        "PORT=5000\n"
        "NODE_NAME=the-same-for-all\n"
    )


def instance_command(port: int) -> list[str]:
    """ExecStart of camproxy@PORT.service, as systemd expands it (%i, %H), with the test's
    virtual environment in place of /opt/camproxy/venv."""
    found = re.search(r"^ExecStart=/opt/camproxy/venv/bin/(\S+) (.*)$", TEMPLATE.read_text(), re.M)
    assert found is not None
    arguments = found.group(2).replace("%i", str(port)).replace("%H", socket.gethostname())
    assert "%" not in arguments, arguments
    return [str(BIN / found.group(1)), *arguments.split()]


def node_name(port: int) -> str:
    return f"{socket.gethostname()}-{port}"


def camera_links(port: int) -> int:
    """Established TCP connections to the camera emulator's port (its side of them)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                count += 1
    return count


async def cluster_status(reactor: Any, redis: str) -> dict[str, Any]:
    """``camproxy cluster status --json`` in a process of its own (REDIS_URL from the
    environment), without blocking the reactor the viewers run on."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["REDIS_URL"] = redis
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-m", "camproxy.cli", "cluster", "status", "--json"], env=env
    )
    assert code == 0 and not err, (code, err)
    document: dict[str, Any] = json.loads(out)
    return document


def counts_by_node(status: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {node["node"]: node["counts"] for node in status["nodes"]}


async def eventually(
    reactor: Any,
    probe: Callable[[], Any],
    check: Callable[[Any], bool],
    timeout: float,
    what: str,
) -> Any:
    """Poll ``probe`` (a coroutine function or a plain one) until ``check`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if isinstance(value, Deferred) or hasattr(value, "__await__"):
            value = await value
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s; last: {value!r}")
        await deferLater(reactor, 0.25, lambda: None)


@contextmanager
def two_daemons(directory: Path, settings: dict[str, str]) -> Iterator[dict[int, Popen[bytes]]]:
    """camproxy@P1 and camproxy@P2, as systemd would start them (same settings file)."""
    directory.mkdir()  # WorkingDirectory=/var/lib/camproxy
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        daemons = {
            p: stack.enter_context(running(instance_command(p), settings, directory)) for p in ports
        }
        for port, daemon in daemons.items():
            wait_for_health(port, daemon, timeout=60)
        yield daemons


@pytest.mark.skipif(not NGINX.exists(), reason="needs nginx (apt-get install nginx)")
@pytest_twisted.ensureDeferred
async def test_two_daemons_behind_nginx_share_viewers_one_camera_link_and_fail_over(
    reactor: Any,
    tmp_path: Path,
    redis_factory: Any,
    shared_postgres: servers.PostgresServer,
) -> None:
    redis = redis_factory()
    database = new_postgres_database(shared_postgres)
    camera_port = free_port()
    emulator = [
        sys.executable,
        "-m",
        "camproxy.democam",
        "--listen",
        f"tcp:{camera_port}:interface=127.0.0.1",
    ]
    with running(emulator, cwd=tmp_path) as camera:
        wait_for_port(camera_port, camera)
        # The README's steps: the admin and the camera, in the shared database.
        added = camproxy(
            tmp_path,
            "user",
            "add",
            "admin",
            "--admin",
            "--password-stdin",
            "--database",
            database,
            stdin=ADMIN_PASSWORD + "\n",
        )
        assert added.code == 0, added
        added = camproxy(
            tmp_path,
            "camera",
            "add",
            "default",
            f"ws://127.0.0.1:{camera_port}/ws",
            "--database",
            database,
        )
        assert added.code == 0, added
        settings_file = tmp_path / "camproxy.env"
        settings_file.write_text(shared_environment(database, redis.url))
        settings = environment_file(settings_file.read_text())

        with (
            two_daemons(tmp_path / "state", settings) as daemons,
            running_nginx(tmp_path / "nginx", site=CLUSTER_SITE, servers=list(daemons)) as nginx,
        ):
            await behind_nginx(reactor, nginx, daemons, redis.url, camera_port)


async def behind_nginx(
    reactor: Any, nginx: Any, daemons: dict[int, Popen[bytes]], redis: str, camera_port: int
) -> None:
    names = {port: node_name(port) for port in daemons}
    # Each daemon directly: its own port and node name (the options beat PORT and
    # NODE_NAME of the shared file), and the bus up.
    for port in daemons:
        code, health = get_json(f"http://127.0.0.1:{port}/health")
        assert code == 200 and health["node"] == names[port] and health["redis"] is True, health
    status = await eventually(
        reactor,
        lambda: cluster_status(reactor, redis),
        lambda s: {n["node"] for n in s["nodes"]} == set(names.values()),
        WAIT,
        "both daemons in cluster status",
    )
    assert status["cameras"] == [], "nobody watches: nobody holds the camera"
    assert camera_links(camera_port) == 0

    policy = BrowserLikePolicyForHTTPS(trustRoot=nginx.trust_root)
    client = HTTPClient(Agent(reactor, contextFactory=policy))
    base = nginx.origin
    # Requests with no connection open are spread over both daemons.
    seen = set()
    for _ in range(6):
        response = await client.get(f"{base}/health", timeout=WAIT)
        seen.add((await response.json())["node"])
    assert seen == set(names.values()), seen

    browser = Browser(base, client=client)
    login = await browser.login("admin", ADMIN_PASSWORD)
    assert login.code == 302, login.text
    attributes = session_cookie_line(login.all_headers("Set-Cookie")).lower().split(";")
    assert "secure" in {a.strip() for a in attributes}, "the daemons must trust nginx"
    cookie = f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"

    # Four viewers through nginx, on both addresses of the camera; least_conn puts two on
    # each daemon; the session made on one daemon is good on the other.
    viewers: list[RecordingViewer] = []
    for path in ("/ws", "/cam/default/ws", "/ws", "/cam/default/ws"):
        viewers.append(await connect_wss_viewer(reactor, nginx, cookie, nginx.origin, path))
    for viewer in viewers:
        await viewer.wait_event("hello").addTimeout(WAIT, reactor)
    status = await eventually(
        reactor,
        lambda: cluster_status(reactor, redis),
        lambda s: (
            counts_by_node(s) == {name: {"default": 2} for name in names.values()}
            and len(s["cameras"]) == 1
            and len(s["cameras"][0]["held_by"]) == 1
        ),
        WAIT,
        "two viewers on each daemon, one holder",
    )
    for viewer in viewers:
        await viewer.wait_frames(3).addTimeout(WAIT, reactor)
        assert all(f[:2] == b"\xff\xd8" and f[-2:] == b"\xff\xd9" for f in viewer.frames)
    assert camera_links(camera_port) == 1, "one link to the camera, whoever watches where"
    status = await cluster_status(reactor, redis)
    (camera,) = status["cameras"]
    assert camera["camera"] == "default" and camera["viewers"] == 4 and camera["link"] is True
    holder = camera["held_by"][0]

    # MJPEG through nginx, both addresses; still one link.
    for path in ("/stream.mjpg", "/cam/default/stream.mjpg"):
        await first_mjpeg_part(reactor, client, base + path, cookie)
    assert camera_links(camera_port) == 1

    # The holder stops (systemctl stop camproxy@PORT): the other daemon takes the camera
    # within 10 s and its viewers get frames again; a viewer reconnecting through nginx
    # lands on the survivor.
    holder_port = next(port for port, name in names.items() if name == holder)
    survivor = names[next(port for port in daemons if port != holder_port)]
    holder_daemon = daemons[holder_port]
    # SIGTERM without blocking the reactor: the viewers keep reading meanwhile, so that
    # the old holder's last frames are all in before the count below starts.
    os.kill(holder_daemon.pid, signal.SIGTERM)
    await eventually(
        reactor, holder_daemon.poll, lambda code: code is not None, 20, "the holder's exit"
    )
    stopped_at = time.monotonic()
    # The holder closed its two viewers as it stopped (nginx passes the close on): wait
    # for those closes to reach us, then the survivor's two must still be open.
    await eventually(
        reactor,
        lambda: sum(v.closed.called for v in viewers),
        lambda closed: closed >= 2,
        WAIT,
        "the stopped holder's viewers closed",
    )
    open_viewers = [v for v in viewers if not v.closed.called]
    assert len(open_viewers) == 2, "the holder closed its viewers; the survivor's stay"
    for viewer in open_viewers:
        await viewer.wait_frames(3).addTimeout(FAILOVER, reactor)
    took = time.monotonic() - stopped_at
    assert took < FAILOVER, f"frames again {took:.1f} s after the holder's exit"
    status = await eventually(
        reactor,
        lambda: cluster_status(reactor, redis),
        lambda s: (
            [n["node"] for n in s["nodes"]] == [survivor]
            and [c["held_by"] for c in s["cameras"]] == [[survivor]]
        ),
        FAILOVER,
        "the survivor alone, holding the camera",
    )
    again = await connect_wss_viewer(reactor, nginx, cookie, nginx.origin, "/ws")
    await again.wait_frames(3).addTimeout(WAIT, reactor)
    await eventually(
        reactor, lambda: camera_links(camera_port), lambda n: n == 1, WAIT, "one camera link"
    )
    for viewer in [*open_viewers, again]:
        await close_viewer(viewer)
    print(f"\nfailover: frames again {took:.1f} s after the holder's exit")
    for daemon in daemons.values():
        log = Path(daemon.log_path).read_text("utf-8", "replace")  # type: ignore[attr-defined]
        assert "Traceback" not in log, log


# --- the nginx site --------------------------------------------------------------------


def server_blocks(site: str) -> str:
    """The site without comments, blank lines, its upstream block and proxy_pass
    targets: what the single-daemon and the cluster sites must have alike."""
    text = re.sub(r"#.*$", "", site, flags=re.M)
    text = re.sub(r"^upstream camproxy \{.*?^\}\n", "", text, flags=re.M | re.S)
    text = re.sub(r"proxy_pass http://\S+;", "proxy_pass UPSTREAM;", text)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def test_the_cluster_site_is_the_single_site_with_an_upstream() -> None:
    assert server_blocks(CLUSTER_SITE.read_text()) == server_blocks(
        (DEPLOY / "nginx.conf").read_text()
    )
    site = re.sub(r"#.*$", "", CLUSTER_SITE.read_text(), flags=re.M)
    upstream = re.search(r"^upstream camproxy \{(.*?)^\}", site, re.M | re.S)
    assert upstream is not None
    lines = [line.strip() for line in upstream.group(1).splitlines() if line.strip()]
    assert lines == [
        "least_conn;",
        "zone camproxy 64k;",
        "server 127.0.0.1:5001;",
        "server 127.0.0.1:5002;",
    ]
    assert set(re.findall(r"proxy_pass (\S+);", site)) == {"http://camproxy"}


# --- the systemd template unit ---------------------------------------------------------


def checkable_template(directory: Path) -> Path:
    """camproxy@.service with ExecStart on a stub (``verify`` wants the program to exist);
    returns the path of the instance camproxy@5001.service beside it."""
    stub = directory / "twistd"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text, count = re.subn(
        r"^ExecStart=/opt/camproxy/venv/bin/twistd ",
        f"ExecStart={stub} ",
        TEMPLATE.read_text(),
        flags=re.M,
    )
    assert count == 1, "ExecStart=/opt/camproxy/venv/bin/twistd ... expected once"
    (directory / TEMPLATE.name).write_text(text)
    return directory / "camproxy@5001.service"


@needs_systemd_analyze
def test_template_unit_verifies_without_complaints(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "probe.service").write_text("[Service]\nExecStart=/bin/true\n")
    if analyze("verify", str(probe / "probe.service")).returncode != 0:
        pytest.skip("systemd-analyze verify cannot run here")
    instance = checkable_template(tmp_path)
    for unit in (instance, tmp_path / TEMPLATE.name):
        result = analyze("verify", str(unit))
        # Complaints about an instance name the template's file.
        complaints = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if TEMPLATE.name in line or unit.name in line
        ]
        assert result.returncode == 0 and not complaints, result.stdout + result.stderr


@needs_systemd_analyze
def test_template_unit_exposure_is_low(tmp_path: Path) -> None:
    if "--offline" not in analyze("security", "--help").stdout:
        pytest.skip("systemd-analyze security has no --offline (systemd < 250)")
    instance = checkable_template(tmp_path)
    # As for camproxy.service: fail above an overall exposure of 2.0.
    result = analyze("security", "--offline=yes", "--threshold=20", str(instance))
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_unit_is_hardened_like_the_single_unit() -> None:
    def settings(text: str) -> set[str]:
        return {
            line
            for line in text.splitlines()
            if line and not line.startswith(("#", "[")) and "=" in line
        }

    single = settings((DEPLOY / "camproxy.service").read_text())
    template = settings(TEMPLATE.read_text())
    # Everything of the single unit but its command line, restart delay and description.
    differing = ("ExecStart=", "Description=", "Documentation=", "After=", "RestartSec=")
    missing = {s for s in single - template if not s.startswith(differing)}
    assert not missing, missing
    assert "EnvironmentFile=/etc/camproxy/camproxy.env" in template
    assert (
        "ExecStart=/opt/camproxy/venv/bin/twistd --nodaemon --pidfile= camproxy "
        "--listen tcp:%i:interface=127.0.0.1 --node %H-%i"
    ) in template


def test_instance_command_is_the_port_and_the_node() -> None:
    argv = instance_command(5001)
    assert argv[-4:] == ["--listen", "tcp:5001:interface=127.0.0.1", "--node", node_name(5001)]
