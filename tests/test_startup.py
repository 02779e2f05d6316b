"""The database is open, upgraded and bootstrapped before the port is bound (real twistd).

Each test starts ``twistd -n camproxy`` as a user would. ``/health`` answering means the
port is bound, so everything the start promises must be true from then on: the bootstrap
admin exists (and can log in at once), a stop right then loses nothing, and a database
that cannot be used stops the start with one line and exit status 1 instead.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import pytest_twisted
import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from camproxy.accounts.database import DatabaseError
from camproxy.accounts.passwords import FastHasher
from camproxy.accounts.service import AccountsService, StartupError, StartupSettings
from camproxy.accounts.tables import users
from tests import stores
from tests.browserlike import Browser
from tests.legacy_schema import create_camproxy_database
from tests.processes import free_port, get_json, running, stop, twistd
from tests.servers import PostgresServer

shared_postgres = stores.shared_postgres
database_url = stores.database_url

ADMIN = {"ADMIN_USERNAME": "boss", "ADMIN_PASSWORD": "first-password"}


def daemon_argv(database: str, port: int, *extra: str) -> list[str]:
    """A daemon on 127.0.0.1:``port``; its camera is a closed port (fine for /health)."""
    return twistd(
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--camera",
        f"ws://127.0.0.1:{free_port()}/ws",
        "--database",
        database,
        *extra,
    )


def first_health(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Return as soon as ``/health`` first answers (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = Path(process.log_path).read_text()  # type: ignore[attr-defined]
            raise RuntimeError(f"daemon exited with {process.returncode}: {log}")
        try:
            get_json(f"http://127.0.0.1:{port}/health", timeout=1.0)
            return
        except OSError:
            time.sleep(0.005)
    raise TimeoutError("daemon did not answer /health")


def run_to_exit(
    argv: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a daemon that is expected to refuse to start."""
    return subprocess.run(
        argv,
        env={**os.environ, "SECRET_KEY": "startup-test", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def admins(database: Path) -> list[str]:
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute("SELECT username FROM users WHERE is_admin = 1")
        return [row[0] for row in rows]
    finally:
        connection.close()


@pytest_twisted.ensureDeferred
async def test_the_admin_logs_in_as_soon_as_health_answers(reactor: Any, tmp_path: Path) -> None:
    database = tmp_path / "robocam.db"
    port = free_port()
    env = {"SECRET_KEY": "startup-test", **ADMIN}
    with running(daemon_argv(str(database), port), env=env, cwd=tmp_path) as daemon:
        first_health(port, daemon)
        # Port bound: the bootstrap is done, not on its way (the web's old when_ready()
        # wait hid that it was not, for logins; nothing else waited).
        assert admins(database) == ["boss"]
        page = await Browser(f"http://127.0.0.1:{port}").login("boss", "first-password")
        assert page.code == 302


def test_a_stop_as_soon_as_health_answers_keeps_the_first_password(tmp_path: Path) -> None:
    database = tmp_path / "robocam.db"
    port = free_port()
    env = {"SECRET_KEY": "startup-test", **ADMIN}
    with running(daemon_argv(str(database), port), env=env, cwd=tmp_path) as daemon:
        first_health(port, daemon)
        # Port bound: the bootstrap is done, not on its way.
        assert admins(database) == ["boss"]
        # So early that twistd may not have its SIGTERM handler yet: it may just die.
        stop(daemon, signal.SIGTERM)
    assert admins(database) == ["boss"]

    # Another ADMIN_PASSWORD: the existing admin is left alone.
    port = free_port()
    env = {"SECRET_KEY": "startup-test", **ADMIN, "ADMIN_PASSWORD": "second-password"}
    with running(daemon_argv(str(database), port), env=env, cwd=tmp_path) as daemon:
        first_health(port, daemon)
        stop(daemon, signal.SIGTERM)
    connection = sqlite3.connect(database)
    (stored,) = connection.execute("SELECT password_hash FROM users").fetchone()
    connection.close()
    assert bcrypt.checkpw(b"first-password", stored.encode())
    assert not bcrypt.checkpw(b"second-password", stored.encode())


@pytest_twisted.ensureDeferred
async def test_the_demo_admin_password_is_printed_and_works_at_once(
    reactor: Any, tmp_path: Path
) -> None:
    port = free_port()
    argv = twistd("--demo", "--listen", f"tcp:{port}:interface=127.0.0.1")
    with running(argv, cwd=tmp_path) as daemon:
        first_health(port, daemon)
        log = Path(daemon.log_path).read_text()  # type: ignore[attr-defined]
        found = re.search(r"log in as 'admin' with password '([^']+)'", log)
        assert found, log
        page = await Browser(f"http://127.0.0.1:{port}").login("admin", found.group(1))
        assert page.code == 302


def one_line_exit_1(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert lines[0].startswith("camproxy: error: ")
    return lines[0]


def test_a_file_that_is_not_a_database_stops_the_start(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all " * 400)
    result = run_to_exit(daemon_argv(str(garbage), free_port()), {}, tmp_path)
    assert one_line_exit_1(result) == (
        f"camproxy: error: cannot open the database {garbage}: file is not a database"
    )


def foreign_database(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE recipes (name TEXT)")
    connection.close()


def future_database(path: Path) -> None:
    create_camproxy_database(path, 3)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.close()


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (foreign_database, "is not a CamProxy database"),
        (future_database, "has schema version 99, newer than this CamProxy knows"),
    ],
    ids=["foreign", "too-new"],
)
def test_databases_that_cannot_be_used_stop_the_start(
    tmp_path: Path, make: Any, fragment: str
) -> None:
    database = tmp_path / "robocam.db"
    make(database)
    result = run_to_exit(daemon_argv(str(database), free_port()), {}, tmp_path)
    assert fragment in one_line_exit_1(result)


def test_an_unwritable_directory_stops_the_start(tmp_path: Path) -> None:
    result = run_to_exit(
        daemon_argv(str(tmp_path / "no" / "such" / "dir" / "robocam.db"), free_port()),
        {},
        tmp_path,
    )
    assert "cannot open the database" in one_line_exit_1(result)


def test_a_wrong_postgresql_password_stops_the_start(
    tmp_path: Path, shared_postgres: PostgresServer
) -> None:
    url = stores.new_postgres_database(shared_postgres)
    wrong = url.replace(shared_postgres.password, "wrong-password-77")
    result = run_to_exit(daemon_argv(wrong, free_port()), {}, tmp_path)
    line = one_line_exit_1(result)
    assert "password authentication failed" in line
    assert f"postgresql://{shared_postgres.user}:***@127.0.0.1" in line
    assert "wrong-password-77" not in result.stdout + result.stderr


def test_an_unreachable_postgresql_stops_the_start(tmp_path: Path) -> None:
    url = f"postgresql://camproxy:secret-99@127.0.0.1:{free_port()}/camproxy"
    argv = [arg for arg in daemon_argv("x", free_port()) if arg not in ("--database", "x")]
    result = run_to_exit(argv, {"DATABASE_URL": url}, tmp_path)
    line = one_line_exit_1(result)
    assert "refused" in line and "secret-99" not in result.stdout + result.stderr


# The same start-up work, in this process --------------------------------------------


def test_open_bootstraps_and_leaves_nothing_open(reactor: Any, database_url: str) -> None:
    threads_before = set(threading.enumerate())
    config = StartupSettings(database=database_url, admin_username="Boss", admin_password="pw-one")
    accounts = AccountsService.open(reactor, config, FastHasher())
    try:
        # Nothing may cross twistd's fork: no thread started, no connection kept.
        assert set(threading.enumerate()) == threads_before
        pool = accounts.database.engine.pool
        assert isinstance(pool, QueuePool) and pool.checkedin() == 0
        boss = accounts.database.read_now(
            lambda connection: connection.execute(
                sa.select(users.c.username, users.c.is_admin)
            ).all()
        )
        assert [tuple(row) for row in boss] == [("Boss", True)]
    finally:
        accounts.database.close()


@pytest_twisted.ensureDeferred
async def test_demo_resets_its_admin_each_start(reactor: Any, database_url: str) -> None:
    config = StartupSettings(database=database_url, demo=True)
    first = AccountsService.open(reactor, config, FastHasher())
    first.startService()
    try:
        admin = await first.users.get("admin")
        assert admin is not None and admin.is_admin
        session = await first.sessions.create(admin.id)
        await first.users.add("root", "pw-root", admin=True)
        await first.users.set_admin("admin", False)
        await first.users.set_active("admin", False)
    finally:
        first.stopService()
    second = AccountsService.open(reactor, config, FastHasher())
    second.startService()
    try:
        admin = await second.users.get("admin")
        assert admin is not None and admin.is_admin and admin.active
        assert await second.sessions.lookup(session) is None, "a new password ends sessions"
    finally:
        second.stopService()


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"admin_username": "no spaces allowed", "admin_password": "pw"}, "invalid user name"),
        ({"admin_username": "boss", "admin_password": "x" * 80}, "at most 72 bytes"),
    ],
)
def test_a_bad_bootstrap_admin_stops_the_start(
    reactor: Any, tmp_path: Path, settings: dict[str, str], fragment: str
) -> None:
    config = StartupSettings(database=str(tmp_path / "robocam.db"), **settings)  # type: ignore[arg-type]
    with pytest.raises(StartupError, match=fragment):
        AccountsService.open(reactor, config, FastHasher())


@pytest_twisted.ensureDeferred
async def test_the_stores_are_there_from_the_start_and_after_the_stop(
    reactor: Any, tmp_path: Path
) -> None:
    accounts = AccountsService.open(
        reactor, StartupSettings(database=str(tmp_path / "x.db")), FastHasher()
    )
    accounts.startService()
    assert await accounts.users.list() == []
    accounts.stopService()
    with pytest.raises(DatabaseError, match="closed"):
        await accounts.users.list()
