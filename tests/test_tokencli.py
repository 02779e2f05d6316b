"""``camproxy token ...`` (camproxy.tokencli) run as a real process, as an admin would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.task import Clock

from camproxy import cli
from camproxy.accounts.passwords import FastHasher
from camproxy.accounts.tokens import PREFIX_CHARS, TokenStore
from camproxy.accounts.users import UserStore
from tests import stores
from tests.clirun import Result, camproxy

shared_postgres = stores.shared_postgres
database_url = stores.database_url


def printed_token(result: Result) -> str:
    """The token ``token add`` printed: alone, on the last line."""
    assert result.code == 0, result.err
    assert result.out.endswith("\n")
    last = result.out.splitlines()[-1]
    assert last == last.strip() and last.startswith("cpx_")
    return last


@attrs.frozen
class Daemon:
    """The database as a running daemon holds it, with users made at test speed."""

    cwd: Path
    url: str
    users: UserStore
    tokens: TokenStore

    def token(self, *args: str) -> Result:
        return camproxy(self.cwd, "token", *args, "--database", self.url)


@pytest_twisted.async_yield_fixture
async def daemon(reactor: Any, tmp_path: Path, database_url: str) -> AsyncIterator[Daemon]:
    db = stores.open_database(reactor, database_url)
    clock = Clock()
    users = UserStore(db, FastHasher(), clock)
    await users.add("root", "password1", admin=True)
    await users.add("alice", "password1")
    yield Daemon(tmp_path, database_url, users, TokenStore(db, clock))
    db.close()


@pytest_twisted.ensureDeferred
async def test_add_prints_the_token_last(daemon: Daemon) -> None:
    added = daemon.token("add", "Alice", "Home Assistant")
    secret = printed_token(added)
    assert added.err == ""
    assert added.out.splitlines()[:-1] == [
        "Token 'Home Assistant' for 'alice' (view).",
        "Copy it now; it is not shown again:",
    ]
    grant = await daemon.tokens.authenticate(secret)
    assert grant is not None and grant.username == "alice" and grant.scope == "view"

    control = daemon.token("add", "alice", "script", "--scope", "control")
    grant = await daemon.tokens.authenticate(printed_token(control))
    assert grant is not None and grant.scope == "control" and grant.may_control
    assert printed_token(control) != secret


@pytest_twisted.ensureDeferred
async def test_add_tells_why_a_token_will_not_work_yet(daemon: Daemon) -> None:
    await daemon.users.set_can_control("alice", False)
    await daemon.users.set_active("alice", False)
    added = daemon.token("add", "alice", "script", "--scope", "control")
    assert added.out.splitlines()[1:-2] == [
        "'alice' is disabled: the token works once the user is enabled.",
        "'alice' may not control the camera: the token only views until allowed "
        "(camproxy user control alice).",
    ]
    assert await daemon.tokens.authenticate(printed_token(added)) is None


@pytest_twisted.ensureDeferred
async def test_list_never_shows_tokens(daemon: Daemon) -> None:
    empty = daemon.token("list")
    assert (empty.code, empty.err) == (0, "")
    assert empty.out == "no tokens; create one with: camproxy token add USER NAME\n"

    alices = printed_token(daemon.token("add", "alice", "ha"))
    roots = printed_token(daemon.token("add", "root", "backup script", "--scope", "control"))
    await daemon.tokens.authenticate(roots)

    listed = daemon.token("list")
    assert (listed.code, listed.err) == (0, "")
    lines = listed.out.splitlines()
    assert lines[0].split() == [
        "USER",
        "NAME",
        "SCOPE",
        "CAMERAS",
        "PREFIX",
        "CREATED",
        "LAST",
        "USED",
    ]
    assert lines[1].split()[:5] == ["alice", "ha", "view", "all", alices[:PREFIX_CHARS] + "..."]
    assert lines[1].endswith("never")
    assert lines[2].split()[:6] == [
        "root",
        "backup",
        "script",
        "control",
        "all",
        roots[:PREFIX_CHARS] + "...",
    ]
    assert not lines[2].endswith("never")
    assert len(lines) == 3
    for secret in (alices, roots):
        assert secret not in listed.out
        assert secret[PREFIX_CHARS:] not in listed.out

    mine = daemon.token("list", "ALICE")
    assert mine.code == 0
    assert [line.split()[0] for line in mine.out.splitlines()] == ["USER", "alice"]

    none = daemon.token("list", "nobody")
    assert none.code == 1
    assert none.out == ""
    assert none.error_line == "camproxy token: no user named 'nobody'"


@pytest_twisted.ensureDeferred
async def test_revoke(daemon: Daemon) -> None:
    secret = printed_token(daemon.token("add", "alice", "ha"))
    revoked = daemon.token("revoke", "alice", "HA")
    assert (revoked.code, revoked.out, revoked.err) == (
        0,
        "revoked the token 'HA' of 'alice'\n",
        "",
    )
    assert await daemon.tokens.authenticate(secret) is None
    assert await daemon.tokens.list() == []

    again = daemon.token("revoke", "alice", "ha")
    assert again.code == 1
    assert again.error_line == "camproxy token: 'alice' has no token named 'ha'"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "nobody", "ha"], "no user named 'nobody'"),
        (["add", "alice", "-"], "invalid token name"),
        (["add", "alice", "bad/name"], "invalid token name"),
        (["revoke", "nobody", "ha"], "no user named 'nobody'"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_refusals_exit_1_with_one_line(daemon: Daemon, args: list[str], message: str) -> None:
    result = daemon.token(*args)
    assert result.code == 1
    assert message in result.error_line
    assert result.out == ""
    assert await daemon.tokens.list() == []


@pytest_twisted.ensureDeferred
async def test_duplicate_name_exits_1(daemon: Daemon) -> None:
    first = printed_token(daemon.token("add", "alice", "ha"))
    again = daemon.token("add", "alice", "HA")
    assert again.code == 1
    assert again.out == ""
    assert again.error_line == "camproxy token: 'alice' has a token named 'ha' already"
    assert [t.name for t in await daemon.tokens.list()] == ["ha"]
    assert await daemon.tokens.authenticate(first) is not None


def test_usage_error_exits_2_and_touches_nothing(tmp_path: Path) -> None:
    result = camproxy(tmp_path, "token", "add", "alice", "ha", "--scope", "admin")
    assert result.code == 2
    assert "usage:" in result.err
    assert result.out == ""
    assert not (tmp_path / "robocam.db").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["token"],
        ["token", "add"],
        ["token", "add", "alice"],
        ["token", "add", "alice", "ha", "--scope"],
        ["token", "add", "alice", "ha", "--scope", "admin"],
        ["token", "list", "alice", "extra"],
        ["token", "revoke", "alice"],
        ["token", "frobnicate"],
    ],
)
def test_usage_errors(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(list(argv))
    assert stop.value.code == 2
    assert "usage: camproxy" in capsys.readouterr().err


def test_database_is_found_as_the_daemon_finds_it(tmp_path: Path) -> None:
    assert camproxy(tmp_path, "token", "list").code == 0
    assert (tmp_path / "robocam.db").exists()

    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///from-dotenv.db\n")
    assert camproxy(tmp_path, "token", "list").code == 0
    assert (tmp_path / "from-dotenv.db").exists()

    bad = camproxy(tmp_path, "token", "list", env={"DATABASE_URL": "mysql://db/camproxy"})
    assert bad.code == 1
    assert "DATABASE_URL" in bad.error_line

    option_first = camproxy(tmp_path, "token", "--database", "first.db", "list")
    assert option_first.code == 0
    assert (tmp_path / "first.db").exists()
