"""Bringing a database to the newest schema: create, recognize, copy, upgrade, or refuse.

Schema versions are Alembic revisions ``0001``, ``0002``, ... (``migrations/versions``),
recorded in the table ``camproxy_schema_version``. :func:`upgrade` recognizes, before it
changes anything:

- a new, empty database: it gets every revision;
- a database at some revision: it gets the ones after it; one at a revision this
  CamProxy does not know is refused (``newer than this CamProxy knows``);
- a CamProxy SQLite file from before Alembic (``PRAGMA user_version`` 1 to 3, no version
  table): stamped at the revision of that number, then upgraded;
- a Flask-version SQLite file: imported (``flaskimport``), then upgraded;
- anything else with tables in it: refused as not a CamProxy database, untouched.

Every upgrade runs in one write transaction (see ``engine.transaction``), which decides
again under the lock, so that two processes opening one database upgrade it once. Before
it a SQLite file is copied to ``NAME.pre-upgrade-FROM-TO`` beside it (``snapshot``): if
the upgrade fails the transaction rolls back, and either way the copy is there. On SQLite
``PRAGMA user_version`` mirrors the schema version, so that a CamProxy from before
Alembic refuses a database newer than it knows instead of misreading it.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from camproxy.accounts import flaskimport
from camproxy.accounts.engine import DatabaseError, describe, transaction, use_wal
from camproxy.accounts.location import DatabaseLocation
from camproxy.accounts.snapshot import snapshot
from camproxy.accounts.tables import VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

SCRIPT_LOCATION: Final = "camproxy.accounts:migrations"
_REVISION_FILE: Final = re.compile(r"(\d{4})_\w+\.py")


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration, built in code (there is no ``alembic.ini``).

    ``connection`` (inside its transaction) is what ``migrations/env.py`` migrates.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def revisions() -> list[str]:
    """Every revision this CamProxy knows, oldest first: ``0001``, ``0002``, ...

    Read from the file names in ``migrations/versions`` (``NNNN_what.py``, revision
    ``NNNN``), so that opening a database that needs no upgrade does not load Alembic;
    ``tests/test_migrations.py`` checks that Alembic sees the same chain.
    """
    directory = resources.files("camproxy.accounts.migrations").joinpath("versions")
    found = sorted(
        match.group(1)
        for entry in directory.iterdir()
        if (match := _REVISION_FILE.fullmatch(entry.name))
    )
    if found != [f"{number:04d}" for number in range(1, len(found) + 1)]:
        raise RuntimeError(f"migrations must be numbered 0001, 0002, ... without gaps: {found}")
    return found


def head() -> str:
    """The newest revision."""
    return revisions()[-1]


def version_number(revision: str) -> int | None:
    """The schema version a revision stands for (``"0003"`` is 3); None if not a number."""
    return int(revision) if revision.isdigit() else None


def latest_version() -> int:
    """The newest schema version this CamProxy knows."""
    return len(revisions())


@attrs.frozen
class SchemaState:
    """What a database holds, as far as its schema goes."""

    tables: frozenset[str]
    #: The revisions in the version table (normally one); empty without one.
    stamped: tuple[str, ...]
    #: SQLite's ``PRAGMA user_version``; 0 on PostgreSQL.
    user_version: int

    @property
    def empty(self) -> bool:
        return not self.tables


def read_state(connection: Connection) -> SchemaState:
    """Look at a database without changing it."""
    tables = frozenset(name.lower() for name in sa.inspect(connection).get_table_names())
    stamped: tuple[str, ...] = ()
    if VERSION_TABLE in tables:
        query: sa.Select[Any] = sa.select(sa.column("version_num")).select_from(
            sa.table(VERSION_TABLE)
        )
        stamped = tuple(sorted(str(revision) for revision in connection.scalars(query)))
    user_version = 0
    if connection.dialect.name == "sqlite":
        user_version = int(connection.exec_driver_sql("PRAGMA user_version").scalar_one())
    return SchemaState(tables - {VERSION_TABLE}, stamped, user_version)


def schema_version(state: SchemaState) -> int:
    """The schema version a database is at (0 for none), as ``camproxy db check`` shows it."""
    numbers = [version_number(revision) or 0 for revision in state.stamped]
    return max([*numbers, state.user_version])


@attrs.frozen
class Plan:
    """What :func:`upgrade` has to do to one database."""

    #: The revision to stamp before upgrading (a CamProxy file from before Alembic).
    stamp: str | None = None
    flask: bool = False
    done: bool = False
    #: The schema version it starts from (0: none).
    start: int = 0


def plan(connection: Connection, state: SchemaState, display: str) -> Plan:
    """Decide what to do, or raise ``DatabaseError`` for a database to leave alone."""
    known = revisions()
    latest = latest_version()
    version = schema_version(state)
    too_new = DatabaseError(
        f"{display} has schema version {version}, newer than this CamProxy knows "
        f"({latest}); upgrade CamProxy"
    )
    if state.stamped:
        unknown = [revision for revision in state.stamped if revision not in known]
        if unknown or version > latest:
            if version <= latest:
                raise DatabaseError(
                    f"{display} has schema revision {', '.join(unknown)}, unknown to this "
                    "CamProxy; upgrade CamProxy"
                )
            raise too_new
        return Plan(done=state.stamped == (head(),), start=version)
    if state.user_version:
        if version > latest:
            raise too_new
        if "users" in state.tables:
            return Plan(stamp=f"{state.user_version:04d}", start=version)
        raise DatabaseError(
            f"{display} is not a CamProxy database: its PRAGMA user_version is "
            f"{state.user_version} but it has no users table"
        )
    if state.empty:
        return Plan()
    if connection.dialect.name == "sqlite" and flaskimport.is_flask_database(
        connection, set(state.tables)
    ):
        return Plan(flask=True)
    raise DatabaseError(
        f"{display} is not a CamProxy database: it has tables "
        f"({', '.join(sorted(state.tables))}) but no schema version"
    )


def pre_upgrade_copy_path(path: str, start: int, end: int) -> Path:
    """Where the copy before an upgrade goes: ``NAME.pre-upgrade-FROM-TO`` beside it,
    with ``.1``, ``.2``, ... added rather than replace an earlier copy."""
    base = Path(f"{path}.pre-upgrade-{start}-{end}")
    candidate, number = base, 0
    while candidate.exists():
        number += 1
        candidate = Path(f"{base}.{number}")
    return candidate


def upgrade(engine: Engine, location: DatabaseLocation) -> list[str]:
    """Bring the database to the newest revision; return notes for the log.

    Raises ``DatabaseError`` for a database that is not CamProxy's, is newer than this
    CamProxy, or could not be upgraded (nothing changed then); driver errors
    (``sqlalchemy.exc.DBAPIError``) pass through.
    """
    display = location.display
    with engine.connect() as connection:
        with transaction(connection, write=False):
            decided = plan(connection, read_state(connection), display)
        if location.is_file:
            # Only once it is known to be ours: a foreign file is left exactly as it was.
            use_wal(connection)
        if decided.done:
            return []
    with engine.connect() as connection, transaction(connection, write=True):
        # Again under the write lock: another process may have upgraded it meanwhile.
        state = read_state(connection)
        decided = plan(connection, state, display)
        if decided.done:
            return []
        return _apply(connection, location, state, decided)


def _apply(
    connection: Connection, location: DatabaseLocation, state: SchemaState, decided: Plan
) -> list[str]:
    latest = latest_version()
    notes: list[str] = []
    copy: Path | None = None
    if location.is_file and not state.empty:
        assert location.path is not None
        copy = pre_upgrade_copy_path(location.path, decided.start, latest)
        try:
            snapshot(location.path, copy, check=False)
            os.chmod(copy, 0o600)
        except (OSError, sqlite3.Error) as problem:
            raise DatabaseError(
                f"cannot copy {location.display} to {copy} before upgrading it from schema "
                f"version {decided.start} to {latest}: {problem}; nothing was changed"
            ) from None
        notes.append(
            f"copied {location.display} to {copy} before upgrading it from schema version "
            f"{decided.start} to {latest}"
        )
    from alembic import command

    try:
        config = alembic_config(connection)
        if decided.flask:
            flaskimport.set_aside(connection, location.display)
            command.upgrade(config, revisions()[0])
            notes += flaskimport.import_users(connection, location.display)
        elif decided.stamp is not None:
            command.stamp(config, decided.stamp)
        command.upgrade(config, "head")
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql(f"PRAGMA user_version = {latest:d}")
    except DatabaseError as problem:
        raise DatabaseError(_kept(str(problem), copy)) from problem
    except Exception as problem:
        reason = describe(problem, location)
        raise DatabaseError(
            _kept(
                f"cannot upgrade {location.display} from schema version {decided.start} to "
                f"{latest}: {reason}",
                copy,
            )
        ) from problem
    return notes


def _kept(message: str, copy: Path | None) -> str:
    if copy is None:
        return message
    return f"{message} (nothing was changed; a copy from before is {copy})"
