"""camproxy.sessions: create, look up, expire, end; what is stored; surviving a restart."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import pytest_twisted
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from twisted.internet.task import Clock

from camproxy.accounts.database import Database
from camproxy.accounts.passwords import FastHasher
from camproxy.accounts.sessions import Session, SessionStore
from camproxy.accounts.tables import users as users_table
from camproxy.accounts.users import UnknownUser, User, UserStore
from tests import stores

shared_postgres = stores.shared_postgres
database_url = stores.database_url

LIFETIME = 3600.0
START = 1_700_000_000.0


@attrs.frozen
class World:
    db: Database
    clock: Clock
    users: UserStore
    sessions: SessionStore
    alice: User


@pytest_twisted.async_yield_fixture
async def world(reactor: Any, database_url: str) -> AsyncIterator[World]:
    db = stores.open_database(reactor, database_url)
    clock = Clock()
    clock.advance(START)
    users = UserStore(db, FastHasher(), clock)
    alice = await users.add("alice", "password1")
    yield World(db, clock, users, SessionStore(db, clock, lifetime=LIFETIME), alice)
    db.close()


def stored_rows(db: Database) -> list[sa.Row[Any]]:
    return stores.raw_rows(db, "sessions")


@pytest_twisted.ensureDeferred
async def test_create_and_lookup(world: World) -> None:
    session_id = await world.sessions.create(world.alice.id)
    assert len(session_id) >= 43
    session = await world.sessions.lookup(session_id)
    assert session == Session(
        id=session_id,
        user_id=world.alice.id,
        created_at=START,
        expires_at=START + LIFETIME,
        username="alice",
        is_admin=False,
        can_control=True,
        active=True,
    )
    assert session.may_control
    assert await world.sessions.create(world.alice.id) != session_id


@pytest_twisted.ensureDeferred
async def test_only_a_hash_of_the_id_is_stored(world: World) -> None:
    session_id = await world.sessions.create(world.alice.id)
    (row,) = stored_rows(world.db)
    assert row.id_hash == hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id not in [str(value) for value in tuple(row)]


@pytest.mark.parametrize("session_id", ["", "unknown", "x" * 43, "x" * 10_000, "\udcff"])
@pytest_twisted.ensureDeferred
async def test_unknown_ids_find_nothing_and_create_nothing(world: World, session_id: str) -> None:
    assert await world.sessions.lookup(session_id) is None
    assert await world.sessions.alive([session_id]) == set()
    assert await world.sessions.end(session_id) is False
    assert stored_rows(world.db) == []


@pytest_twisted.ensureDeferred
async def test_sessions_expire(world: World) -> None:
    session_id = await world.sessions.create(world.alice.id)
    world.clock.advance(LIFETIME - 1)
    assert await world.sessions.lookup(session_id) is not None
    assert await world.sessions.alive([session_id]) == {session_id}
    later = await world.sessions.create(world.alice.id)
    world.clock.advance(1)
    assert await world.sessions.lookup(session_id) is None
    assert await world.sessions.alive([session_id, later]) == {later}

    assert await world.sessions.purge_expired() == 1
    assert len(stored_rows(world.db)) == 1
    assert await world.sessions.purge_expired() == 0


@pytest_twisted.ensureDeferred
async def test_end(world: World) -> None:
    first = await world.sessions.create(world.alice.id)
    second = await world.sessions.create(world.alice.id)
    assert await world.sessions.end(first) is True
    assert await world.sessions.end(first) is False
    assert await world.sessions.lookup(first) is None
    assert await world.sessions.lookup(second) is not None


@pytest_twisted.ensureDeferred
async def test_end_all_for_user(world: World) -> None:
    bob = await world.users.add("bob", "password1")
    alices = [await world.sessions.create(world.alice.id) for _ in range(3)]
    bobs = await world.sessions.create(bob.id)
    assert await world.sessions.end_all_for_user(world.alice.id) == 3
    assert await world.sessions.alive([*alices, bobs]) == {bobs}
    assert await world.sessions.end_all_for_user(world.alice.id) == 0


@pytest_twisted.ensureDeferred
async def test_alive_many(world: World) -> None:
    valid = {await world.sessions.create(world.alice.id) for _ in range(5)}
    ended = await world.sessions.create(world.alice.id)
    await world.sessions.end(ended)
    unknown = {f"unknown-{n}" for n in range(1200)}
    assert await world.sessions.alive([*valid, ended, *unknown, *valid]) == valid
    assert await world.sessions.alive([]) == set()


@pytest_twisted.ensureDeferred
async def test_lookup_follows_the_user(world: World) -> None:
    session_id = await world.sessions.create(world.alice.id)
    await world.users.add("root", "password1", admin=True)
    await world.users.set_admin("alice", True)
    await world.users.set_can_control("alice", False)
    session = await world.sessions.lookup(session_id)
    assert session is not None and session.is_admin and not session.can_control
    assert session.may_control


@pytest_twisted.ensureDeferred
async def test_inactive_or_unknown_users_get_no_session(world: World) -> None:
    with pytest.raises(UnknownUser):
        await world.sessions.create("no-such-id")
    await world.users.set_active("alice", False)
    with pytest.raises(UnknownUser):
        await world.sessions.create(world.alice.id)
    assert stored_rows(world.db) == []


@pytest_twisted.ensureDeferred
async def test_inactive_user_sessions_are_invalid(world: World) -> None:
    session_id = await world.sessions.create(world.alice.id)

    def deactivate_only(connection: Connection) -> None:
        # As an older CamProxy or a hand edit might: the sessions rows stay.
        connection.execute(sa.update(users_table).values(active=False))

    await world.db.write(deactivate_only)
    assert len(stored_rows(world.db)) == 1
    assert await world.sessions.lookup(session_id) is None
    assert await world.sessions.alive([session_id]) == set()


def test_lifetime_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        SessionStore(None, Clock(), lifetime=0)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_sessions_survive_reopening(reactor: Any, database_url: str) -> None:
    clock = Clock()
    db = stores.open_database(reactor, database_url)
    try:
        alice = await UserStore(db, FastHasher(), clock).add("alice", "password1")
        session_id = await SessionStore(db, clock).create(alice.id)
    finally:
        db.close()

    clock.advance(60)
    db = stores.open_database(reactor, database_url)
    try:
        session = await SessionStore(db, clock).lookup(session_id)
        assert session is not None and session.user_id == alice.id
    finally:
        db.close()
