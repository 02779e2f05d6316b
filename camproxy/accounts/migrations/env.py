"""Alembic's entry point, loaded by Alembic from ``camproxy.accounts.migrate``.

The caller puts an open SQLAlchemy connection, already inside its transaction, in
``config.attributes["connection"]``; migrations run in that transaction (Alembic begins
none of its own), so the caller's lock and its commit or rollback cover them all.
"""

from __future__ import annotations

from alembic import context

from camproxy.accounts.tables import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "CamProxy runs its migrations itself (camproxy.accounts.migrate), with a connection"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
)
with context.begin_transaction():
    context.run_migrations()
