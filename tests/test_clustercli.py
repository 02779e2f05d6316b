"""``camproxy cluster status`` run as a real process against real Redis servers.

The heartbeats here are written straight into Redis, as ``ClusterNode`` writes them
(``camproxy:node:NAME``, JSON, expiring); ``tests/test_cluster_deploy.py`` reads the ones
real daemons write. No test needs the accounts database: the group never opens it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from camproxy.cli.cluster import hide_password
from tests import servers
from tests.certs import make_self_signed
from tests.clirun import Result, camproxy

redis_factory = servers.redis_factory

#: What a refusal may take beyond --timeout: the interpreter's start and the bus's stop,
#: on a loaded 2-core machine.
SLACK = 6.0


@pytest.fixture(autouse=True)
def no_ambient_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands see only the Redis settings a test gives them."""
    for variable in ("REDIS_URL", "REDIS_CA_FILE"):
        monkeypatch.delenv(variable, raising=False)


def status(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return camproxy(cwd, "cluster", "status", *args, env=env)


def ok(result: Result) -> str:
    assert (result.code, result.err) == (0, ""), result
    return result.out


def heartbeat(
    server: servers.RedisServer, node: str, counts: dict[str, int], holds: list[str]
) -> None:
    beat = json.dumps({"node": node, "counts": counts, "holds": holds})
    server.command("SET", f"camproxy:node:{node}", beat, "PX", 60_000)


def test_daemons_cameras_and_viewers(tmp_path: Path, redis_factory: Any) -> None:
    server = redis_factory()
    heartbeat(server, "cam1-5001", {"default": 3, "garden": 1}, ["default"])
    heartbeat(server, "cam1-5002", {"default": 2}, ["garden"])
    heartbeat(server, "cam2-5001", {}, [])
    server.command("SET", "camproxy:state:default", json.dumps({"connected": True}), "PX", 60_000)
    server.command("SET", "camproxy:state:garden", json.dumps({"connected": False}), "PX", 60_000)
    server.command("SET", "camproxy:node:broken", "not json")
    server.command("SET", "camproxy:nodes-unrelated", "x")

    shown = f"redis://127.0.0.1:{server.port}/0"
    text = ok(status(tmp_path, "--redis", server.url))
    assert text.splitlines() == [
        f"3 daemons alive on {shown}, 6 viewers",
        "",
        "DAEMON     HOLDS    VIEWERS",
        "cam1-5001  default  default 3, garden 1",
        "cam1-5002  garden   default 2",
        "cam2-5001  -        -",
        "",
        "CAMERA   HELD BY    LINK  VIEWERS",
        "default  cam1-5001  up    5 (cam1-5001 3, cam1-5002 2)",
        "garden   cam1-5002  down  1 (cam1-5001 1)",
    ]

    document = json.loads(ok(status(tmp_path, "--redis", server.url, "--json")))
    assert document["redis"] == shown
    assert [n["node"] for n in document["nodes"]] == ["cam1-5001", "cam1-5002", "cam2-5001"]
    assert document["nodes"][0] == {
        "node": "cam1-5001",
        "holds": ["default"],
        "viewers": 4,
        "counts": {"default": 3, "garden": 1},
    }
    assert document["cameras"] == [
        {
            "camera": "default",
            "held_by": ["cam1-5001"],
            "link": True,
            "viewers": 5,
            "counts": {"cam1-5001": 3, "cam1-5002": 2},
        },
        {
            "camera": "garden",
            "held_by": ["cam1-5002"],
            "link": False,
            "viewers": 1,
            "counts": {"cam1-5001": 1},
        },
    ]


def test_no_daemon_alive_and_a_camera_nobody_holds(tmp_path: Path, redis_factory: Any) -> None:
    server = redis_factory()
    shown = f"redis://127.0.0.1:{server.port}/0"
    assert ok(status(tmp_path, "--redis", server.url)).strip() == f"no daemon is alive on {shown}"
    assert json.loads(ok(status(tmp_path, "--redis", server.url, "--json"))) == {
        "redis": shown,
        "nodes": [],
        "cameras": [],
    }
    heartbeat(server, "solo", {"door": 1}, [])
    text = ok(status(tmp_path, "--redis", server.url))
    assert "door    nobody   -     1 (solo 1)" in text, text


def test_redis_from_the_environment_or_dotenv_as_the_daemon_reads_it(
    tmp_path: Path, redis_factory: Any
) -> None:
    server = redis_factory()
    heartbeat(server, "from-env", {}, [])
    assert "from-env" in ok(status(tmp_path, env={"REDIS_URL": server.url}))
    (tmp_path / ".env").write_text(f"REDIS_URL={server.url}\n")
    assert "from-env" in ok(status(tmp_path))
    # The option beats the environment, which beats .env.
    other = redis_factory()
    heartbeat(other, "other", {}, [])
    assert "other" in ok(status(tmp_path, env={"REDIS_URL": other.url}))
    assert "from-env" in ok(status(tmp_path, "--redis", server.url, env={"REDIS_URL": other.url}))


def test_never_opens_the_database(tmp_path: Path, redis_factory: Any) -> None:
    server = redis_factory()
    broken = {"DATABASE_URL": "mysql://nobody@nowhere/x"}
    assert ok(status(tmp_path, "--redis", server.url, env=broken)).startswith("no daemon")
    assert not list(tmp_path.iterdir()), "nothing written: no robocam.db"
    usage = status(tmp_path, "--redis", server.url, "--database", "x.db")
    assert usage.code == 2 and "unrecognized arguments: --database" in usage.err


def test_password_database_number_and_unix_socket(tmp_path: Path, redis_factory: Any) -> None:
    server = redis_factory(password="s3cret-pw", unix=True)
    heartbeat(server, "in-db-0", {}, [])
    text = ok(status(tmp_path, "--redis", server.url))
    assert "in-db-0" in text and f"redis://:***@127.0.0.1:{server.port}/0" in text
    assert "s3cret-pw" not in text
    # The daemons of another CamProxy on database 3 of the same Redis: their keys are
    # not these (pub/sub is shared across database numbers; keys are not).
    assert "no daemon" in ok(status(tmp_path, "--redis", server.url + "/3"))
    unix = f"unix://:s3cret-pw@{server.unix_socket}"
    text = ok(status(tmp_path, "--redis", unix))
    assert "in-db-0" in text and "s3cret-pw" not in text


def test_wrong_or_missing_password_is_one_line_without_it(
    tmp_path: Path, redis_factory: Any
) -> None:
    server = redis_factory(password="right-pw")
    wrong = status(tmp_path, "--redis", server.url.replace("right-pw", "wrong-pw"))
    assert wrong.code == 1 and wrong.out == ""
    line = wrong.error_line
    assert line.startswith(
        f"camproxy cluster: cannot reach Redis redis://:***@127.0.0.1:{server.port}/0"
    )
    assert "WRONGPASS" in line and "wrong-pw" not in wrong.err
    missing = status(tmp_path, "--redis", f"redis://127.0.0.1:{server.port}")
    assert missing.code == 1 and "NOAUTH" in missing.error_line


def test_rediss_with_the_ca_file_or_the_system_cas(tmp_path: Path, redis_factory: Any) -> None:
    certificate = make_self_signed(tmp_path)
    server = redis_factory(tls=(certificate.cert, certificate.key))
    heartbeat(server, "over-tls", {}, [])
    text = ok(status(tmp_path, "--redis", server.url, "--redis-ca", str(certificate.cert)))
    assert "over-tls" in text and text.startswith("1 daemon alive on rediss://127.0.0.1:")
    (tmp_path / ".env").write_text(f"REDIS_URL={server.url}\nREDIS_CA_FILE={certificate.cert}\n")
    assert "over-tls" in ok(status(tmp_path))
    (tmp_path / ".env").unlink()
    # The system's CAs do not know this certificate.
    doubting = status(tmp_path, "--redis", server.url, "--timeout", "3")
    assert doubting.code == 1 and "certificate verify failed" in doubting.error_line


@pytest.mark.parametrize(
    ("url", "extra", "expected"),
    [
        ("http://127.0.0.1:6379", [], "must start with redis://, rediss:// or unix://"),
        ("redis://:hunter2@127.0.0.1:99999", [], "the port must be 1-65535"),
        ("redis://127.0.0.1:6379/x?password=hunter2", [], "the database must be a number"),
        ("redis://127.0.0.1:6379", ["--redis-ca", "/nonexistent.pem"], "rediss:// URL"),
        ("rediss://127.0.0.1:6379", ["--redis-ca", "/nonexistent.pem"], "cannot read"),
    ],
)
def test_a_bad_url_or_ca_file_is_one_line_and_exit_1(
    tmp_path: Path, url: str, extra: list[str], expected: str
) -> None:
    result = status(tmp_path, "--redis", url, *extra)
    assert result.code == 1 and result.out == ""
    assert expected in result.error_line
    assert "hunter2" not in result.err


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    nothing = status(tmp_path)
    assert nothing.code == 2 and nothing.out == ""
    assert nothing.error_line == (
        "camproxy cluster: error: no Redis to ask: give --redis URL or set REDIS_URL"
    )
    for args in (["--timeout", "soon"], ["--timeout", "0"], ["--bogus"]):
        result = status(tmp_path, "--redis", "redis://127.0.0.1:1", *args)
        assert result.code == 2 and "usage:" in result.err, result
    bare = camproxy(tmp_path, "cluster")
    assert bare.code == 2 and "usage:" in bare.err
    helped = camproxy(tmp_path, "cluster", "status", "--help")
    assert helped.code == 0 and "--redis URL" in helped.out and "--database" not in helped.out
    assert "cluster" in camproxy(tmp_path, "--help").out


def timed(cwd: Path, *args: str) -> tuple[Result, float]:
    started = time.monotonic()
    result = status(cwd, *args)
    return result, time.monotonic() - started


def test_nothing_listening_is_refused_at_once(tmp_path: Path) -> None:
    port = servers.free_port()
    result, took = timed(tmp_path, "--redis", f"redis://127.0.0.1:{port}", "--timeout", "10")
    assert result.code == 1 and "Connection refused" in result.error_line, result
    assert took < 10, "a refused connection needs no waiting for the timeout"


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listen queue is full: the kernel drops further SYNs, so a connect
    neither succeeds nor fails (as behind a firewall that drops packets)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    waiting = []
    for _ in range(3):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        waiting.append(client)
    try:
        yield port
    finally:
        for client in waiting:
            client.close()
        listener.close()


def test_a_connect_that_never_completes_is_bounded(tmp_path: Path, full_backlog: int) -> None:
    url = f"redis://127.0.0.1:{full_backlog}"
    result, took = timed(tmp_path, "--redis", url, "--timeout", "2")
    assert result.code == 1, result
    assert result.error_line.startswith(f"camproxy cluster: cannot reach Redis {url}/0: ")
    assert took < 2 + SLACK, took


def test_a_frozen_redis_is_bounded(tmp_path: Path, redis_factory: Any) -> None:
    server = redis_factory()
    server.freeze()
    try:
        result, took = timed(tmp_path, "--redis", server.url, "--timeout", "2")
    finally:
        server.thaw()
    assert result.code == 1, result
    assert result.error_line.startswith("camproxy cluster: cannot reach Redis "), result
    assert took < 2 + SLACK, took


def test_hide_password() -> None:
    assert hide_password("bad Redis URL 'redis://:pw@h:99999': x") == (
        "bad Redis URL 'redis://:***@h:99999': x"
    )
    assert hide_password("'rediss://user:p%40w@h/1'") == "'rediss://user:***@h/1'"
    assert hide_password("'unix:///s?db=1&password=pw'") == "'unix:///s?db=1&password=***'"
    assert hide_password("redis://h:6379/0 and no password") == "redis://h:6379/0 and no password"
