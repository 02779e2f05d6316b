-- CamProxy schema version 3: API tokens for integrations (MJPEG, snapshot, REST).
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
