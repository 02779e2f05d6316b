"""The accounts' tables, as SQLAlchemy Core sees them at the newest schema version.

The queries in ``users``, ``sessions`` and ``tokens`` are built from these tables and
run unchanged on SQLite and PostgreSQL. The schema itself is made and changed only by
the Alembic revisions in ``migrations/versions``; ``tests/test_migrations.py`` checks that
these definitions and the migrated database agree on both engines.

Names (user names, token names) are unique ignoring case. On SQLite the columns carry
``COLLATE NOCASE`` (as schema versions 1 to 3 always had); on PostgreSQL unique indexes on
``lower(...)`` do the same. Queries compare with :func:`same_name` and sort with
:func:`name_order`, which mean the same on both: ASCII letters fold, nothing else does.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

#: Alembic's version table. Not ``alembic_version``: the Flask version's database has
#: one of those, for its own migrations.
VERSION_TABLE: Final = "camproxy_schema_version"

metadata = sa.MetaData()

#: POSIX seconds (UTC). REAL on SQLite, as version 1 made it; DOUBLE PRECISION on
#: PostgreSQL (its REAL has 24 bits, whole minutes off for today's times).
Seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
#: A name that ignores case: the column collation on SQLite, ``lower()`` indexes elsewhere.
Name = sa.Text().with_variant(sa.Text(collation="NOCASE"), "sqlite")
#: A flag: BOOLEAN on PostgreSQL, INTEGER 0/1 (with a CHECK) on SQLite.
Flag = sa.Boolean(create_constraint=False)


def _flag(name: str, default: bool) -> sa.Column[bool]:
    return sa.Column(
        name,
        Flag.with_variant(sa.Integer(), "sqlite"),
        nullable=False,
        server_default=sa.true() if default else sa.false(),
    )


def _sqlite_flag_check(name: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"{name} IN (0, 1)").ddl_if(dialect="sqlite")


users = sa.Table(
    "users",
    metadata,
    # A UUID as text: the Flask version's ids are kept as they are.
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("username", Name, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    _flag("is_admin", False),
    _flag("active", True),
    _flag("can_control", True),
    sa.Column("created_at", Seconds, nullable=False),
    sa.Column("updated_at", Seconds, nullable=False),
    sa.Column("last_login", Seconds),
    _sqlite_flag_check("is_admin"),
    _sqlite_flag_check("active"),
    _sqlite_flag_check("can_control"),
    sa.UniqueConstraint("username").ddl_if(dialect="sqlite"),
)
sa.Index("users_username_lower", sa.func.lower(users.c.username), unique=True).ddl_if(
    dialect="postgresql"
)

sessions = sa.Table(
    "sessions",
    metadata,
    # SHA-256 (hex) of the session id: a stolen database yields no usable cookie.
    sa.Column("id_hash", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", Seconds, nullable=False),
    sa.Column("expires_at", Seconds, nullable=False),
    sa.Index("sessions_by_user", "user_id"),
    sa.Index("sessions_by_expiry", "expires_at"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", Name, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    # SHA-256 (hex) of the whole token, which is shown once and never stored.
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("created_at", Seconds, nullable=False),
    sa.Column("last_used_at", Seconds),
    sa.CheckConstraint("length(name) BETWEEN 1 AND 50"),
    sa.CheckConstraint("scope IN ('view', 'control')"),
    sa.UniqueConstraint("user_id", "name").ddl_if(dialect="sqlite"),
)
sa.Index(
    "api_tokens_user_name_lower",
    api_tokens.c.user_id,
    sa.func.lower(api_tokens.c.name),
    unique=True,
).ddl_if(dialect="postgresql")


def same_name(
    column: sa.ColumnElement[str], name: str | sa.BindParameter[str]
) -> ColumnElement[bool]:
    """``column`` equals ``name`` ignoring case (the rule of the unique indexes)."""
    value = sa.literal(name, sa.Text) if isinstance(name, str) else name
    return sa.func.lower(column) == sa.func.lower(value)


class name_order(FunctionElement[str]):  # noqa: N801 - used like a SQL function
    """Sort key for a name ignoring case, byte order otherwise, on either engine.

    SQLite: ``lower(x)`` (what ``COLLATE NOCASE`` compares). PostgreSQL: ``lower(x)
    COLLATE "C"``, so that the server's locale does not reorder punctuation.
    """

    type = sa.Text()
    name = "name_order"
    inherit_cache = True


@compiles(name_order)
def _name_order(element: name_order, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(name_order, "postgresql")
def _name_order_postgresql(element: name_order, compiler: SQLCompiler, **kw: Any) -> str:
    return f'lower({compiler.process(element.clauses, **kw)}) COLLATE "C"'


#: A camera's settings (CONTRACT §6). ``kind`` NULL: detected from the URL's answer;
#: ``max_fps``/``idle_close`` NULL: the daemon's options.
cameras = sa.Table(
    "cameras",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("kind", sa.Text),
    sa.Column("max_fps", Seconds),
    sa.Column("idle_close", Seconds),
    sa.Column("access", sa.Text, nullable=False, server_default="control"),
    sa.Column("control", sa.Text, nullable=False, server_default="shared"),
    sa.Column("created_at", Seconds, nullable=False),
    sa.Column("updated_at", Seconds, nullable=False),
    sa.CheckConstraint("kind IS NULL OR kind IN ('robocam', 'esp32', 'mjpeg', 'jpeg')"),
    sa.CheckConstraint("access IN ('none', 'view', 'control')"),
    sa.CheckConstraint("control IN ('shared', 'exclusive')"),
)

#: A user's access level on one camera, instead of the camera's default access.
camera_grants = sa.Table(
    "camera_grants",
    metadata,
    sa.Column(
        "camera_id", sa.Text, sa.ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("level", sa.Text, nullable=False),
    sa.CheckConstraint("level IN ('none', 'view', 'control')"),
    sa.Index("camera_grants_by_user", "user_id"),
)

#: The cameras a token is limited to (no rows: every camera its user may access).
api_token_cameras = sa.Table(
    "api_token_cameras",
    metadata,
    sa.Column(
        "token_id", sa.Text, sa.ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "camera_id", sa.Text, sa.ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True
    ),
)

#: One row counting changes to cameras and grants: a running daemon polls it to apply
#: changes made from the shell or by another daemon.
camera_changes = sa.Table(
    "camera_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.CheckConstraint("id = 1"),
)
