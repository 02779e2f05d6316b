"""Importing the accounts of the Flask version of CamProxy (a SQLite file only).

That version kept one SQLAlchemy table ``users`` (with a ``password`` column holding
bcrypt hashes, and usually an ``alembic_version`` table of its own) and left ``PRAGMA
user_version`` at 0. ``camproxy.accounts.migrate`` converts such a file in place, in
the one transaction of its upgrade:

1. :func:`set_aside`: refuse names that differ only in case (CamProxy's names ignore
   case), rename ``users`` to ``flask_users``, give it an empty ``is_admin`` column where
   the Flask schema had none, drop the Flask ``alembic_version``;
2. schema version 1 is created (Alembic revision ``0001``);
3. :func:`import_users` copies the users, keeping ids and password hashes, and drops
   ``flask_users``;
4. the later revisions follow as for any database.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from camproxy.accounts.engine import DatabaseError, one_line

# Flask stored naive local times ('YYYY-MM-DD HH:MM:SS.ffffff'); 'utc' converts them with
# this machine's time zone, the one the Flask version ran in.
_IMPORT: Final = """
INSERT INTO users (
    id, username, password_hash, is_admin, active, can_control,
    created_at, updated_at, last_login
)
SELECT
    id,
    username,
    password,
    CASE WHEN is_admin THEN 1 ELSE 0 END,
    -- SQLAlchemy's column default made new users active; NULL only came from raw SQL.
    CASE WHEN active IS NULL OR active THEN 1 ELSE 0 END,
    1,
    coalesce(
        (julianday(created_at, 'utc') - 2440587.5) * 86400.0,
        (julianday('now') - 2440587.5) * 86400.0
    ),
    coalesce(
        (julianday(updated_at, 'utc') - 2440587.5) * 86400.0,
        (julianday(created_at, 'utc') - 2440587.5) * 86400.0,
        (julianday('now') - 2440587.5) * 86400.0
    ),
    NULL
FROM flask_users
"""


def _columns(connection: Connection, table: str) -> set[str]:
    rows = connection.exec_driver_sql(f"PRAGMA table_info({table})")
    return {str(row[1]).lower() for row in rows}


def is_flask_database(connection: Connection, tables: set[str]) -> bool:
    """Whether a SQLite database with these ``tables`` was made by the Flask version."""
    return "users" in tables and "password" in _columns(connection, "users")


def set_aside(connection: Connection, display: str) -> None:
    """Step 1 (see the module docstring); ``DatabaseError`` if names clash."""
    clashes = connection.exec_driver_sql(
        "SELECT group_concat(username, ', ') FROM users "
        "GROUP BY username COLLATE NOCASE HAVING count(*) > 1"
    ).fetchall()
    if clashes:
        names = "; ".join(str(row[0]) for row in clashes)
        raise DatabaseError(
            f"cannot upgrade the Flask database {display}: user names now ignore case, and "
            f"these differ only in case: {names}; rename or delete all but one of each with "
            "sqlite3 first"
        )
    legacy_columns = _columns(connection, "users")
    connection.exec_driver_sql("ALTER TABLE users RENAME TO flask_users")
    if "is_admin" not in legacy_columns:
        connection.exec_driver_sql("ALTER TABLE flask_users ADD COLUMN is_admin BOOLEAN")
    connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")


def import_users(connection: Connection, display: str) -> list[str]:
    """Step 3; returns notes for the log. ``DatabaseError`` if the rows do not fit."""
    try:
        connection.exec_driver_sql(_IMPORT)
        connection.exec_driver_sql("DROP TABLE flask_users")
    except DBAPIError as problem:
        raise DatabaseError(
            f"cannot upgrade the Flask database {display}: {one_line(str(problem.orig))}"
        ) from problem
    users, admins = connection.execute(
        sa.text("SELECT count(*), coalesce(sum(is_admin), 0) FROM users")
    ).one()
    notes = [f"upgraded the Flask database {display}: {users} users kept, {admins} of them admins"]
    if users and not admins:
        notes.append(
            "no user is an admin now (the Flask version never stored the admin flag); "
            "make one with: camproxy user promote NAME"
        )
    return notes
