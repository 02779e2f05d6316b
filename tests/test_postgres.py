"""PostgreSQL as it behaves in production: restarted under a running store, shared by
processes (a daemon, the camproxy commands)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from camproxy.accounts.database import DatabaseUnavailable
from camproxy.accounts.migrate import latest_version
from camproxy.accounts.passwords import FastHasher
from camproxy.accounts.sessions import SessionStore
from camproxy.accounts.users import UserStore
from tests import servers, stores
from tests.browserlike import Browser
from tests.clirun import camproxy
from tests.processes import free_port, running, twistd, wait_for_health

shared_postgres = stores.shared_postgres
postgres_factory = servers.postgres_factory


@pytest_twisted.ensureDeferred
async def test_a_restart_fails_queries_meanwhile_and_then_they_work(
    reactor: Any, postgres_factory: Callable[[], servers.PostgresServer]
) -> None:
    server = postgres_factory()
    database = stores.open_database(reactor, server.url)
    try:
        users = UserStore(database, FastHasher(), Clock())
        sessions = SessionStore(database, Clock())
        alice = await users.add("alice", "password1")
        session_id = await sessions.create(alice.id)

        await threads.deferToThread(server.stop)
        started = reactor.seconds()
        # More queries than threads, reads and writes: each fails, none hangs.
        attempts: list[Deferred[Any]] = [sessions.lookup(session_id) for _ in range(6)]
        attempts += [users.set_can_control("alice", False) for _ in range(3)]
        outcomes = await defer.DeferredList(attempts, consumeErrors=True)
        assert reactor.seconds() - started < 10
        for succeeded, failure in outcomes:
            assert not succeeded
            assert isinstance(failure, Failure) and failure.check(DatabaseUnavailable), failure
            message = str(failure.value)
            assert message.startswith(f"postgresql://{server.user}:***@127.0.0.1:{server.port}")
            assert server.password not in message and "\n" not in message

        await threads.deferToThread(server.start)
        # The pooled connections died with the server; the next queries reconnect.
        for _ in range(6):
            session = await sessions.lookup(session_id)
            assert session is not None and session.username == "alice"
        await users.set_can_control("alice", False)
        alice_now = await users.get("alice")
        assert alice_now is not None and not alice_now.can_control
    finally:
        database.close()


@pytest_twisted.ensureDeferred
async def test_a_daemon_and_the_commands_share_one_postgresql(
    reactor: Any, shared_postgres: servers.PostgresServer, tmp_path: Path
) -> None:
    url = stores.new_postgres_database(shared_postgres)
    added = camproxy(
        tmp_path, "user", "add", "alice", "--password-stdin", "--database", url, stdin="alice-pw\n"
    )
    assert added.code == 0, added.err
    port = free_port()
    argv = twistd(
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--camera",
        f"ws://127.0.0.1:{free_port()}/ws",
    )
    env = {"SECRET_KEY": "pg-test", "DATABASE_URL": url, "ADMIN_USERNAME": "boss"}
    env["ADMIN_PASSWORD"] = "boss-password"
    with running(argv, env=env, cwd=tmp_path) as daemon:
        wait_for_health(port, daemon)
        browser = Browser(f"http://127.0.0.1:{port}")
        assert (await browser.login("alice", "alice-pw")).code == 302
        assert (await Browser(browser.base).login("boss", "boss-password")).code == 302
        # Several daemons share one PostgreSQL: no lock file anywhere.
        assert not list(tmp_path.glob("*.lock"))
        listed = await threads.deferToThread(camproxy, tmp_path, "user", "list", "--database", url)
        assert [line.split()[0] for line in listed.out.splitlines()] == ["NAME", "alice", "boss"]
        log = Path(daemon.log_path).read_text()  # type: ignore[attr-defined]
    assert shared_postgres.password not in log


def test_db_check_and_backup_on_postgresql(
    shared_postgres: servers.PostgresServer, tmp_path: Path, reactor: Any
) -> None:
    url = stores.new_postgres_database(shared_postgres)
    stores.open_database(reactor, url).close()
    shown = url.replace(shared_postgres.password, "***")
    checked = camproxy(tmp_path, "db", "check", "--database", url)
    assert checked.code == 0, checked.err
    assert checked.out.startswith(f"{shown}: PostgreSQL ")
    assert checked.out.rstrip().endswith(f", schema version {latest_version()}, 0 users")

    backup = camproxy(tmp_path, "db", "backup", str(tmp_path / "copy.db"), "--database", url)
    assert backup.code == 1 and backup.out == ""
    assert backup.error_line.startswith(f"camproxy db backup: {shown} is a PostgreSQL database")
    assert "pg_dump" in backup.error_line
    assert shared_postgres.password not in backup.err + checked.out
    assert not (tmp_path / "copy.db").exists()
