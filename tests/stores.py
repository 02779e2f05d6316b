"""The accounts database on every engine, for the store tests: SQLite and real PostgreSQL.

``database_url`` (parametrized) is a fresh database per test: a SQLite file in the test's
temporary directory, SQLite in memory where the test allows it, and a database of its own
on one PostgreSQL server shared by the whole session (``tests/servers.py``). A test module
makes the fixtures its own by naming them::

    from tests import stores

    shared_postgres = stores.shared_postgres
    database_url = stores.database_url

``open_database`` opens and starts a ``Database`` as the daemon does.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from camproxy.accounts.database import Database
from tests import servers

SQLITE = "sqlite"
MEMORY = "memory"
POSTGRESQL = "postgresql"
#: Every engine, for ``pytest.mark.parametrize("engine", ...)``-style use.
ENGINES = (SQLITE, POSTGRESQL)

_shared: list[servers.PostgresServer] = []
_holders = itertools.count()
_active: set[int] = set()
_databases = itertools.count(1)


@pytest.fixture(scope="session")
def shared_postgres() -> Iterator[servers.PostgresServer]:
    """One PostgreSQL for the whole session, however many modules name this fixture."""
    holder = next(_holders)
    if not _shared:
        bindir = servers.postgres_bindir()
        if bindir is None:
            servers.missing("PostgreSQL")
        assert bindir is not None
        server = servers.PostgresServer(Path(tempfile.mkdtemp(prefix="camproxy-pg-")), bindir)
        _shared.append(server)
        server.init()
    _active.add(holder)
    yield _shared[0]
    _active.discard(holder)
    if not _active and _shared:
        server = _shared.pop()
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def new_postgres_database(server: servers.PostgresServer) -> str:
    """A new, empty database on ``server``; its URL."""
    name = f"test_{next(_databases)}"
    server.psql(f"CREATE DATABASE {name} OWNER {server.user}")
    return f"postgresql://{server.user}:{server.password}@127.0.0.1:{server.port}/{name}"


def url_for(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of the kind ``engine`` names, for one test."""
    if engine == SQLITE:
        return str(tmp_path / "camproxy.db")
    if engine == MEMORY:
        return ":memory:"
    server: servers.PostgresServer = request.getfixturevalue("shared_postgres")
    return new_postgres_database(server)


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database per test, once on SQLite (a file) and once on PostgreSQL."""
    return url_for(str(request.param), request, tmp_path)


def open_database(reactor: Any, url: str) -> Database:
    """``Database.open`` and ``start``, as the daemon does when it starts."""
    database = Database.open(reactor, url)
    database.start()
    return database


def raw_rows(database: Database, table: str) -> list[sa.Row[Any]]:
    """Every row of ``table``, read past the stores (blocking; a test's look inside)."""
    with database.engine.connect() as connection:
        return list(connection.execute(sa.text(f"SELECT * FROM {table}")))
