"""camproxy.db: schema creation and upgrades, the Flask import, locating the file."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from camproxy.accounts.database import (
    DEFAULT_DATABASE,
    Database,
    DatabaseError,
    DatabaseInUse,
    database_path_from_url,
    locate_database,
    schema_scripts,
)
from camproxy.accounts.passwords import BcryptHasher
from camproxy.accounts.users import UserStore
from tests.legacy_db import LegacyUser, create_legacy_database

LATEST = len(schema_scripts())


@pytest_twisted.async_yield_fixture
async def db(reactor: Any, tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(reactor, str(tmp_path / "camproxy.db"))
    yield database
    database.close()


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection, to look at the file as SQLite sees it."""
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    return connection


def tables(path: Path) -> set[str]:
    connection = raw(path)
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}
    finally:
        connection.close()


def user_version(path: Path) -> int:
    connection = raw(path)
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    finally:
        connection.close()


async def open_and_close(reactor: Any, path: Path) -> None:
    database = await Database.open(reactor, str(path))
    database.close()


def test_schema_scripts_are_numbered_from_one() -> None:
    assert LATEST >= 2
    assert all(script.strip() for script in schema_scripts())


@pytest_twisted.ensureDeferred
async def test_new_database_gets_latest_schema(db: Database) -> None:
    assert await db.schema_version() == LATEST
    path = Path(db.path)
    assert {"users", "sessions"} <= tables(path)

    def pragmas(cursor: sqlite3.Cursor) -> tuple[str, int]:
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        keys = cursor.execute("PRAGMA foreign_keys").fetchone()[0]
        return mode, keys

    assert await db.read(pragmas) == ("wal", 1)


@pytest_twisted.ensureDeferred
async def test_reopening_keeps_data_and_version(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    database = await Database.open(reactor, str(path))
    try:
        first = await UserStore(database, BcryptHasher(reactor, rounds=4), Clock()).add(
            "alice", "password1"
        )
    finally:
        database.close()

    database = await Database.open(reactor, str(path))
    try:
        assert await database.schema_version() == LATEST
        again = await UserStore(database, BcryptHasher(reactor, rounds=4), Clock()).get("alice")
        assert again == first
    finally:
        database.close()


@pytest_twisted.ensureDeferred
async def test_upgrades_an_older_camproxy_database(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    connection = raw(path)
    connection.executescript(schema_scripts()[0])
    connection.execute(
        "INSERT INTO users (id, username, password_hash, created_at, updated_at)"
        " VALUES ('id-1', 'alice', 'x', 0, 0)"
    )
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()

    database = await Database.open(reactor, str(path))
    try:
        assert await database.schema_version() == LATEST
        assert await UserStore(database, BcryptHasher(reactor, rounds=4), Clock()).get("ALICE")
    finally:
        database.close()
    assert "sessions" in tables(path)


@pytest_twisted.ensureDeferred
async def test_memory_database(reactor: Any) -> None:
    database = await Database.open(reactor, ":memory:")
    try:
        assert await database.schema_version() == LATEST
    finally:
        database.close()


@pytest_twisted.ensureDeferred
async def test_write_rolls_back_on_error(db: Database) -> None:
    def insert_then_fail(cursor: sqlite3.Cursor) -> None:
        cursor.execute(
            "INSERT INTO users (id, username, password_hash, created_at, updated_at)"
            " VALUES ('id-1', 'alice', 'x', 0, 0)"
        )
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await db.write(insert_then_fail)

    def count(cursor: sqlite3.Cursor) -> int:
        return int(cursor.execute("SELECT count(*) FROM users").fetchone()[0])

    assert await db.read(count) == 0


@pytest_twisted.ensureDeferred
async def test_closed_database_fails_queries(reactor: Any) -> None:
    database = await Database.open(reactor, ":memory:")
    database.close()
    database.close()
    with pytest.raises(DatabaseError, match="closed"):
        await database.schema_version()


@pytest_twisted.ensureDeferred
async def test_refuses_a_newer_schema(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    await open_and_close(reactor, path)
    connection = raw(path)
    connection.execute(f"PRAGMA user_version = {LATEST + 1}")
    connection.close()
    with pytest.raises(DatabaseError, match="newer than this CamProxy"):
        await Database.open(reactor, str(path))


@pytest_twisted.ensureDeferred
async def test_refuses_a_foreign_database(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    connection = raw(path)
    connection.execute("CREATE TABLE recipes (name TEXT)")
    connection.close()
    with pytest.raises(DatabaseError, match="not a CamProxy database"):
        await Database.open(reactor, str(path))
    assert tables(path) == {"recipes"}


@pytest_twisted.ensureDeferred
async def test_refuses_a_file_that_is_not_sqlite(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "text.db"
    path.write_bytes(b"this is not a database, but long enough to look like one" * 20)
    with pytest.raises(sqlite3.DatabaseError):
        await Database.open(reactor, str(path))


@pytest_twisted.ensureDeferred
async def test_exclusive_open_keeps_a_second_daemon_out(reactor: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "daemon.db")
    first = await Database.open(reactor, path, exclusive=True)
    try:
        with pytest.raises(DatabaseInUse, match="in use by another CamProxy daemon"):
            await Database.open(reactor, path, exclusive=True)
        shared = await Database.open(reactor, path)
        shared.close()
    finally:
        first.close()
    again = await Database.open(reactor, path, exclusive=True)
    again.close()


# The Flask version's database -------------------------------------------------------

FLASK_USERS = [
    LegacyUser(
        "admin", "admin", is_admin=True, created_at=datetime(2025, 5, 4, 23, 42, 27, 853798)
    ),
    LegacyUser("Alice", "correct horse battery staple"),
    LegacyUser("bob", "bobspassword", active=False),
    LegacyUser("carol", "carolspassword", active=None),
]


@pytest.mark.parametrize("with_is_admin", [False, True], ids=["as-deployed", "with-is_admin"])
@pytest.mark.parametrize("with_alembic", [True, False], ids=["alembic", "create_all"])
@pytest_twisted.ensureDeferred
async def test_upgrades_a_flask_database(
    reactor: Any, tmp_path: Path, with_is_admin: bool, with_alembic: bool
) -> None:
    path = tmp_path / "sqlite.db"
    create_legacy_database(
        path, FLASK_USERS, with_is_admin=with_is_admin, with_alembic=with_alembic, rounds=4
    )
    legacy = raw(path)
    hashes = {row["id"]: row["password"] for row in legacy.execute("SELECT * FROM users")}
    legacy.close()

    database = await Database.open(reactor, str(path))
    try:
        assert await database.schema_version() == LATEST
        store = UserStore(database, BcryptHasher(reactor, rounds=4), Clock())
        users = {user.username: user for user in await store.list()}
        assert set(users) == {"admin", "Alice", "bob", "carol"}
        for old in FLASK_USERS:
            assert users[old.username].id == old.id
        assert users["admin"].is_admin is with_is_admin
        assert not users["Alice"].is_admin
        assert users["bob"].active is False
        assert users["carol"].active is True
        assert all(user.can_control and user.last_login is None for user in users.values())
        assert users["admin"].created_at == pytest.approx(FLASK_USERS[0].created_at.timestamp())

        # Old passwords work, the short "admin" too; names now ignore case.
        assert await store.authenticate("admin", "admin") is not None
        alice = await store.authenticate("alice", "correct horse battery staple")
        assert alice is not None and alice.username == "Alice"
        assert await store.authenticate("Alice", "wrong password") is None
        assert await store.authenticate("bob", "bobspassword") is None
        assert await store.authenticate("carol", "carolspassword") is not None
    finally:
        database.close()

    assert tables(path) == {"users", "sessions", "api_tokens"}
    upgraded = raw(path)
    kept = {row["id"]: row["password_hash"] for row in upgraded.execute("SELECT * FROM users")}
    upgraded.close()
    assert kept == hashes


@pytest_twisted.ensureDeferred
async def test_flask_names_differing_only_in_case_stop_the_upgrade(
    reactor: Any, tmp_path: Path
) -> None:
    path = tmp_path / "sqlite.db"
    create_legacy_database(
        path, [LegacyUser("alice", "a"), LegacyUser("ALICE", "b")], with_alembic=True, rounds=4
    )
    with pytest.raises(DatabaseError, match=r"differ only in case: (alice, ALICE|ALICE, alice)"):
        await Database.open(reactor, str(path))
    assert tables(path) == {"users", "alembic_version"}
    assert user_version(path) == 0


@pytest_twisted.ensureDeferred
async def test_failed_flask_upgrade_changes_nothing(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    connection = raw(path)
    connection.execute("CREATE TABLE users (id TEXT PRIMARY KEY, username TEXT, password TEXT)")
    connection.execute("INSERT INTO users VALUES ('1', 'alice', 'x')")
    connection.commit()
    connection.close()
    with pytest.raises(DatabaseError, match="cannot upgrade the Flask database"):
        await Database.open(reactor, str(path))
    assert tables(path) == {"users"}
    assert user_version(path) == 0


# Finding the file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///robocam.db", "robocam.db"),
        ("sqlite:///data/robocam.db", "data/robocam.db"),
        ("sqlite:////var/lib/camproxy/robocam.db", "/var/lib/camproxy/robocam.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_database_path_from_url(url: str, path: str) -> None:
    assert database_path_from_url(url) == path


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user@host/db",
        "robocam.db",
        "sqlite:///",
        "sqlite:/robocam.db",
        "sqlite:///robocam.db?mode=ro",
        "",
    ],
)
def test_database_path_from_url_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL"):
        database_path_from_url(url)


def test_locate_database(tmp_path: Path) -> None:
    assert locate_database({}, tmp_path) == DEFAULT_DATABASE
    (tmp_path / ".env").write_text("SECRET_KEY=x\nDATABASE_URL=sqlite:///from-dotenv.db\n")
    assert locate_database({}, tmp_path) == "from-dotenv.db"
    environ = {"DATABASE_URL": "sqlite:////srv/from-env.db"}
    assert locate_database(environ, tmp_path) == "/srv/from-env.db"
    with pytest.raises(ValueError, match="DATABASE_URL"):
        locate_database({"DATABASE_URL": "mysql://x"}, tmp_path)
