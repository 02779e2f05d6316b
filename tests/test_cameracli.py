"""``camproxy camera ...`` run as a real process, on SQLite and PostgreSQL (CONTRACT §6)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.task import Clock

from camproxy.accounts.access import Level
from camproxy.accounts.cameras import CameraStore
from camproxy.accounts.passwords import FastHasher
from camproxy.accounts.tokens import TokenStore
from camproxy.accounts.users import UserStore
from tests import stores
from tests.clirun import Result, camproxy

shared_postgres = stores.shared_postgres
database_url = stores.database_url


@attrs.frozen
class Shell:
    """The database a daemon would hold, and the shell commands on it."""

    cwd: Path
    url: str
    users: UserStore
    cameras: CameraStore
    tokens: TokenStore

    def camera(self, *args: str) -> Result:
        return camproxy(self.cwd, "camera", *args, "--database", self.url)

    def token(self, *args: str) -> Result:
        return camproxy(self.cwd, "token", *args, "--database", self.url)


@pytest_twisted.async_yield_fixture
async def shell(reactor: Any, tmp_path: Path, database_url: str) -> AsyncIterator[Shell]:
    db = stores.open_database(reactor, database_url)
    clock = Clock()
    users = UserStore(db, FastHasher(), clock)
    await users.add("alice", "password1")
    await users.add("carol", "password1")
    yield Shell(tmp_path, database_url, users, CameraStore(db, clock), TokenStore(db, clock))
    db.close()


def ok(result: Result) -> str:
    assert (result.code, result.err) == (0, ""), result
    return result.out


@pytest_twisted.ensureDeferred
async def test_add_list_set_remove(shell: Shell) -> None:
    assert "no cameras yet" in ok(shell.camera("list"))
    assert "'garden'" in ok(shell.camera("add", "garden", "http://cam.lan/", "--title", "Garden"))
    ok(
        shell.camera(
            "add",
            "door",
            "ws://10.0.0.6/ws",
            "--max-fps",
            "5",
            "--idle-close",
            "0",
            "--access",
            "view",
            "--control",
            "exclusive",
        )
    )
    ok(shell.camera("add", "printer", "http://octo.lan/webcam/?action=stream", "--kind", "mjpeg"))
    listed = json.loads(ok(shell.camera("list", "--json")))
    assert [c["name"] for c in listed] == ["door", "garden", "printer"]
    door, garden, printer = listed
    assert {k: door[k] for k in ("title", "kind", "url", "access", "control")} == {
        "title": "door",
        "kind": "robocam",
        "url": "ws://10.0.0.6/ws",
        "access": "view",
        "control": "exclusive",
    }
    assert (door["max_fps"], door["idle_close"]) == (5, 0)
    assert (garden["title"], garden["kind"], garden["access"], garden["control"]) == (
        "Garden",
        "esp32",
        "control",
        "shared",
    )
    assert printer["kind"] == "mjpeg"

    ok(shell.camera("set", "door", "--title", "Front door", "--access", "control"))
    record = await shell.cameras.get("door")
    assert record is not None and record.title == "Front door" and record.access is Level.CONTROL
    # A new URL without --kind takes the kind that URL implies.
    ok(shell.camera("set", "door", "--url", "http://10.0.0.7:8080"))
    assert json.loads(ok(shell.camera("list", "--json")))[0]["kind"] == "esp32"
    # "default" hands a setting back to the daemon's option.
    ok(shell.camera("set", "door", "--max-fps", "default", "--idle-close", "DEFAULT"))
    record = await shell.cameras.get("door")
    assert record is not None and (record.max_fps, record.idle_close) == (None, None)
    assert "daemon's" in ok(shell.camera("list"))
    assert "removed" in ok(shell.camera("remove", "printer"))
    assert [c.name for c in await shell.cameras.list()] == ["door", "garden"]


@pytest_twisted.ensureDeferred
async def test_passwords_in_urls_are_never_printed(shell: Shell) -> None:
    ok(shell.camera("add", "secret", "http://admin:hunter2@cam.lan/"))
    for result in (shell.camera("list"), shell.camera("list", "--json")):
        assert "hunter2" not in result.out and "admin:***@cam.lan" in result.out
    refused = shell.camera("add", "secret2", "ws://admin:hunter2@cam.lan/ws", "--kind", "jpeg")
    assert refused.code == 1 and "hunter2" not in refused.err


EDGE_NAMES = ["g", "7", "1st-floor", "cam-", "a" * 32, "9" + "-" * 31]


@pytest_twisted.ensureDeferred
async def test_names_at_the_edges_of_the_rule_are_accepted(shell: Shell) -> None:
    """1-32 of a-z, 0-9 and -, starting with a letter or digit (CONTRACT §6)."""
    for name in EDGE_NAMES:
        result = shell.camera("add", name, "http://cam.lan/")
        assert (result.code, result.err) == (0, ""), (name, result)
    listed = json.loads(ok(shell.camera("list", "--json")))
    assert sorted(c["name"] for c in listed) == sorted(EDGE_NAMES)
    assert all(c["title"] == c["name"] for c in listed)
    # The other commands take them too.
    ok(shell.camera("set", "1st-floor", "--title", "First floor"))
    ok(shell.camera("grant", "a" * 32, "carol", "view"))
    assert await shell.cameras.grants_on("a" * 32) == [("carol", Level.VIEW)]
    ok(shell.camera("remove", "g"))
    titles = {r.name: r.title for r in await shell.cameras.list()}
    assert "g" not in titles and titles["1st-floor"] == "First floor"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["add", "Garden", "http://x/"], "invalid camera name"),
        (["add", "-x", "http://x/"], None),
        (["add", "a" * 33, "http://x/"], "invalid camera name"),
        (["add", "", "http://x/"], "invalid camera name"),
        (["add", "a_b", "http://x/"], "invalid camera name"),
        (["add", "g", "ftp://x/"], "camera URL is ws(s)://"),
        (["add", "g", "ws://x/ws", "--kind", "esp32"], "needs an http(s) URL"),
        (["add", "g", "http://x/", "--max-fps", "0"], "max-fps must be between"),
        (["set", "nowhere", "--title", "x"], "no camera named 'nowhere'"),
        (["remove", "nowhere"], "no camera named 'nowhere'"),
        (["grant", "nowhere", "alice", "view"], "no camera named 'nowhere'"),
        (["grant", "garden", "nobody", "view"], "no user named 'nobody'"),
        (["revoke", "garden", "nobody"], "no user named 'nobody'"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_refusals_are_one_line_and_exit_1(
    shell: Shell, args: list[str], fragment: str | None
) -> None:
    ok(shell.camera("add", "garden", "http://cam.lan/"))
    result = shell.camera(*args)
    if fragment is None:  # looks like an option: a usage error
        assert result.code == 2
        return
    assert result.code == 1, result
    assert fragment in result.error_line


@pytest.mark.parametrize(
    "args",
    [
        ["add", "g", "http://x/", "--kind", "webcam"],
        ["add", "g", "http://x/", "--access", "admin"],
        ["add", "g", "http://x/", "--control", "mine"],
        ["add", "g", "http://x/", "--max-fps", "fast"],
        ["add", "g", "http://x/", "--max-fps", "default"],  # nothing to go back to
        ["set", "g", "--idle-close", "soon"],
        ["grant", "garden", "alice", "all"],
        ["frobnicate"],
    ],
)
@pytest_twisted.ensureDeferred
async def test_values_outside_the_lists_are_usage_errors(shell: Shell, args: list[str]) -> None:
    assert shell.camera(*args).code == 2


@pytest_twisted.ensureDeferred
async def test_a_duplicate_is_refused(shell: Shell) -> None:
    ok(shell.camera("add", "garden", "http://cam.lan/"))
    duplicate = shell.camera("add", "garden", "http://other.lan/")
    assert duplicate.code == 1 and "exists already" in duplicate.error_line


@pytest_twisted.ensureDeferred
async def test_grant_and_revoke(shell: Shell) -> None:
    ok(shell.camera("add", "garden", "http://cam.lan/", "--access", "none"))
    assert "'carol' has view access" in ok(shell.camera("grant", "garden", "CAROL", "view"))
    ok(shell.camera("grant", "garden", "alice", "control"))
    grants = await shell.cameras.grants_on("garden")
    assert grants == [("alice", Level.CONTROL), ("carol", Level.VIEW)]
    listed = json.loads(ok(shell.camera("list", "--json")))
    assert listed[0]["grants"] == {"alice": "control", "carol": "view"}
    ok(shell.camera("revoke", "garden", "carol"))
    assert await shell.cameras.grants_on("garden") == [("alice", Level.CONTROL)]
    # Removing the camera takes its grants along.
    ok(shell.camera("remove", "garden"))
    assert await shell.cameras.all_grants() == {}


@pytest_twisted.ensureDeferred
async def test_tokens_limited_to_cameras(shell: Shell) -> None:
    ok(shell.camera("add", "garden", "http://cam.lan/"))
    ok(shell.camera("add", "door", "ws://door.lan/ws"))
    added = shell.token("add", "alice", "ha", "--camera", "garden", "--camera", "door")
    assert added.code == 0 and "cameras door, garden" in added.out
    secret = added.out.splitlines()[-1]
    grant = await shell.tokens.authenticate(secret)
    assert grant is not None
    assert await shell.cameras.token_cameras([grant.token_id]) == {
        grant.token_id: frozenset({"garden", "door"})
    }
    assert "door,garden" in ok(shell.token("list"))
    unknown = shell.token("add", "alice", "x", "--camera", "nowhere")
    assert unknown.code == 1 and "no camera named 'nowhere'" in unknown.error_line


@pytest_twisted.ensureDeferred
async def test_every_change_moves_the_change_counter(shell: Shell) -> None:
    seen = [await shell.cameras.version()]
    for args in (
        ["add", "garden", "http://cam.lan/"],
        ["set", "garden", "--title", "G"],
        ["grant", "garden", "alice", "view"],
        ["revoke", "garden", "alice"],
        ["remove", "garden"],
    ):
        ok(shell.camera(*args))
        seen.append(await shell.cameras.version())
    assert seen == sorted(set(seen))
