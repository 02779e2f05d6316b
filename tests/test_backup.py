"""``camproxy db backup`` / ``check`` and the documented restore procedure.

The backups are taken from a running daemon process while users log in (each login
writes a session), and the restore follows docs/production.md: stop the daemon, copy the
file back, remove ``-wal``/``-shm``, start it again.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.defer import Deferred, gatherResults

from camproxy.accounts.migrate import latest_version
from camproxy.cli.db import backup_target
from camproxy.web.auth import SESSION_COOKIE
from tests.browserlike import Browser
from tests.processes import BIN, REPO, free_port, running, stop, twistd, wait_for_health

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}


def camproxy_cli(
    *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "camproxy"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def add_user(database: Path, name: str, password: str, *extra: str) -> None:
    added = camproxy_cli(
        "user",
        "add",
        name,
        "--password-stdin",
        "--database",
        str(database),
        *extra,
        stdin=password + "\n",
    )
    assert added.returncode == 0, added.stderr


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CamProxy database with alice (admin) and bob; tests copy it."""
    database = tmp_path_factory.mktemp("seed") / "robocam.db"
    add_user(database, "alice", PASSWORDS["alice"], "--admin")
    add_user(database, "bob", PASSWORDS["bob"])
    return database


@pytest.fixture
def database(seeded: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "robocam.db"
    shutil.copyfile(seeded, copy)
    return copy


def contents(path: Path) -> tuple[str, list[str], int]:
    """A copy's integrity verdict, user names and number of sessions, read with sqlite3."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        verdict = connection.execute("PRAGMA integrity_check").fetchone()[0]
        names = [r[0] for r in connection.execute("SELECT username FROM users ORDER BY username")]
        sessions = connection.execute("SELECT count(*) FROM sessions").fetchone()[0]
    return verdict, names, sessions


def daemon(database: Path) -> tuple[list[str], dict[str, str], int]:
    """A production-like daemon on ``database``: argv, environment, 127.0.0.1 port.

    Not ``--demo``, which would add its own admin to the database; the camera address
    is a closed local port, which ``/health`` allows while nobody watches.
    """
    port = free_port()
    argv = twistd(
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--camera",
        f"ws://127.0.0.1:{free_port()}/ws",
        "--database",
        str(database),
    )
    return argv, {"SECRET_KEY": "backup-test-secret"}, port


# --- the command line -------------------------------------------------------------------


def test_backup_and_check_report_what_they_did(database: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    done = camproxy_cli("db", "backup", str(copy), "--database", str(database))
    assert done.returncode == 0, done.stderr
    latest = latest_version()
    assert done.stdout.startswith(f"backed up {database} to {copy}: ")
    assert f"schema version {latest}, 2 users, integrity ok" in done.stdout
    assert contents(copy) == ("ok", ["alice", "bob"], 0)
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    with closing(sqlite3.connect(copy)) as connection:
        # One self-contained file: no -wal to carry along.
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db", "robocam.db"]

    checked = camproxy_cli("db", "check", "--database", str(copy))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().endswith(f"schema version {latest}, 2 users, integrity ok")


def test_backup_into_a_directory_names_the_file_by_time(database: Path, tmp_path: Path) -> None:
    moment = time.mktime((2026, 3, 4, 5, 6, 7, 0, 0, -1))
    assert (
        backup_target(tmp_path, "/x/robocam.db", moment) == tmp_path / "robocam-20260304-050607.db"
    )
    assert backup_target(tmp_path / "named.db", "/x/robocam.db") == tmp_path / "named.db"
    directory = tmp_path / "backups"
    directory.mkdir()
    done = camproxy_cli("db", "--database", str(database), "backup", str(directory))
    assert done.returncode == 0, done.stderr
    (made,) = directory.iterdir()
    assert made.name.startswith("robocam-") and made.suffix == ".db"
    assert contents(made)[0] == "ok"


def test_backup_replaces_an_existing_file(database: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    old.write_bytes(b"yesterday's backup")
    assert camproxy_cli("db", "backup", str(old), "--database", str(database)).returncode == 0
    assert contents(old)[0] == "ok"


def test_the_script_writes_into_backups_by_default(database: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "python"), str(REPO / "scripts" / "backup_db.py")],
        env={**os.environ, "DATABASE_URL": "sqlite:///robocam.db"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (made,) = (tmp_path / "backups").iterdir()
    assert made.name.startswith("robocam-")
    assert contents(made) == ("ok", ["alice", "bob"], 0)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["backup", "{tmp}/copy.db", "--database", "{tmp}/missing.db"], "does not exist"),
        (["backup", "{tmp}/no/such/dir/copy.db"], "does not exist"),
        (["backup", "{db}"], "is the database itself"),
        (["check", "--database", "{tmp}/missing.db"], "does not exist"),
        (["check", "--database", "{tmp}/garbage.db"], "not a database"),
        (["backup", "{tmp}/copy.db", "--database", "{tmp}/garbage.db"], "not a database"),
    ],
)
def test_failures_are_one_line_and_exit_1(
    args: list[str], fragment: str, database: Path, tmp_path: Path
) -> None:
    (tmp_path / "garbage.db").write_bytes(os.urandom(8192))
    argv = [a.format(tmp=tmp_path, db=database) for a in args]
    if "--database" not in argv:
        argv += ["--database", str(database)]
    result = camproxy_cli("db", *argv)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert lines[0].startswith("camproxy db ")
    assert not (tmp_path / "copy.db").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_database_is_not_copied_over_a_good_backup(
    database: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.db"
    assert camproxy_cli("db", "backup", str(good), "--database", str(database)).returncode == 0
    before = good.read_bytes()
    page_size = 4096
    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA page_size").fetchone()[0] == page_size
    with open(database, "r+b") as damaged:
        damaged.seek(2 * page_size)
        damaged.write(os.urandom(2 * page_size))

    checked = camproxy_cli("db", "check", "--database", str(database))
    assert checked.returncode == 1 and len(checked.stderr.strip().splitlines()) == 1
    copied = camproxy_cli("db", "backup", str(good), "--database", str(database))
    assert copied.returncode == 1 and len(copied.stderr.strip().splitlines()) == 1
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.db", "robocam.db"]


def test_usage_errors_exit_2(database: Path) -> None:
    assert camproxy_cli("db", "backup", "--database", str(database)).returncode == 2
    assert camproxy_cli("db", "frobnicate").returncode == 2


# --- with the daemon running --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_backup_while_the_daemon_runs_and_users_log_in(
    reactor: Any, database: Path, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    argv, env, port = daemon(database)
    with running(argv, env=env, cwd=tmp_path) as process:
        wait_for_health(port, process)
        url = f"http://127.0.0.1:{port}"
        assert (await Browser(url).login("alice", PASSWORDS["alice"])).code == 302
        finished = False
        logins: list[int] = []

        async def keep_logging_in(name: str) -> None:
            while not finished:
                page = await Browser(url).login(name, PASSWORDS[name])
                logins.append(page.code)

        def back_up_three_times() -> list[subprocess.CompletedProcess[str]]:
            return [
                camproxy_cli(
                    "db", "backup", str(backups / f"copy{i}.db"), "--database", str(database)
                )
                for i in range(3)
            ]

        loops = [Deferred.fromCoroutine(keep_logging_in(name)) for name in PASSWORDS]
        try:
            results = await threads.deferToThread(back_up_three_times)
        finally:
            finished = True
            await gatherResults(loops)
        for result in results:
            assert result.returncode == 0, result.stderr
        assert logins and set(logins) == {302}

        checked = await threads.deferToThread(
            camproxy_cli, "db", "check", "--database", str(database)
        )
        assert checked.returncode == 0, checked.stderr

    for index in range(3):
        verdict, names, sessions = contents(backups / f"copy{index}.db")
        assert verdict == "ok"
        assert names == ["alice", "bob"]
        assert sessions >= 1
    assert sorted(p.name for p in backups.iterdir()) == ["copy0.db", "copy1.db", "copy2.db"]


@pytest_twisted.ensureDeferred
async def test_restore_after_a_crash_as_documented(
    reactor: Any, database: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "backup.db"
    argv, env, port = daemon(database)
    with running(argv, env=env, cwd=tmp_path) as process:
        wait_for_health(port, process)
        alice = Browser(f"http://127.0.0.1:{port}")
        assert (await alice.login("alice", PASSWORDS["alice"])).code == 302
        done = await threads.deferToThread(
            camproxy_cli, "db", "backup", str(backup), "--database", str(database)
        )
        assert done.returncode == 0, done.stderr
        # A change after the backup, still in the write-ahead log when the daemon dies.
        await threads.deferToThread(add_user, database, "carol", "carol-password")
        stop(process, signal.SIGKILL)
    assert Path(f"{database}-wal").exists()

    # The restore: daemon stopped; copy the backup back; remove -wal and -shm; start.
    shutil.copyfile(backup, database)
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)

    argv, env, port = daemon(database)
    with running(argv, env=env, cwd=tmp_path) as process:
        wait_for_health(port, process)
        alice.base = f"http://127.0.0.1:{port}"
        assert (await alice.get("/")).code == 200, "the session in the backup is still valid"
        cookie = alice.cookie(SESSION_COOKIE)
        assert (await Browser(alice.base).login("alice", PASSWORDS["alice"])).code == 302
        assert (await Browser(alice.base).login("carol", "carol-password")).code == 401
        assert alice.cookie(SESSION_COOKIE) == cookie
    assert contents(database)[:2] == ("ok", ["alice", "bob"])
