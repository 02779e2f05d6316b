"""Schema version 2: login sessions, kept across restarts.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    op.create_table(
        "sessions",
        # SHA-256 (hex) of the session id: a stolen database yields no usable cookie.
        sa.Column("id_hash", sa.Text, primary_key=True),
        sa.Column(
            "user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", seconds, nullable=False),
        sa.Column("expires_at", seconds, nullable=False),
    )
    op.create_index("sessions_by_user", "sessions", ["user_id"])
    op.create_index("sessions_by_expiry", "sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("sessions")
