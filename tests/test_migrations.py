"""The Alembic revisions: the same schema as the scripts before them, and as ``tables.py``."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from camproxy.accounts.database import Database
from camproxy.accounts.engine import make_engine, transaction
from camproxy.accounts.location import parse_location
from camproxy.accounts.migrate import alembic_config, head, latest_version, revisions
from camproxy.accounts.tables import VERSION_TABLE, metadata
from tests import stores
from tests.legacy_schema import create_camproxy_database

shared_postgres = stores.shared_postgres
database_url = stores.database_url


def test_alembic_sees_the_revisions_the_file_names_promise() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [head()]
    chain = [script.revision for script in scripts.walk_revisions()]
    assert list(reversed(chain)) == revisions()
    for script in scripts.walk_revisions():
        expected = None if script.revision == "0001" else f"{int(script.revision) - 1:04d}"
        assert script.down_revision == expected


def _checks(sql: str) -> list[str]:
    """The CHECK constraints' expressions in a CREATE TABLE statement."""
    found = []
    for start in (m.end() for m in re.finditer(r"CHECK\s*\(", sql)):
        depth, end = 1, start
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            end += 1
        found.append(" ".join(sql[start : end - 1].split()))
    return sorted(found)


def describe_sqlite(path: Path) -> dict[str, Any]:
    """A SQLite file's schema as SQLite itself understands it, spelling aside."""
    connection = sqlite3.connect(path)
    try:
        described: dict[str, Any] = {}
        rows = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name != ?",
            (VERSION_TABLE,),
        ).fetchall()
        for table, sql in rows:
            indexes = {}
            for _, name, unique, origin, partial in connection.execute(
                f"PRAGMA index_list({table})"
            ):
                key = [
                    (column, collation)
                    for _, _, column, _, collation, is_key in connection.execute(
                        f"PRAGMA index_xinfo({name})"
                    )
                    if is_key
                ]
                # Automatic indexes are named by position; name them by what they hold.
                label = name if origin == "c" else f"{origin}:{key}"
                indexes[label] = (unique, origin, partial, key)
            described[table] = {
                "columns": connection.execute(f"PRAGMA table_info({table})").fetchall(),
                "indexes": indexes,
                "foreign_keys": [
                    row[2:] for row in connection.execute(f"PRAGMA foreign_key_list({table})")
                ],
                "checks": _checks(sql),
                "collations": sorted(re.findall(r"(\w+)\s+TEXT[^,]*COLLATE\s+\"?(\w+)", sql)),
            }
        return described
    finally:
        connection.close()


def test_sqlite_schema_is_the_one_the_scripts_made(reactor: Any, tmp_path: Path) -> None:
    assert latest_version() >= 3
    legacy = tmp_path / "legacy.db"
    create_camproxy_database(legacy, 3)
    alembic = tmp_path / "alembic.db"
    Database.open(reactor, str(alembic)).close()
    expected = describe_sqlite(legacy)
    assert set(expected) == {"users", "sessions", "api_tokens"}
    made = describe_sqlite(alembic)
    for table in expected:
        assert made[table] == expected[table], table


# The lower() indexes exist on PostgreSQL only; SQLite's reflection cannot see such indexes.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_tables_py_matches_the_migrated_database(reactor: Any, database_url: str) -> None:
    Database.open(reactor, database_url).close()
    engine = make_engine(parse_location(database_url, source="--database"))
    try:
        with engine.connect() as connection:
            dialect = connection.dialect.name

            def on_this_engine(item: Any, *_: Any) -> bool:
                # tables.py marks what exists on one engine only with ddl_if(dialect=...).
                ddl_if = getattr(item, "_ddl_if", None)
                return ddl_if is None or ddl_if.dialect in (None, dialect)

            context = MigrationContext.configure(
                connection,
                opts={
                    "version_table": VERSION_TABLE,
                    "compare_type": True,
                    "include_object": on_this_engine,
                },
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


@pytest.mark.parametrize("engine_name", stores.ENGINES)
def test_every_revision_goes_down_and_up_again(
    reactor: Any, engine_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = stores.url_for(engine_name, request, tmp_path)
    Database.open(reactor, url).close()
    engine = make_engine(parse_location(url, source="--database"))
    try:
        with engine.connect() as connection, transaction(connection, write=True):
            command.downgrade(alembic_config(connection), "base")
        with engine.connect() as connection, transaction(connection, write=True):
            command.upgrade(alembic_config(connection), "head")
    finally:
        engine.dispose()
    database = Database.open(reactor, url)
    database.close()
