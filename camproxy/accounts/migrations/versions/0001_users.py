"""Schema version 1: user accounts.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _flag(name: str, default: bool) -> sa.Column[bool]:
    return sa.Column(
        name,
        sa.Boolean(create_constraint=False).with_variant(sa.Integer(), "sqlite"),
        nullable=False,
        server_default=sa.true() if default else sa.false(),
    )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # Times are POSIX seconds (UTC), as the injected clock gives them.
    seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    # Names ignore case: SQLite's NOCASE collation, or an index on lower() below.
    name = sa.Text().with_variant(sa.Text(collation="NOCASE"), "sqlite")
    constraints: list[sa.Constraint] = []
    if sqlite:
        constraints += [
            sa.CheckConstraint(f"{flag} IN (0, 1)")
            for flag in ("is_admin", "active", "can_control")
        ]
        constraints.append(sa.UniqueConstraint("username"))
    op.create_table(
        "users",
        # A UUID as text: the Flask version's ids are kept as they are.
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("username", name, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        _flag("is_admin", False),
        _flag("active", True),
        _flag("can_control", True),
        sa.Column("created_at", seconds, nullable=False),
        sa.Column("updated_at", seconds, nullable=False),
        sa.Column("last_login", seconds),
        *constraints,
    )
    if not sqlite:
        op.create_index("users_username_lower", "users", [sa.text("lower(username)")], unique=True)


def downgrade() -> None:
    op.drop_table("users")
