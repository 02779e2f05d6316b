"""CamProxy databases as versions before Alembic made them: the schema scripts verbatim.

Until Alembic took over, ``camproxy/schema/NNN_name.sql`` upgraded a SQLite file from
version NNN-1 to NNN and ``PRAGMA user_version`` recorded the version. Those scripts are
kept here, unchanged, to build such files (which CamProxy must recognize and upgrade)
and to check that the Alembic revisions make the same schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

SCRIPTS: Sequence[str] = (
    """-- CamProxy schema version 1: user accounts.
-- camproxy.db runs each numbered script inside one transaction and then sets
-- PRAGMA user_version to the script's number; scripts hold no BEGIN or COMMIT.

CREATE TABLE users (
    -- A UUID as text: the Flask version's ids are kept as they are.
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    active        INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    can_control   INTEGER NOT NULL DEFAULT 1 CHECK (can_control IN (0, 1)),
    -- Times are POSIX seconds (UTC), as the injected clock gives them.
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    last_login    REAL
);
""",
    """-- CamProxy schema version 2: login sessions, kept across restarts.

CREATE TABLE sessions (
    -- SHA-256 (hex) of the session id: a stolen database file yields no usable cookie.
    id_hash    TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);

CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
""",
    """-- CamProxy schema version 3: API tokens for integrations (MJPEG, snapshot, REST).
-- A revoked token's row is deleted, so its name is free again at once.

CREATE TABLE api_tokens (
    -- A UUID as text.
    id           TEXT PRIMARY KEY NOT NULL,
    -- Deleting a user deletes the user's tokens (camproxy.db turns foreign keys on).
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Unique per user, ignoring case; camproxy.tokens checks the characters.
    name         TEXT NOT NULL COLLATE NOCASE CHECK (length(name) BETWEEN 1 AND 50),
    scope        TEXT NOT NULL CHECK (scope IN ('view', 'control')),
    -- SHA-256 (hex) of the whole token: the token itself is shown once and never stored.
    token_hash   TEXT NOT NULL UNIQUE,
    -- The token's first characters, to tell tokens apart in listings.
    prefix       TEXT NOT NULL,
    -- POSIX seconds (UTC); last_used_at is NULL until first use and is written at
    -- most once a minute per token.
    created_at   REAL NOT NULL,
    last_used_at REAL,
    -- Also the index for "the tokens of a user" and for the cascade.
    UNIQUE (user_id, name)
);
""",
)


def create_camproxy_database(path: Path, version: int, statements: Sequence[str] = ()) -> None:
    """A CamProxy SQLite file at schema ``version`` (1 to 3), as CamProxy made it then,
    with ``statements`` run after the schema (to add rows)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA journal_mode = WAL")
        for script in SCRIPTS[:version]:
            connection.executescript(script)
        connection.execute(f"PRAGMA user_version = {version:d}")
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()
