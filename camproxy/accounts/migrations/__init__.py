"""Alembic migrations of the accounts' schema, run by ``camproxy.accounts.migrate``.

Package data: ``env.py`` and ``versions/NNNN_name.py``. No ``alembic.ini`` is needed or
read: ``migrate.alembic_config`` builds the configuration in code, hands ``env.py`` an
open connection inside the transaction that holds the write lock, and Alembic records
the revision in the table ``camproxy_schema_version``.

To change the schema, add ``versions/NNNN_what.py`` with ``revision = "NNNN"`` (the next
number: it is also the schema version that ``camproxy db check`` shows and that SQLite's
``PRAGMA user_version`` mirrors) and ``down_revision`` the previous one; write it with
``op`` so that it runs on SQLite and PostgreSQL alike (``op.get_bind().dialect.name``
where they must differ); change ``tables.py`` to match (``tests/test_migrations.py``
compares the two); and leave older revisions alone, they are history.
"""
