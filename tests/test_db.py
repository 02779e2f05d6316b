"""camproxy.accounts.database and .migrate: creating, recognizing, copying, upgrading,
refusing, on SQLite and PostgreSQL; the Flask import; where the database is."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.pool import QueuePool
from twisted.internet.task import Clock

from camproxy.accounts import migrate
from camproxy.accounts.database import Database, DatabaseError, DatabaseInUse
from camproxy.accounts.engine import make_engine
from camproxy.accounts.location import DatabaseLocation, parse_location
from camproxy.accounts.migrate import latest_version, revisions
from camproxy.accounts.passwords import BcryptHasher, FastHasher
from camproxy.accounts.tables import VERSION_TABLE, users
from camproxy.accounts.users import UserStore
from camproxy.config import ConfigError, database_setting
from tests import stores
from tests.legacy_db import LegacyUser, create_legacy_database
from tests.legacy_schema import create_camproxy_database
from tests.servers import PostgresServer

#: Schema version 4's tables (cameras, grants, tokens limited to cameras, the counter).
CAMERA_TABLES = ("cameras", "camera_grants", "api_token_cameras", "camera_changes")

shared_postgres = stores.shared_postgres
database_url = stores.database_url

LATEST = latest_version()
ALICE = (
    "INSERT INTO users (id, username, password_hash, created_at, updated_at)"
    " VALUES ('id-1', 'alice', 'x', 0, 0)"
)


@pytest.fixture
def db(reactor: Any, database_url: str) -> Iterator[Database]:
    database = stores.open_database(reactor, database_url)
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


def pragma(path: Path, name: str) -> Any:
    connection = raw(path)
    try:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        connection.close()


def copies(path: Path) -> list[Path]:
    """The copies taken before upgrades, beside ``path``."""
    return sorted(path.parent.glob(f"{path.name}.pre-upgrade-*"))


def open_and_close(reactor: Any, path: Path | str) -> None:
    Database.open(reactor, str(path)).close()


def test_revisions_are_numbered_from_one() -> None:
    known = revisions()
    assert LATEST >= 3
    assert known == [f"{n:04d}" for n in range(1, LATEST + 1)]


@pytest_twisted.ensureDeferred
async def test_new_database_gets_latest_schema(db: Database) -> None:
    assert await db.schema_version() == LATEST

    def names(connection: Connection) -> set[str]:
        return set(sa.inspect(connection).get_table_names())

    assert await db.read(names) == {
        "users",
        "sessions",
        "api_tokens",
        VERSION_TABLE,
        *CAMERA_TABLES,
    }
    if db.location.is_sqlite:
        path = Path(db.path)
        assert pragma(path, "journal_mode") == "wal"
        assert pragma(path, "user_version") == LATEST

        def foreign_keys(connection: Connection) -> int:
            return int(connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one())

        assert await db.read(foreign_keys) == 1
        assert copies(path) == [], "a new database needs no copy"


@pytest_twisted.ensureDeferred
async def test_reopening_keeps_data_and_version(reactor: Any, database_url: str) -> None:
    database = stores.open_database(reactor, database_url)
    try:
        first = await UserStore(database, BcryptHasher(reactor, rounds=4), Clock()).add(
            "alice", "password1"
        )
    finally:
        database.close()

    database = stores.open_database(reactor, database_url)
    try:
        assert await database.schema_version() == LATEST
        again = await UserStore(database, BcryptHasher(reactor, rounds=4), Clock()).get("alice")
        assert again == first
    finally:
        database.close()


def test_open_leaves_no_connection_and_no_thread(reactor: Any, database_url: str) -> None:
    """What twistd's fork must not inherit: the start-up work closes what it opened."""
    threads = set(threading.enumerate())
    database = Database.open(reactor, database_url)
    try:
        pool = database.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedout() == 0
        assert pool.checkedin() == 0
        assert set(threading.enumerate()) == threads
    finally:
        database.close()


@pytest.mark.parametrize("version", [1, 2])
@pytest_twisted.ensureDeferred
async def test_upgrades_an_older_camproxy_database(
    reactor: Any, tmp_path: Path, version: int
) -> None:
    path = tmp_path / "old.db"
    create_camproxy_database(path, version, [ALICE])
    before = sqlite3.connect(path)
    original = list(before.iterdump())
    before.close()

    database = stores.open_database(reactor, str(path))
    try:
        assert await database.schema_version() == LATEST
        assert await UserStore(database, FastHasher(), Clock()).get("ALICE")
    finally:
        database.close()
    assert {"sessions", "api_tokens", VERSION_TABLE} <= tables(path)
    assert pragma(path, "user_version") == LATEST

    # The copy from before the upgrade: the old schema and rows, one self-contained file.
    (copy,) = copies(path)
    assert copy.name == f"old.db.pre-upgrade-{version}-{LATEST}"
    assert pragma(copy, "user_version") == version
    assert pragma(copy, "journal_mode") == "delete"
    kept = sqlite3.connect(copy)
    assert list(kept.iterdump()) == original
    kept.close()
    assert oct(copy.stat().st_mode & 0o777) == "0o600"

    # Opening again: nothing to upgrade, no further copy.
    open_and_close(reactor, path)
    assert copies(path) == [copy]


def test_a_failed_upgrade_changes_nothing_and_keeps_the_copy(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "robocam.db"
    # A version 2 file where someone made a table that version 3 creates: its upgrade fails.
    create_camproxy_database(
        path, 2, [ALICE, "CREATE TABLE api_tokens (id TEXT)", "INSERT INTO api_tokens VALUES ('t')"]
    )
    before = sqlite3.connect(path)
    original = list(before.iterdump())
    before.close()

    with pytest.raises(DatabaseError) as refused:
        Database.open(reactor, str(path))
    message = str(refused.value)
    (copy,) = copies(path)
    assert message.startswith(f"cannot upgrade {path} from schema version 2 to {LATEST}: ")
    assert "already exists" in message
    assert f"nothing was changed; a copy from before is {copy}" in message
    assert "\n" not in message

    for intact in (path, copy):
        connection = sqlite3.connect(intact)
        assert list(connection.iterdump()) == original
        connection.close()
    assert pragma(path, "user_version") == 2


def test_an_upgrade_without_its_copy_does_not_happen(
    reactor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    create_camproxy_database(path, 2, [ALICE])

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(migrate, "snapshot", disk_full)
    with pytest.raises(DatabaseError) as refused:
        Database.open(reactor, str(path))
    assert str(refused.value) == (
        f"cannot copy {path} to {path}.pre-upgrade-2-{LATEST} before upgrading it from schema "
        f"version 2 to {LATEST}: [Errno 28] No space left on device; nothing was changed"
    )
    assert pragma(path, "user_version") == 2
    assert VERSION_TABLE not in tables(path)


def test_two_processes_upgrade_once(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    create_camproxy_database(path, 1, [ALICE])
    problems: list[BaseException] = []

    def open_it() -> None:
        try:
            open_and_close(reactor, path)
        except BaseException as problem:
            problems.append(problem)

    openers = [threading.Thread(target=open_it) for _ in range(3)]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join()
    assert problems == []
    assert pragma(path, "user_version") == LATEST
    assert len(copies(path)) == 1


@pytest_twisted.ensureDeferred
async def test_memory_database(reactor: Any) -> None:
    database = stores.open_database(reactor, ":memory:")
    try:
        assert await database.schema_version() == LATEST
        await UserStore(database, FastHasher(), Clock()).add("alice", "password1")
        assert [user.username for user in await UserStore(database, FastHasher(), Clock()).list()]
    finally:
        database.close()


@pytest_twisted.ensureDeferred
async def test_write_rolls_back_on_error(db: Database) -> None:
    def insert_then_fail(connection: Connection) -> None:
        connection.exec_driver_sql(ALICE)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await db.write(insert_then_fail)

    def count(connection: Connection) -> int:
        return int(connection.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())

    assert await db.read(count) == 0


@pytest_twisted.ensureDeferred
async def test_driver_errors_are_one_line_database_errors(db: Database) -> None:
    def broken(connection: Connection) -> None:
        connection.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(DatabaseError) as refused:
        await db.read(broken)
    message = str(refused.value)
    assert "no_such_table" in message and "\n" not in message
    assert "SELECT" not in message, "no SQL in messages for users"


@pytest_twisted.ensureDeferred
async def test_closed_database_fails_queries(reactor: Any) -> None:
    database = stores.open_database(reactor, ":memory:")
    database.close()
    database.close()
    with pytest.raises(DatabaseError, match="closed"):
        await database.schema_version()


def set_revision(url: str, revision: str) -> None:
    engine = make_engine(parse_location(url, source="--database"))
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_refuses_a_newer_schema(reactor: Any, database_url: str) -> None:
    open_and_close(reactor, database_url)
    set_revision(database_url, f"{LATEST + 1:04d}")
    shown = parse_location(database_url, source="--database").display
    with pytest.raises(DatabaseError) as refused:
        Database.open(reactor, database_url)
    assert str(refused.value) == (
        f"{shown} has schema version {LATEST + 1}, newer than this CamProxy knows ({LATEST}); "
        "upgrade CamProxy"
    )


def test_refuses_a_newer_schema_from_before_alembic(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    create_camproxy_database(path, 3)
    connection = raw(path)
    connection.execute(f"PRAGMA user_version = {LATEST + 1}")
    connection.close()
    with pytest.raises(DatabaseError, match="newer than this CamProxy"):
        Database.open(reactor, str(path))


def test_refuses_a_foreign_database(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    connection = raw(path)
    connection.execute("CREATE TABLE recipes (name TEXT)")
    connection.close()
    with pytest.raises(DatabaseError, match="not a CamProxy database"):
        Database.open(reactor, str(path))
    assert tables(path) == {"recipes"}
    assert pragma(path, "journal_mode") == "delete", "a foreign file is left exactly as it was"
    assert copies(path) == []


def test_refuses_a_foreign_postgresql_database(
    reactor: Any, shared_postgres: PostgresServer
) -> None:
    url = stores.new_postgres_database(shared_postgres)
    name = url.rsplit("/", 1)[1]
    shared_postgres.psql("CREATE TABLE recipes (name TEXT)", database=name)
    with pytest.raises(DatabaseError, match=r"not a CamProxy database: it has tables \(recipes\)"):
        Database.open(reactor, url)


def test_refuses_a_file_that_is_not_sqlite(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "text.db"
    path.write_bytes(b"this is not a database, but long enough to look like one" * 20)
    with pytest.raises(
        DatabaseError, match=r"^cannot open the database .*text.db: file is not a database$"
    ):
        Database.open(reactor, str(path))


def test_claim_keeps_a_second_daemon_out(reactor: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "daemon.db")
    first = Database.open(reactor, path)
    first.claim()
    try:
        second = Database.open(reactor, path)
        with pytest.raises(DatabaseInUse, match="in use by another CamProxy daemon"):
            second.claim()
        second.close()
    finally:
        first.close()
    again = Database.open(reactor, path)
    again.claim()
    again.close()


def test_postgresql_needs_no_lock(reactor: Any, shared_postgres: PostgresServer) -> None:
    url = stores.new_postgres_database(shared_postgres)
    first, second = Database.open(reactor, url), Database.open(reactor, url)
    first.claim()
    second.claim()
    first.close()
    second.close()


def test_a_wrong_postgresql_password_is_one_line_without_it(
    reactor: Any, shared_postgres: PostgresServer
) -> None:
    url = stores.new_postgres_database(shared_postgres).replace(
        shared_postgres.password, "wrong-secret-1234"
    )
    with pytest.raises(DatabaseError) as refused:
        Database.open(reactor, url)
    message = str(refused.value)
    assert message.startswith(f"cannot open the database postgresql://{shared_postgres.user}:***@")
    assert "password authentication failed" in message
    assert "wrong-secret-1234" not in message and "\n" not in message


def test_an_unreachable_postgresql_is_one_line(reactor: Any) -> None:
    from tests.processes import free_port

    url = f"postgresql://camproxy:pw-5678@127.0.0.1:{free_port()}/camproxy"
    with pytest.raises(DatabaseError) as refused:
        Database.open(reactor, url)
    message = str(refused.value)
    assert "pw-5678" not in message and "\n" not in message
    assert "refused" in message


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
    original = list(legacy.iterdump())
    legacy.close()

    database = stores.open_database(reactor, str(path))
    try:
        assert await database.schema_version() == LATEST
        store = UserStore(database, BcryptHasher(reactor, rounds=4), Clock())
        listed = {user.username: user for user in await store.list()}
        assert set(listed) == {"admin", "Alice", "bob", "carol"}
        for old in FLASK_USERS:
            assert listed[old.username].id == old.id
        assert listed["admin"].is_admin is with_is_admin
        assert not listed["Alice"].is_admin
        assert listed["bob"].active is False
        assert listed["carol"].active is True
        assert all(user.can_control and user.last_login is None for user in listed.values())
        assert listed["admin"].created_at == pytest.approx(FLASK_USERS[0].created_at.timestamp())

        # Old passwords work, the short "admin" too; names now ignore case.
        assert await store.authenticate("admin", "admin") is not None
        alice = await store.authenticate("alice", "correct horse battery staple")
        assert alice is not None and alice.username == "Alice"
        assert await store.authenticate("Alice", "wrong password") is None
        assert await store.authenticate("bob", "bobspassword") is None
        assert await store.authenticate("carol", "carolspassword") is not None
    finally:
        database.close()

    assert tables(path) == {"users", "sessions", "api_tokens", VERSION_TABLE, *CAMERA_TABLES}
    upgraded = raw(path)
    kept = {row["id"]: row["password_hash"] for row in upgraded.execute("SELECT * FROM users")}
    upgraded.close()
    assert kept == hashes
    (copy,) = copies(path)
    assert copy.name == f"sqlite.db.pre-upgrade-0-{LATEST}"
    flask_copy = sqlite3.connect(copy)
    assert list(flask_copy.iterdump()) == original
    flask_copy.close()


def test_flask_upgrade_notes_go_to_the_log(reactor: Any, tmp_path: Path) -> None:
    from twisted.logger import ILogObserver, globalLogPublisher

    path = tmp_path / "sqlite.db"
    create_legacy_database(path, FLASK_USERS[1:3], rounds=4)
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        open_and_close(reactor, path)
    finally:
        globalLogPublisher.removeObserver(observer)
    notes = [str(event.get("note")) for event in events if "note" in event]
    assert notes[0] == (
        f"copied {path} to {path}.pre-upgrade-0-{LATEST} before upgrading it from schema "
        f"version 0 to {LATEST}"
    )
    assert notes[1] == f"upgraded the Flask database {path}: 2 users kept, 0 of them admins"
    assert notes[2].startswith("no user is an admin now")


def test_flask_names_differing_only_in_case_stop_the_upgrade(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "sqlite.db"
    create_legacy_database(
        path, [LegacyUser("alice", "a"), LegacyUser("ALICE", "b")], with_alembic=True, rounds=4
    )
    with pytest.raises(DatabaseError, match=r"differ only in case: (alice, ALICE|ALICE, alice)"):
        Database.open(reactor, str(path))
    assert tables(path) == {"users", "alembic_version"}
    assert pragma(path, "user_version") == 0


def test_failed_flask_upgrade_changes_nothing(reactor: Any, tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    connection = raw(path)
    connection.execute("CREATE TABLE users (id TEXT PRIMARY KEY, username TEXT, password TEXT)")
    connection.execute("INSERT INTO users VALUES ('1', 'alice', 'x')")
    connection.commit()
    connection.close()
    with pytest.raises(DatabaseError, match="cannot upgrade the Flask database"):
        Database.open(reactor, str(path))
    assert tables(path) == {"users"}
    assert pragma(path, "user_version") == 0


# Finding the database -----------------------------------------------------------------


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
def test_sqlite_urls(url: str, path: str) -> None:
    assert parse_location(url) == DatabaseLocation(path=path)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://camproxy:s3cret@db.example:5433/camproxy",
        "postgresql+psycopg://camproxy:s3cret@db.example:5433/camproxy",
    ],
)
def test_postgresql_urls(url: str) -> None:
    location = parse_location(url)
    assert location.is_postgresql and not location.is_sqlite
    assert location.url is not None and location.url.drivername == "postgresql+psycopg"
    assert location.display == "postgresql://camproxy:***@db.example:5433/camproxy"
    assert "s3cret" not in repr(location) and "s3cret" not in str(location)
    assert location.password == "s3cret"
    assert parse_location(location.setting(), source="--database") == location


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgres://user:pw@host/db", "is not supported"),
        ("mysql://user:pw@host/db", "is not supported"),
        ("postgresql+psycopg2://user:pw@host/db", "psycopg 3"),
        ("postgresql://user:pw@host/", "names no database"),
        ("postgresql://user:pw@host:99999/db", "invalid port"),
        ("robocam.db", "is not supported"),
        ("sqlite:///", "must name a file"),
        ("sqlite:/robocam.db", "is not supported"),
        ("sqlite:///robocam.db?mode=ro", "must name a file"),
        ("", "is empty"),
    ],
)
def test_bad_database_urls(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL") as refused:
        parse_location(url)
    message = str(refused.value)
    assert fragment in message
    assert "pw" not in message.replace("postgresql://user:password", "")
    assert "\n" not in message


def test_database_option_takes_paths_and_urls() -> None:
    assert database_setting("robocam.db", {}) == "robocam.db"
    assert database_setting("data/x.db", {"DATABASE_URL": "sqlite:///other.db"}) == "data/x.db"
    assert database_setting("sqlite:////srv/x.db", {}) == "/srv/x.db"
    url = database_setting("postgresql://u:pw@h/db", {})
    assert parse_location(url, source="--database").display == "postgresql://u:***@h/db"
    with pytest.raises(ConfigError, match="--database 'mysql://u:\\*\\*\\*@h/db'"):
        database_setting("mysql://u:pw@h/db", {})


def test_database_url_from_the_environment() -> None:
    assert database_setting(None, {}) == "robocam.db"
    assert database_setting(None, {"DATABASE_URL": "sqlite:///from-env.db"}) == "from-env.db"
    assert database_setting(None, {"DATABASE_URL": "sqlite:////srv/x.db"}) == "/srv/x.db"
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        database_setting(None, {"DATABASE_URL": "mysql://x"})
