-- CamProxy schema version 2: login sessions, kept across restarts.

CREATE TABLE sessions (
    -- SHA-256 (hex) of the session id: a stolen database file yields no usable cookie.
    id_hash    TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);

CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
