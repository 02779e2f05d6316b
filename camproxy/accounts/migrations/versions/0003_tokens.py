"""Schema version 3: API tokens for integrations (MJPEG, snapshot, REST).

A revoked token's row is deleted, so its name is free again at once.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    # Unique per user ignoring case: NOCASE on SQLite, an index on lower() elsewhere.
    name = sa.Text().with_variant(sa.Text(collation="NOCASE"), "sqlite")
    unique_name = [sa.UniqueConstraint("user_id", "name")] if sqlite else []
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Text, primary_key=True),
        # Deleting a user deletes the user's tokens.
        sa.Column(
            "user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", name, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        # SHA-256 (hex) of the whole token: the token itself is shown once, never stored.
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        # The token's first characters, to tell tokens apart in listings.
        sa.Column("prefix", sa.Text, nullable=False),
        # last_used_at is NULL until first use, then written at most once a minute.
        sa.Column("created_at", seconds, nullable=False),
        sa.Column("last_used_at", seconds),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 50"),
        sa.CheckConstraint("scope IN ('view', 'control')"),
        *unique_name,
    )
    if not sqlite:
        op.create_index(
            "api_tokens_user_name_lower",
            "api_tokens",
            ["user_id", sa.text("lower(name)")],
            unique=True,
        )


def downgrade() -> None:
    op.drop_table("api_tokens")
