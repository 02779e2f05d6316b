"""SIGKILL in the middle of user changes and logins leaves a consistent database."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from tests.browserlike import Browser
from tests.processes import BIN, free_port, running, twistd, wait_for_health


def cli(database: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "camproxy"), *args, "--database", database],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def churn_users(database: str, rounds: int) -> None:
    """What an admin's script might do while the daemon runs: add, change, delete."""
    for n in range(rounds):
        cli(database, "user", "add", f"churn{n}", "--password-stdin", stdin="pw\n")
        cli(database, "user", "passwd", f"churn{n}", "--password-stdin", stdin="pw2\n")
        if n % 2:
            cli(database, "user", "delete", f"churn{n}")


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_sigkill_during_writes_leaves_the_database_consistent(
    reactor: Any, tmp_path: Path
) -> None:
    database = str(tmp_path / "users.db")
    assert (
        cli(database, "user", "add", "alice", "--password-stdin", stdin="alice-pw\n").returncode
        == 0
    )
    port = free_port()
    argv = twistd("--demo", "--listen", f"tcp:{port}:interface=127.0.0.1", "--database", database)
    with running(argv, cwd=tmp_path) as daemon:
        wait_for_health(port, daemon)
        churning = threads.deferToThread(churn_users, database, 8)
        logins = [
            defer.ensureDeferred(Browser(f"http://127.0.0.1:{port}").login("alice", "alice-pw"))
            for _ in range(10)
        ]
        await logins[0]
        os.kill(daemon.pid, signal.SIGKILL)  # mid-logins, mid-churn: both are writing
        await defer.DeferredList(logins, consumeErrors=True)
        await churning

    connection = sqlite3.connect(database)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        names = {row[0] for row in connection.execute("SELECT username FROM users")}
    finally:
        connection.close()
    assert "alice" in names
    # The dead daemon's lock is stale: a new daemon starts on the same file.
    port = free_port()
    argv = twistd("--demo", "--listen", f"tcp:{port}:interface=127.0.0.1", "--database", database)
    with running(argv, cwd=tmp_path) as daemon:
        wait_for_health(port, daemon)
        page = await Browser(f"http://127.0.0.1:{port}").login("alice", "alice-pw")
        assert page.code == 302
