"""camproxy.accounts and camproxy.passwords: users, login, the guards and the rules."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import pytest_twisted
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from camproxy.accounts.database import Database
from camproxy.accounts.engine import make_engine, transaction
from camproxy.accounts.passwords import (
    BadPassword,
    BcryptHasher,
    FastHasher,
    IPasswordHasher,
    check_new_password,
)
from camproxy.accounts.sessions import SessionStore
from camproxy.accounts.tables import sessions, users
from camproxy.accounts.users import (
    InvalidUsername,
    LastAdmin,
    UnknownUser,
    User,
    UserExists,
    UserStore,
    check_username,
)
from tests import stores

shared_postgres = stores.shared_postgres
database_url = stores.database_url

PASSWORD = "password1"


@implementer(IPasswordHasher)
@attrs.define
class RecordingHasher:
    """A FastHasher that remembers what it was asked to verify.

    While ``hold`` is set, ``verify`` answers only once it fires.
    """

    inner: FastHasher = attrs.field(factory=FastHasher)
    verified: list[tuple[str, str]] = attrs.field(factory=list)
    hold: Deferred[None] | None = None

    def hash(self, password: str) -> Deferred[str]:
        return self.inner.hash(password)

    def hash_now(self, password: str) -> str:
        return self.inner.hash_now(password)

    def verify(self, password: str, hashed: str) -> Deferred[bool]:
        self.verified.append((password, hashed))
        return Deferred.fromCoroutine(self._verify(password, hashed))

    async def _verify(self, password: str, hashed: str) -> bool:
        matches = await self.inner.verify(password, hashed)
        if self.hold is not None:
            await self.hold
        return matches


@attrs.frozen
class World:
    db: Database
    clock: Clock
    hasher: RecordingHasher
    users: UserStore
    sessions: SessionStore


@pytest.fixture
def world(reactor: Any, database_url: str) -> Iterator[World]:
    db = stores.open_database(reactor, database_url)
    clock = Clock()
    clock.advance(1_700_000_000)
    hasher = RecordingHasher()
    yield World(db, clock, hasher, UserStore(db, hasher, clock), SessionStore(db, clock))
    db.close()


async def session_count(db: Database, user_id: str) -> int:
    query = sa.select(sa.func.count()).select_from(sessions).where(sessions.c.user_id == user_id)
    return await db.read(lambda connection: int(connection.execute(query).scalar_one()))


# Passwords ----------------------------------------------------------------------------


def test_hashers_provide_the_interface(reactor: Any) -> None:
    assert verifyObject(IPasswordHasher, BcryptHasher(reactor, rounds=4))
    assert verifyObject(IPasswordHasher, FastHasher())


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("", "must not be empty"),
        ("x" * 73, "at most 72 bytes"),
        ("é" * 37, "at most 72 bytes"),
        ("\udcff" * 8, "not valid Unicode"),
    ],
)
def test_new_password_rules(password: str, problem: str) -> None:
    with pytest.raises(BadPassword, match=problem):
        check_new_password(password)


def test_new_password_limits_are_inclusive() -> None:
    check_new_password("x")
    check_new_password("x" * 72)
    check_new_password("é" * 36)


@pytest_twisted.ensureDeferred
async def test_bcrypt_hasher(reactor: Any) -> None:
    hasher = BcryptHasher(reactor, rounds=4)
    hashed = await hasher.hash("x" * 72)
    assert hashed.startswith("$2b$04$")
    assert await hasher.verify("x" * 72, hashed)
    assert not await hasher.verify("y" * 72, hashed)
    # Longer than bcrypt reads: no match and no exception, even though the first 72
    # bytes are right.
    assert not await hasher.verify("x" * 73, hashed)
    assert not await hasher.verify("", hashed)
    assert not await hasher.verify("x" * 72, "not a bcrypt hash")
    assert not await hasher.verify("x" * 72, "$2b$04$ünïcode")
    with pytest.raises(BadPassword):
        await hasher.hash("x" * 73)
    with pytest.raises(ValueError, match="rounds"):
        BcryptHasher(reactor, rounds=3)


@pytest_twisted.ensureDeferred
async def test_fast_hasher() -> None:
    hasher = FastHasher()
    hashed = await hasher.hash(PASSWORD)
    assert hashed != await hasher.hash(PASSWORD)
    assert await hasher.verify(PASSWORD, hashed)
    assert not await hasher.verify("password2", hashed)
    assert not await hasher.verify(PASSWORD, "$2b$04$abc")
    with pytest.raises(BadPassword):
        await hasher.hash("")


# Names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "alice", "Alice.Smith", "a_b-c", "me@example.org", "x" * 50])
def test_valid_usernames(name: str) -> None:
    check_username(name)


@pytest.mark.parametrize("name", ["", "x" * 51, "al ice", "-alice", "alice\n", "ålice", "a/b"])
def test_invalid_usernames(name: str) -> None:
    with pytest.raises(InvalidUsername):
        check_username(name)


@given(st.text(max_size=60))
def test_usernames_are_plain_ascii(name: str) -> None:
    try:
        check_username(name)
    except InvalidUsername:
        return
    assert name.isascii() and name.isprintable() and 1 <= len(name) <= 50
    assert not name.startswith("-") and " " not in name


# The store ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_and_get(world: World) -> None:
    user = await world.users.add("Alice", PASSWORD)
    assert user == User(
        id=user.id,
        username="Alice",
        is_admin=False,
        active=True,
        can_control=True,
        created_at=1_700_000_000,
        updated_at=1_700_000_000,
        last_login=None,
    )
    assert await world.users.get("alice") == user
    assert await world.users.get("ALICE") == user
    assert await world.users.get_by_id(user.id) == user
    assert await world.users.get("bob") is None
    assert await world.users.get_by_id("nope") is None


@pytest_twisted.ensureDeferred
async def test_names_are_unique_ignoring_case(world: World) -> None:
    await world.users.add("Alice", PASSWORD)
    with pytest.raises(UserExists, match="'Alice' exists already"):
        await world.users.add("alice", "other password")
    assert len(await world.users.list()) == 1


@pytest_twisted.ensureDeferred
async def test_add_checks_name_and_password(world: World) -> None:
    with pytest.raises(InvalidUsername):
        await world.users.add("no spaces", PASSWORD)
    with pytest.raises(BadPassword):
        await world.users.add("alice", "")
    with pytest.raises(BadPassword):
        await world.users.add("alice", "ü" * 40)
    assert await world.users.list() == []


@pytest_twisted.ensureDeferred
async def test_list_is_sorted_ignoring_case(world: World) -> None:
    for name in ["carol", "Bob", "alice"]:
        await world.users.add(name, PASSWORD)
    assert [u.username for u in await world.users.list()] == ["alice", "Bob", "carol"]


@pytest_twisted.ensureDeferred
async def test_authenticate(world: World) -> None:
    alice = await world.users.add("Alice", PASSWORD)
    world.clock.advance(60)
    user = await world.users.authenticate("aLiCe", PASSWORD)
    assert user is not None
    assert user.id == alice.id
    assert user.last_login == 1_700_000_060
    assert (await world.users.get("alice")) == user
    assert await world.users.authenticate("alice", "wrong password") is None
    assert await world.users.authenticate("alice", "") is None
    assert await world.users.authenticate("alice", "x" * 100) is None


@pytest_twisted.ensureDeferred
async def test_unknown_user_still_costs_a_verify(world: World) -> None:
    alice = await world.users.add("alice", PASSWORD)
    await world.users.authenticate("alice", "wrong password")
    assert len(world.hasher.verified) == 1

    assert await world.users.authenticate("mallory", PASSWORD) is None
    assert await world.users.authenticate("eve", PASSWORD) is None
    assert len(world.hasher.verified) == 3
    (_, first), (_, second) = world.hasher.verified[1:]
    assert first == second
    assert first.startswith("fake$")
    assert not await world.hasher.verify(PASSWORD, first)

    query = sa.select(users.c.password_hash).where(users.c.id == alice.id)
    assert first != await world.db.read(lambda connection: connection.scalar(query))


@pytest_twisted.ensureDeferred
async def test_inactive_user_cannot_log_in(world: World) -> None:
    await world.users.add("alice", PASSWORD)
    disabled = await world.users.set_active("alice", False)
    assert disabled.active is False
    assert await world.users.authenticate("alice", PASSWORD) is None
    assert len(world.hasher.verified) == 1
    assert (await world.users.get("alice")) == disabled
    await world.users.set_active("ALICE", True)
    assert await world.users.authenticate("alice", PASSWORD) is not None


@pytest_twisted.ensureDeferred
async def test_set_password(world: World) -> None:
    await world.users.add("alice", PASSWORD)
    world.clock.advance(5)
    changed = await world.users.set_password("Alice", "new password")
    assert changed.updated_at == 1_700_000_005
    assert await world.users.authenticate("alice", PASSWORD) is None
    assert await world.users.authenticate("alice", "new password") is not None
    with pytest.raises(BadPassword):
        await world.users.set_password("alice", "x" * 73)
    with pytest.raises(UnknownUser):
        await world.users.set_password("bob", "new password")


@pytest_twisted.ensureDeferred
async def test_login_racing_a_password_change_fails(world: World) -> None:
    await world.users.add("alice", PASSWORD)
    hold: Deferred[None] = Deferred()
    world.hasher.hold = hold
    login = world.users.authenticate("alice", PASSWORD)
    await world.users.set_password("alice", "new password")
    # The login checked the old password before the change, and answers after it.
    assert [password for password, _ in world.hasher.verified] == [PASSWORD]
    hold.callback(None)
    assert await login is None
    alice = await world.users.get("alice")
    assert alice is not None and alice.last_login is None


@pytest_twisted.ensureDeferred
async def test_roles_and_control(world: World) -> None:
    await world.users.add("root", PASSWORD, admin=True)
    viewer = await world.users.add("viewer", PASSWORD, can_control=False)
    assert not viewer.may_control
    assert (await world.users.set_can_control("viewer", True)).may_control
    promoted = await world.users.set_admin("viewer", True)
    assert promoted.is_admin
    no_control = await world.users.set_can_control("viewer", False)
    assert no_control.may_control and not no_control.can_control
    assert not (await world.users.set_admin("viewer", False)).may_control
    with pytest.raises(UnknownUser):
        await world.users.set_admin("nobody", True)
    with pytest.raises(UnknownUser):
        await world.users.set_can_control("nobody", True)
    with pytest.raises(UnknownUser):
        await world.users.set_active("nobody", True)


@pytest_twisted.ensureDeferred
async def test_last_active_admin_is_kept(world: World) -> None:
    await world.users.add("root", PASSWORD, admin=True)
    await world.users.add("alice", PASSWORD)
    assert await world.users.count_active_admins() == 1
    for attempt in (
        lambda: world.users.set_admin("ROOT", False),
        lambda: world.users.set_active("root", False),
        lambda: world.users.delete("root"),
    ):
        with pytest.raises(LastAdmin, match="last active admin"):
            await attempt()
    root = await world.users.get("root")
    assert root is not None and root.is_admin and root.active

    # A second admin frees the first, but only while that one is active.
    await world.users.set_admin("alice", True)
    await world.users.set_active("alice", False)
    assert await world.users.count_active_admins() == 1
    with pytest.raises(LastAdmin):
        await world.users.delete("root")
    await world.users.set_active("alice", True)
    await world.users.set_admin("root", False)
    with pytest.raises(LastAdmin):
        await world.users.delete("alice")
    await world.users.delete("root")
    assert [u.username for u in await world.users.list()] == ["alice"]


@pytest_twisted.ensureDeferred
async def test_ordinary_users_need_no_admin(world: World) -> None:
    await world.users.add("alice", PASSWORD)
    await world.users.set_active("alice", False)
    await world.users.delete("alice")
    assert await world.users.count_active_admins() == 0
    with pytest.raises(UnknownUser):
        await world.users.delete("alice")


@pytest_twisted.ensureDeferred
async def test_ensure_admin(world: World) -> None:
    assert world.users.ensure_admin_now("root", "first password") is True
    root = await world.users.get("root")
    assert root is not None and root.is_admin
    assert world.users.ensure_admin_now("root", "other password") is False
    assert await world.users.authenticate("root", "first password") is not None

    await world.users.add("alice", PASSWORD)
    assert world.users.ensure_admin_now("alice", "whatever1") is False
    alice = await world.users.get("alice")
    assert alice is not None and not alice.is_admin
    with pytest.raises(BadPassword):
        world.users.ensure_admin_now("bob", "")


@pytest_twisted.ensureDeferred
async def test_password_change_disable_and_delete_end_sessions(world: World) -> None:
    alice = await world.users.add("alice", PASSWORD)
    bob = await world.users.add("bob", PASSWORD)
    bobs = await world.sessions.create(bob.id)

    async def login() -> str:
        return await world.sessions.create(alice.id)

    first, second = await login(), await login()
    assert await session_count(world.db, alice.id) == 2
    await world.users.set_password("alice", "new password")
    assert await world.sessions.alive([first, second, bobs]) == {bobs}

    third = await login()
    await world.users.set_admin("alice", True)
    await world.users.set_can_control("alice", False)
    await world.users.set_active("bob", True)
    assert await world.sessions.alive([third, bobs]) == {third, bobs}

    await world.users.add("root", PASSWORD, admin=True)
    await world.users.set_active("alice", False)
    assert await session_count(world.db, alice.id) == 0
    await world.users.set_active("alice", True)
    assert await world.sessions.lookup(third) is None

    fourth = await login()
    await world.users.delete("alice")
    assert await world.sessions.lookup(fourth) is None
    assert await session_count(world.db, alice.id) == 0
    assert await world.sessions.alive([bobs]) == {bobs}


@pytest_twisted.ensureDeferred
async def test_a_write_waits_for_another_writers_lock(reactor: Any, world: World) -> None:
    """Another process's write transaction, holding the lock, demotes one admin; a demotion
    of the other one meanwhile waits, then sees it and refuses. Without the lock it would
    read the old state and leave no admin at all."""
    await world.users.add("root", PASSWORD, admin=True)
    await world.users.add("other", PASSWORD, admin=True)
    elsewhere = make_engine(world.db.location)
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with elsewhere.connect() as connection, transaction(connection, write=True):
            connection.execute(
                sa.update(users).where(users.c.username == "root").values(is_admin=False)
            )
            held.set()
            release.wait(10)

    holder = threads.deferToThread(hold_the_lock)
    await threads.deferToThread(held.wait, 10)
    demotion = world.users.set_admin("other", False)
    await task.deferLater(reactor, 0.3, lambda: None)
    assert not demotion.called, "the write went ahead of the lock"
    release.set()
    await holder
    with pytest.raises(LastAdmin):
        await demotion
    assert await world.users.count_active_admins() == 1
    elsewhere.dispose()
