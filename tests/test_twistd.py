"""``twistd camproxy`` as a user runs it: real processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from camproxy.web.auth import SESSION_COOKIE
from tests.browserlike import Browser
from tests.processes import BIN, REPO, free_port, running, twistd, wait_for_health
from tests.wsclient import close_viewer, connect_viewer


def run_briefly(
    argv: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--bogus"], {"SECRET_KEY": "k"}, "--bogus"),
        (["--max-fps", "fast"], {"SECRET_KEY": "k"}, "max-fps must be a number"),
        (["--listen", "nonsense:1"], {"SECRET_KEY": "k"}, "invalid --listen endpoint"),
        ([], {}, "SECRET_KEY"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_1(
    args: list[str], env: dict[str, str], fragment: str, tmp_path: Path
) -> None:
    clean_env = {"SECRET_KEY": "", **env}
    result = run_briefly(twistd(*args), clean_env, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@pytest_twisted.ensureDeferred
async def test_demo_serves_health_and_frames_and_moves(reactor: Any, tmp_path: Path) -> None:
    port = free_port()
    with running(
        twistd(
            "--demo",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--max-fps",
            "20",
            "--metrics-allow",
            "127.0.0.1",
        ),
        env={"ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "demo-pass"},
        cwd=tmp_path,
    ) as daemon:
        health = wait_for_health(port, daemon)
        assert health["status"] == "healthy"
        # The objects built at start-up are frozen: full collections skip them.
        metrics = (await Browser(f"http://127.0.0.1:{port}").get("/metrics")).text
        samples = dict(
            line.rsplit(" ", 1) for line in metrics.splitlines() if not line.startswith("#")
        )
        assert float(samples["python_gc_frozen_objects"]) > 50_000
        assert float(samples["process_resident_memory_bytes"]) > 0
        browser = Browser(f"http://127.0.0.1:{port}")
        assert (await browser.login("admin", "demo-pass")).code == 302
        cookie = f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"
        viewer = await connect_viewer(reactor, port, headers={"Cookie": cookie})
        await viewer.wait_frames(10)
        assert all(f[:2] == b"\xff\xd8" and f[-2:] == b"\xff\xd9" for f in viewer.frames)
        await viewer.wait_event("position_update")
        before = viewer.frames[-1]
        viewer.send_json({"type": "servo_command", "command": "left"})
        await viewer.wait_event("position_update", x=100, y=45)
        await viewer.wait_frames(2)
        assert viewer.frames[-1] != before
        await close_viewer(viewer)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest_twisted.ensureDeferred
async def test_a_clean_stop_exits_0_and_closes_viewers_with_1001(
    sig: int, reactor: Any, tmp_path: Path
) -> None:
    """Docker, supervisord, runit and Kubernetes count 143 (a re-raised SIGTERM) as failure."""
    port = free_port()
    with running(
        twistd("--demo", "--listen", f"tcp:{port}:interface=127.0.0.1"),
        env={"ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "demo-pass"},
        cwd=tmp_path,
    ) as daemon:
        wait_for_health(port, daemon)
        browser = Browser(f"http://127.0.0.1:{port}")
        assert (await browser.login("admin", "demo-pass")).code == 302
        cookie = f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"
        viewer = await connect_viewer(reactor, port, headers={"Cookie": cookie})
        await viewer.wait_frames(1)
        os.kill(daemon.pid, sig)
        _clean, code, _reason = await viewer.closed
        status = await threads.deferToThread(daemon.wait, 20)
    assert code == 1001
    assert status == 0


DAEMONIZED_STOP = """
import ctypes, json, os, signal, subprocess, sys, time, urllib.request
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
twistd, port, pidfile = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run([twistd, "--pidfile", pidfile, "--logfile", "twistd.log", "camproxy", "--demo",
                "--listen", f"tcp:{port}:interface=127.0.0.1"], check=True, timeout=60)
deadline = time.monotonic() + 30
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
pid = int(open(pidfile).read())
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)   # the daemon is our child now: we are its subreaper
print(json.dumps({"exited": os.WIFEXITED(status), "code": os.waitstatus_to_exitcode(status)}))
"""


@pytest.mark.slow
def test_a_daemonized_stop_exits_0(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            DAEMONIZED_STOP,
            str(BIN / "twistd"),
            str(free_port()),
            str(tmp_path / "twistd.pid"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "SECRET_KEY": "k"},
    )
    assert result.returncode == 0, result.stderr + (tmp_path / "twistd.log").read_text()
    assert json.loads(result.stdout) == {"exited": True, "code": 0}


def test_tac_file_runs_the_same_service(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / ".env").write_text(f"PORT={port}\nHOST=127.0.0.1\nCAMPROXY_DEMO=1\n")
    with running(
        [str(BIN / "twistd"), "-n", "--pidfile=", "-y", str(REPO / "camproxy.tac")],
        cwd=tmp_path,
    ) as daemon:
        health = wait_for_health(port, daemon)
    assert health["status"] == "healthy"


@pytest.mark.slow
def test_pip_install_gives_a_working_plugin(tmp_path: Path) -> None:
    """A fresh venv with ``pip install .`` finds the plugin and ships the web assets."""
    venv = tmp_path / "venv"
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", str(REPO)]
    subprocess.run(pip, check=True, cwd=tmp_path)
    probe = (
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "from camproxy.web.assets import asset_directory\n"
        "names = [p.tapname for p in getPlugins(IServiceMaker)]\n"
        "assert 'camproxy' in names, names\n"
        "assert (asset_directory('templates') / 'index.html').is_file()\n"
        "assert (asset_directory('static') / 'css' / 'style.css').is_file()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.stdout.strip() == "ok", result.stderr
    help_text = subprocess.run(
        [str(venv / "bin" / "twistd"), "camproxy", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "--max-fps" in help_text.stdout
    assert (venv / "bin" / "camproxy").exists()


def camproxy_cli(
    *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "camproxy"), *args], input=stdin, capture_output=True, text=True, cwd=cwd
    )


@pytest_twisted.ensureDeferred
async def test_cli_disable_closes_the_users_socket_within_10_seconds(
    reactor: Any, tmp_path: Path
) -> None:
    database = str(tmp_path / "users.db")
    added = camproxy_cli(
        "user", "add", "alice", "--password-stdin", "--database", database, stdin="alice-pass\n"
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    with running(
        twistd("--demo", "--listen", f"tcp:{port}:interface=127.0.0.1", "--database", database),
        cwd=tmp_path,
    ) as daemon:
        wait_for_health(port, daemon)
        browser = Browser(f"http://127.0.0.1:{port}")
        assert (await browser.login("alice", "alice-pass")).code == 302
        cookie = f"{SESSION_COOKIE}={browser.cookie(SESSION_COOKIE)}"
        viewer = await connect_viewer(reactor, port, headers={"Cookie": cookie})
        await viewer.wait_event("hello")
        disabled = await threads.deferToThread(
            camproxy_cli, "user", "disable", "alice", "--database", database
        )
        assert disabled.returncode == 0, disabled.stderr
        started = reactor.seconds()
        _clean, code, _reason = await viewer.closed
        assert code == 4001
        assert reactor.seconds() - started <= 10
        assert (await browser.get("/")).code == 302


def test_a_second_daemon_on_the_same_database_fails_clearly(tmp_path: Path) -> None:
    database = str(tmp_path / "users.db")
    port = free_port()
    with running(
        twistd("--demo", "--listen", f"tcp:{port}:interface=127.0.0.1", "--database", database),
        cwd=tmp_path,
    ) as first:
        wait_for_health(port, first)
        second = run_briefly(
            twistd("--demo", "--listen", "tcp:0:interface=127.0.0.1", "--database", database),
            {},
            tmp_path,
        )
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0], second.stderr
