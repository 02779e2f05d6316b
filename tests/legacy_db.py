"""Builds a database the way the Flask version of CamProxy (SQLAlchemy 2.0) did.

Same DDL as SQLAlchemy emits for SQLite, datetimes as ``'YYYY-MM-DD HH:MM:SS.ffffff'``
local-time strings, booleans as 0/1, bcrypt hashes from ``bcrypt.hashpw``, and
``PRAGMA user_version`` left at 0.

Two shapes exist in the wild. ``alembic upgrade`` ran the one migration (239e47ad7575),
whose ``users`` table has no ``is_admin`` and which adds the ``alembic_version`` table.
``db.create_all()`` built the table from ``models.py``; that class declares an
``is_admin`` column but then a method of the same name replaces it in the class body, so
SQLAlchemy never saw the column either. ``with_is_admin=True`` builds the table models.py
meant to have, so that CamProxy is tested against both.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import attrs
import bcrypt

ALEMBIC_REVISION = "239e47ad7575"

_USERS_DDL = (
    "\nCREATE TABLE users (\n"
    "\tid VARCHAR(36) NOT NULL, \n"
    "\tusername VARCHAR(50) NOT NULL, \n"
    "\tpassword VARCHAR(100) NOT NULL, \n"
    "\tcreated_at DATETIME NOT NULL, \n"
    "\tupdated_at DATETIME NOT NULL, \n"
    "\tactive BOOLEAN, \n"
    "{is_admin}"
    "\tPRIMARY KEY (id), \n"
    "\tUNIQUE (username)\n"
    ")\n\n"
)
_ALEMBIC_DDL = (
    "\nCREATE TABLE alembic_version (\n"
    "\tversion_num VARCHAR(32) NOT NULL, \n"
    "\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n"
    ")\n\n"
)


@attrs.frozen
class LegacyUser:
    """One row to write; ``active=None`` is the NULL the nullable column allows."""

    username: str
    password: str
    is_admin: bool = False
    active: bool | None = True
    created_at: datetime = attrs.field(factory=datetime.now)
    id: str = attrs.field(factory=lambda: str(uuid.uuid4()))


def sqlalchemy_datetime(moment: datetime) -> str:
    """A datetime as SQLAlchemy's SQLite dialect stores it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def create_legacy_database(
    path: Path,
    users: Sequence[LegacyUser],
    *,
    with_is_admin: bool = False,
    with_alembic: bool = True,
    rounds: int = 12,
) -> None:
    """Write a Flask-version database with ``users`` at ``path`` (which must not exist).

    ``rounds`` is bcrypt's cost; the Flask version used ``gensalt()``'s default, 12.
    """
    connection = sqlite3.connect(path)
    try:
        with connection:
            if with_alembic:
                connection.execute(_ALEMBIC_DDL)
                connection.execute(
                    "INSERT INTO alembic_version (version_num) VALUES (?)", (ALEMBIC_REVISION,)
                )
            connection.execute(
                _USERS_DDL.format(is_admin="\tis_admin BOOLEAN, \n" if with_is_admin else "")
            )
            for user in users:
                hashed = bcrypt.hashpw(user.password.encode("utf-8"), bcrypt.gensalt(rounds))
                stamp = sqlalchemy_datetime(user.created_at)
                active = None if user.active is None else int(user.active)
                if with_is_admin:
                    connection.execute(
                        "INSERT INTO users (id, username, password, created_at, updated_at, "
                        "active, is_admin) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            user.id,
                            user.username,
                            hashed.decode("utf-8"),
                            stamp,
                            stamp,
                            active,
                            int(user.is_admin),
                        ),
                    )
                else:
                    connection.execute(
                        "INSERT INTO users (id, username, password, created_at, updated_at, "
                        "active) VALUES (?, ?, ?, ?, ?, ?)",
                        (user.id, user.username, hashed.decode("utf-8"), stamp, stamp, active),
                    )
    finally:
        connection.close()
