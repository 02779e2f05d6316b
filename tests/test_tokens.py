"""camproxy.tokens: create, authenticate, scopes, revoke; what is stored; schema upgrade."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from twisted.internet.task import Clock

from camproxy.accounts.database import Database
from camproxy.accounts.passwords import FastHasher
from camproxy.accounts.sessions import SessionStore
from camproxy.accounts.tables import sessions, users
from camproxy.accounts.tokens import (
    PREFIX_CHARS,
    ApiToken,
    InvalidTokenName,
    InvalidTokenScope,
    TokenError,
    TokenExists,
    TokenGrant,
    TokenStore,
    UnknownToken,
    check_token_name,
)
from camproxy.accounts.users import AccountError, UnknownUser, User, UserStore
from tests import stores
from tests.legacy_schema import create_camproxy_database

shared_postgres = stores.shared_postgres
database_url = stores.database_url

START = 1_700_000_000.0


@attrs.frozen
class World:
    db: Database
    clock: Clock
    users: UserStore
    tokens: TokenStore
    root: User
    alice: User


@pytest_twisted.async_yield_fixture
async def world(reactor: Any, database_url: str) -> AsyncIterator[World]:
    db = stores.open_database(reactor, database_url)
    clock = Clock()
    clock.advance(START)
    users = UserStore(db, FastHasher(), clock)
    root = await users.add("root", "password1", admin=True)
    alice = await users.add("alice", "password1")
    yield World(db, clock, users, TokenStore(db, clock), root, alice)
    db.close()
    assert clock.getDelayedCalls() == []


def stored_rows(db: Database) -> list[sa.Row[Any]]:
    return stores.raw_rows(db, "api_tokens")


def file_bytes(db_path: str) -> bytes:
    """The database as it lies on disk: the main file, the WAL and the shared memory."""
    found = b""
    for suffix in ("", "-wal", "-shm"):
        part = Path(db_path + suffix)
        if part.exists():
            found += part.read_bytes()
    return found


@pytest_twisted.ensureDeferred
async def test_create_and_authenticate(world: World) -> None:
    token, secret = await world.tokens.create("ALICE", "home assistant")
    assert secret.startswith("cpx_") and len(secret) == 4 + 43
    assert token == ApiToken(
        id=token.id,
        user_id=world.alice.id,
        username="alice",
        name="home assistant",
        scope="view",
        prefix=secret[:PREFIX_CHARS],
        created_at=START,
        last_used_at=None,
    )
    grant = await world.tokens.authenticate(secret)
    assert grant == TokenGrant(
        token_id=token.id,
        token_name="home assistant",
        scope="view",
        user_id=world.alice.id,
        username="alice",
        is_admin=False,
        can_control=True,
    )
    assert not grant.may_control
    _, other = await world.tokens.create("alice", "other")
    assert other != secret


@pytest.mark.parametrize(
    ("scope", "admin", "can_control", "may_control"),
    [
        ("view", False, True, False),
        ("view", True, True, False),
        ("control", False, True, True),
        ("control", False, False, False),
        ("control", True, False, True),
    ],
)
@pytest_twisted.ensureDeferred
async def test_may_control(
    world: World, scope: str, admin: bool, can_control: bool, may_control: bool
) -> None:
    await world.users.add("bob", "password1", admin=admin, can_control=can_control)
    _, secret = await world.tokens.create("bob", "script", scope)
    grant = await world.tokens.authenticate(secret)
    assert grant is not None
    assert (grant.scope, grant.is_admin, grant.can_control) == (scope, admin, can_control)
    assert grant.may_control is may_control


@pytest_twisted.ensureDeferred
async def test_grant_follows_the_user(world: World) -> None:
    _, secret = await world.tokens.create("alice", "script", "control")
    await world.users.set_can_control("alice", False)
    grant = await world.tokens.authenticate(secret)
    assert grant is not None and not grant.may_control
    await world.users.set_admin("alice", True)
    grant = await world.tokens.authenticate(secret)
    assert grant is not None and grant.is_admin and grant.may_control


@pytest_twisted.ensureDeferred
async def test_only_a_hash_of_the_token_is_stored(world: World) -> None:
    _, secret = await world.tokens.create("alice", "ha")
    await world.tokens.authenticate(secret)
    (row,) = stored_rows(world.db)
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert row.prefix == secret[:PREFIX_CHARS]
    assert secret not in [str(value) for value in tuple(row)]
    if not world.db.location.is_sqlite:
        return
    on_disk = file_bytes(world.db.path)
    assert row.token_hash.encode() in on_disk
    assert secret.encode() not in on_disk
    assert secret[PREFIX_CHARS:].encode() not in on_disk


@pytest.mark.parametrize(
    "secret", ["", "unknown", "cpx_", "cpx_" + "x" * 43, "cpx_" + "x" * 10_000, "cpx_\udcff"]
)
@pytest_twisted.ensureDeferred
async def test_unknown_tokens_are_refused(world: World, secret: str) -> None:
    await world.tokens.create("alice", "ha")
    assert await world.tokens.authenticate(secret) is None
    assert len(stored_rows(world.db)) == 1


@pytest_twisted.ensureDeferred
async def test_a_session_id_is_not_a_token(world: World) -> None:
    session_id = await SessionStore(world.db, world.clock).create(world.alice.id)
    assert await world.tokens.authenticate(session_id) is None
    assert await world.tokens.authenticate("cpx_" + session_id) is None


@pytest_twisted.ensureDeferred
async def test_revoke(world: World) -> None:
    first, first_secret = await world.tokens.create("alice", "First")
    _, second_secret = await world.tokens.create("alice", "second")
    await world.tokens.revoke("Alice", "FIRST")
    assert await world.tokens.authenticate(first_secret) is None
    assert await world.tokens.authenticate(second_secret) is not None
    assert [t.name for t in await world.tokens.list("alice")] == ["second"]

    with pytest.raises(UnknownToken, match="'alice' has no token named 'First'"):
        await world.tokens.revoke("alice", "First")
    with pytest.raises(UnknownUser):
        await world.tokens.revoke("nobody", "second")

    # The name is free again; the new token is a different one.
    again, again_secret = await world.tokens.create("alice", "first")
    assert again.id != first.id and again_secret != first_secret
    assert await world.tokens.authenticate(first_secret) is None


@pytest_twisted.ensureDeferred
async def test_revoke_by_id_and_get(world: World) -> None:
    token, secret = await world.tokens.create("alice", "ha")
    assert await world.tokens.get(token.id) == token
    assert await world.tokens.revoke_by_id(token.id) is True
    assert await world.tokens.revoke_by_id(token.id) is False
    assert await world.tokens.get(token.id) is None
    assert await world.tokens.authenticate(secret) is None


@pytest_twisted.ensureDeferred
async def test_disabled_user_tokens_stop_working(world: World) -> None:
    token, secret = await world.tokens.create("alice", "ha")
    await world.users.set_active("alice", False)
    assert await world.tokens.authenticate(secret) is None
    assert await world.tokens.alive([token.id]) == set()
    # Kept, and working again once the user is enabled.
    assert len(stored_rows(world.db)) == 1
    await world.users.set_active("alice", True)
    assert await world.tokens.authenticate(secret) is not None
    assert await world.tokens.alive([token.id]) == {token.id}


@pytest_twisted.ensureDeferred
async def test_deleted_user_tokens_are_deleted(world: World) -> None:
    _, secret = await world.tokens.create("alice", "ha")
    _, roots = await world.tokens.create("root", "ha")
    await world.users.delete("alice")
    assert await world.tokens.authenticate(secret) is None
    assert [row.user_id for row in stored_rows(world.db)] == [world.root.id]
    assert await world.tokens.authenticate(roots) is not None


@pytest_twisted.ensureDeferred
async def test_a_new_password_keeps_the_tokens(world: World) -> None:
    _, secret = await world.tokens.create("alice", "ha")
    await world.users.set_password("alice", "another password")
    assert await world.tokens.authenticate(secret) is not None


@pytest_twisted.ensureDeferred
async def test_last_used_is_written_at_most_once_a_minute(world: World) -> None:
    token, secret = await world.tokens.create("alice", "ha")
    writes: list[str] = []

    def count(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("UPDATE api_tokens"):
            writes.append(statement)

    event.listen(world.db.engine, "before_cursor_execute", count)

    world.clock.advance(5)
    await world.tokens.authenticate(secret)
    assert (await world.tokens.get(token.id)) == attrs.evolve(token, last_used_at=START + 5)
    assert len(writes) == 1

    world.clock.advance(59)
    for _ in range(5):
        assert await world.tokens.authenticate(secret) is not None
    listed = await world.tokens.get(token.id)
    assert listed is not None and listed.last_used_at == START + 5
    assert len(writes) == 1

    world.clock.advance(1)
    await world.tokens.authenticate(secret)
    listed = await world.tokens.get(token.id)
    assert listed is not None and listed.last_used_at == START + 65
    assert len(writes) == 2

    # Failed attempts record nothing.
    world.clock.advance(3600)
    await world.users.set_active("alice", False)
    await world.tokens.authenticate(secret)
    assert len(writes) == 2
    event.remove(world.db.engine, "before_cursor_execute", count)


@pytest_twisted.ensureDeferred
async def test_duplicate_names(world: World) -> None:
    await world.tokens.create("alice", "Home Assistant")
    with pytest.raises(TokenExists, match="'alice' has a token named 'Home Assistant' already"):
        await world.tokens.create("alice", "home assistant", "control")
    # Another user may use the same name.
    await world.tokens.create("root", "home assistant")
    assert len(stored_rows(world.db)) == 2


@pytest_twisted.ensureDeferred
async def test_refusals(world: World) -> None:
    with pytest.raises(UnknownUser, match="no user named 'nobody'"):
        await world.tokens.create("nobody", "ha")
    with pytest.raises(InvalidTokenScope):
        await world.tokens.create("alice", "ha", "admin")
    with pytest.raises(InvalidTokenName):
        await world.tokens.create("alice", "")
    assert stored_rows(world.db) == []
    assert issubclass(InvalidTokenName, ValueError) and issubclass(InvalidTokenScope, ValueError)
    assert issubclass(TokenError, AccountError)


@pytest.mark.parametrize(
    "name", ["ha", "Home Assistant", "a", "x" * 50, "cam-1.backup_2@home", "9", "trailing-"]
)
def test_valid_names(name: str) -> None:
    check_token_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "x" * 51, "-option", " leading", "trailing ", "tab\there", "new\nline", "ünï", "a/b"],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidTokenName, match="invalid token name"):
        check_token_name(name)


@pytest_twisted.ensureDeferred
async def test_list(world: World) -> None:
    assert await world.tokens.list() == []
    await world.users.add("Bob", "password1")
    b = (await world.tokens.create("bob", "zeta"))[0]
    a2 = (await world.tokens.create("alice", "Beta", "control"))[0]
    a1 = (await world.tokens.create("alice", "alpha"))[0]
    r = (await world.tokens.create("root", "admin script"))[0]
    assert await world.tokens.list() == [a1, a2, b, r]
    assert await world.tokens.list("ALICE") == [a1, a2]
    assert await world.tokens.list("bob") == [b]
    assert [t.username for t in await world.tokens.list("bob")] == ["Bob"]
    await world.users.add("carol", "password1")
    assert await world.tokens.list("carol") == []
    with pytest.raises(UnknownUser):
        await world.tokens.list("nobody")


@pytest_twisted.ensureDeferred
async def test_alive(world: World) -> None:
    kept = {(await world.tokens.create("alice", f"t{n}"))[0].id for n in range(3)}
    revoked, _ = await world.tokens.create("alice", "revoked")
    await world.tokens.revoke_by_id(revoked.id)
    unknown = {f"unknown-{n}" for n in range(1200)}
    assert await world.tokens.alive([*kept, revoked.id, *unknown, *kept]) == kept
    assert await world.tokens.alive([]) == set()


@pytest_twisted.ensureDeferred
async def test_tokens_survive_reopening(reactor: Any, database_url: str) -> None:
    clock = Clock()
    db = stores.open_database(reactor, database_url)
    try:
        await UserStore(db, FastHasher(), clock).add("alice", "password1")
        token, secret = await TokenStore(db, clock).create("alice", "ha")
    finally:
        db.close()

    db = stores.open_database(reactor, database_url)
    try:
        grant = await TokenStore(db, clock).authenticate(secret)
        assert grant is not None and grant.token_id == token.id
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_upgrade_from_version_2(reactor: Any, tmp_path: Path) -> None:
    """A database from before tokens keeps its users and sessions and gains tokens."""
    path = tmp_path / "v2.db"
    create_camproxy_database(
        path,
        2,
        [
            "INSERT INTO users (id, username, password_hash, is_admin, created_at, updated_at)"
            " VALUES ('u1', 'alice', 'x', 1, 1.0, 1.0)",
            "INSERT INTO sessions VALUES ('h1', 'u1', 1.0, 9e9)",
        ],
    )

    clock = Clock()
    db = stores.open_database(reactor, str(path))
    try:
        assert await db.schema_version() == 4
        user = await UserStore(db, FastHasher(), clock).get("alice")
        assert user is not None and user.id == "u1" and user.is_admin

        def hashes(connection: Connection) -> list[str]:
            return list(connection.scalars(sa.select(sessions.c.id_hash)))

        assert await db.read(hashes) == ["h1"]
        tokens = TokenStore(db, clock)
        _, secret = await tokens.create("alice", "ha", "control")
        grant = await tokens.authenticate(secret)
        assert grant is not None and grant.user_id == "u1" and grant.may_control
    finally:
        db.close()

    # The cascade holds in the upgraded file too.
    db = stores.open_database(reactor, str(path))
    try:
        await db.write(lambda connection: connection.execute(sa.delete(users)))
        assert stored_rows(db) == []
    finally:
        db.close()
