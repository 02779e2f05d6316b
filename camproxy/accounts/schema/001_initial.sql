-- CamProxy schema version 1: user accounts.
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
