"""``camproxy user ...`` (camproxy.usercli) run as a real process, as an admin would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.task import Clock

from camproxy.accounts.passwords import BcryptHasher
from camproxy.accounts.sessions import SessionStore
from camproxy.accounts.users import User, UserStore
from camproxy.cli import user as usercli
from tests import stores
from tests.clirun import Result, camproxy
from tests.servers import PostgresServer

shared_postgres = stores.shared_postgres
database_url = stores.database_url

PASSWORD = "password1"


@attrs.frozen
class Daemon:
    """The database as a running daemon holds it, with users made at test speed."""

    cwd: Path
    url: str
    users: UserStore
    sessions: SessionStore
    root: User
    alice: User

    def user(self, *args: str, stdin: str = "") -> Result:
        return camproxy(self.cwd, "user", *args, "--database", self.url, stdin=stdin)


@pytest_twisted.async_yield_fixture
async def daemon(reactor: Any, tmp_path: Path, database_url: str) -> AsyncIterator[Daemon]:
    db = stores.open_database(reactor, database_url)
    clock = Clock()
    users = UserStore(db, BcryptHasher(reactor, rounds=4), clock)
    root = await users.add("root", PASSWORD, admin=True)
    alice = await users.add("alice", PASSWORD)
    yield Daemon(tmp_path, database_url, users, SessionStore(db, clock), root, alice)
    db.close()


def test_add_and_list(tmp_path: Path) -> None:
    db = ["--database", str(tmp_path / "new.db")]
    added = camproxy(
        tmp_path, "user", "add", "Root", "--admin", "--password-stdin", *db, stdin="rootroot\n"
    )
    assert (added.code, added.out, added.err) == (0, "created admin 'Root'\n", "")

    again = camproxy(tmp_path, "user", "add", "root", "--password-stdin", *db, stdin="pw123456\n")
    assert again.code == 1
    assert "'Root' exists already" in again.error_line

    empty = camproxy(tmp_path, "user", "add", "bob", "--password-stdin", *db, stdin="\n")
    assert empty.code == 1
    assert "must not be empty" in empty.error_line

    listed = camproxy(tmp_path, "user", *db, "list")
    assert listed.code == 0
    assert listed.out.splitlines() == [
        "NAME  ADMIN  ACTIVE  CONTROL  LAST LOGIN",
        "Root  yes    yes     yes      never",
    ]


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = camproxy(tmp_path, "user", "add")
    assert result.code == 2
    assert "usage:" in result.err
    assert not (tmp_path / "robocam.db").exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["user"],
        ["user", "add"],
        ["user", "frobnicate", "alice"],
        ["user", "list", "extra"],
        ["user", "passwd", "alice", "--password"],
        ["user", "delete"],
    ],
)
def test_usage_errors(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        usercli.main(argv)
    assert stop.value.code == 2
    assert "usage: camproxy" in capsys.readouterr().err


@pytest_twisted.ensureDeferred
async def test_commands_change_the_user(daemon: Daemon) -> None:
    steps = [
        ("disable", "disabled 'alice' and ended the user's sessions", {"active": False}),
        ("enable", "enabled 'alice'", {"active": True}),
        ("promote", "'alice' is now an admin", {"is_admin": True}),
        (
            "nocontrol",
            "'alice' may not control the camera once no longer an admin (admins always may)",
            {"can_control": False},
        ),
        ("demote", "'alice' is no longer an admin", {"is_admin": False}),
        ("control", "'alice' may control the camera", {"can_control": True}),
    ]
    for command, said, changed in steps:
        result = daemon.user(command, "ALICE")
        assert (result.code, result.out, result.err) == (0, said + "\n", "")
        alice = await daemon.users.get("alice")
        assert alice is not None
        assert {name: getattr(alice, name) for name in changed} == changed

    deleted = daemon.user("delete", "Alice")
    assert (deleted.code, deleted.out) == (0, "deleted 'alice' and the user's sessions\n")
    assert await daemon.users.get("alice") is None


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["demote", "root"], "", "last active admin"),
        (["passwd", "nobody", "--password-stdin"], "new password\n", "no user named 'nobody'"),
        (["add", "bad name", "--password-stdin"], "new password\n", "invalid user name"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_refusals_exit_1_with_one_line(
    daemon: Daemon, args: list[str], stdin: str, message: str
) -> None:
    result = daemon.user(*args, stdin=stdin)
    assert result.code == 1
    assert message in result.error_line
    assert result.out == ""
    root = await daemon.users.get("root")
    assert root is not None and root.is_admin


@pytest_twisted.ensureDeferred
async def test_passwd_disable_delete_end_sessions_of_a_running_daemon(daemon: Daemon) -> None:
    sessions = daemon.sessions
    roots = await sessions.create(daemon.root.id)
    first = await sessions.create(daemon.alice.id)

    assert daemon.user("passwd", "alice", "--password-stdin", stdin="new password\n").code == 0
    assert await sessions.alive([first, roots]) == {roots}
    assert await daemon.users.authenticate("alice", "new password") is not None

    second = await sessions.create(daemon.alice.id)
    assert daemon.user("disable", "alice").code == 0
    assert await sessions.alive([second, roots]) == {roots}

    assert daemon.user("enable", "alice").code == 0
    third = await sessions.create(daemon.alice.id)
    assert daemon.user("delete", "alice").code == 0
    assert await sessions.alive([third, roots]) == {roots}


def test_database_is_found_as_the_daemon_finds_it(tmp_path: Path) -> None:
    assert camproxy(tmp_path, "user", "list").code == 0
    assert (tmp_path / "robocam.db").exists()

    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///from-dotenv.db\n")
    assert camproxy(tmp_path, "user", "list").code == 0
    assert (tmp_path / "from-dotenv.db").exists()

    absolute = tmp_path / "data" / "from-env.db"
    absolute.parent.mkdir()
    env = {"DATABASE_URL": f"sqlite:///{absolute}"}
    assert camproxy(tmp_path, "user", "list", env=env).code == 0
    assert absolute.exists()

    bad = camproxy(tmp_path, "user", "list", env={"DATABASE_URL": "mysql://u:pw@db/camproxy"})
    assert bad.code == 1
    assert bad.error_line == (
        "camproxy user: DATABASE_URL 'mysql://u:***@db/camproxy' is not supported: use "
        "sqlite:///relative/path.db, sqlite:////absolute/path.db or "
        "postgresql://user:password@host:port/dbname"
    )


def test_postgresql_from_the_environment(tmp_path: Path, shared_postgres: PostgresServer) -> None:
    url = stores.new_postgres_database(shared_postgres)
    added = camproxy(
        tmp_path,
        "user",
        "add",
        "root",
        "--admin",
        "--password-stdin",
        stdin="rootroot\n",
        env={"DATABASE_URL": url},
    )
    assert (added.code, added.out, added.err) == (0, "created admin 'root'\n", "")
    (tmp_path / ".env").write_text(f"DATABASE_URL={url}\n")
    listed = camproxy(tmp_path, "user", "list")
    assert listed.code == 0 and listed.out.splitlines()[1].startswith("root ")
    assert not list(tmp_path.glob("*.db"))


def test_a_wrong_postgresql_password_is_one_line(
    tmp_path: Path, shared_postgres: PostgresServer
) -> None:
    url = stores.new_postgres_database(shared_postgres)
    wrong = url.replace(shared_postgres.password, "not-the-password-42")
    result = camproxy(tmp_path, "user", "list", "--database", wrong)
    assert result.code == 1 and result.out == ""
    assert result.error_line.startswith(
        f"camproxy user: cannot open postgresql://{shared_postgres.user}:***@"
    )
    assert "password authentication failed" in result.error_line
    assert "not-the-password-42" not in result.err


def test_password_is_asked_twice(tmp_path: Path) -> None:
    db = ["--database", str(tmp_path / "prompt.db")]
    mismatch = camproxy(
        tmp_path, "user", "add", "alice", *db, stdin="password1\npassword2\n", detached=True
    )
    assert mismatch.code == 1
    assert mismatch.err.splitlines()[-1] == "camproxy user: the passwords do not match"

    matched = camproxy(
        tmp_path, "user", "add", "alice", *db, stdin="password1\npassword1\n", detached=True
    )
    assert (matched.code, matched.out) == (0, "created user 'alice'\n")


def test_a_database_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database " * 500)
    result = camproxy(tmp_path, "user", "list", "--database", str(garbage))
    assert (result.code, result.out) == (1, "")
    assert result.error_line == f"camproxy user: cannot open {garbage}: file is not a database"
