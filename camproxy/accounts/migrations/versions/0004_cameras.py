"""Schema version 4: cameras, per-user grants, tokens limited to cameras (CONTRACT §6).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    op.create_table(
        "cameras",
        sa.Column("id", sa.Text, primary_key=True),
        # 1-32 of a-z, 0-9 and -, checked by camproxy.accounts.cameras: it is in URLs.
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        # NULL: detected from the first answer of the URL.
        sa.Column("kind", sa.Text),
        # NULL: the daemon's --max-fps and --idle-close.
        sa.Column("max_fps", seconds),
        sa.Column("idle_close", seconds),
        sa.Column("access", sa.Text, nullable=False, server_default="control"),
        sa.Column("control", sa.Text, nullable=False, server_default="shared"),
        sa.Column("created_at", seconds, nullable=False),
        sa.Column("updated_at", seconds, nullable=False),
        sa.CheckConstraint("kind IS NULL OR kind IN ('robocam', 'esp32', 'mjpeg', 'jpeg')"),
        sa.CheckConstraint("access IN ('none', 'view', 'control')"),
        sa.CheckConstraint("control IN ('shared', 'exclusive')"),
    )
    op.create_table(
        "camera_grants",
        sa.Column(
            "camera_id",
            sa.Text,
            sa.ForeignKey("cameras.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("level", sa.Text, nullable=False),
        sa.CheckConstraint("level IN ('none', 'view', 'control')"),
    )
    op.create_index("camera_grants_by_user", "camera_grants", ["user_id"])
    op.create_table(
        "api_token_cameras",
        sa.Column(
            "token_id",
            sa.Text,
            sa.ForeignKey("api_tokens.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "camera_id",
            sa.Text,
            sa.ForeignKey("cameras.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_table(
        "camera_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.CheckConstraint("id = 1"),
    )
    op.execute("INSERT INTO camera_changes (id, version) VALUES (1, 0)")


def downgrade() -> None:
    for table in ("camera_changes", "api_token_cameras", "camera_grants", "cameras"):
        op.drop_table(table)
