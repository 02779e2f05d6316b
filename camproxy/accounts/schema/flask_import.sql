-- Imports the accounts of the Flask version of CamProxy (SQLAlchemy table "users",
-- PRAGMA user_version 0). camproxy.db has already renamed that table to flask_users
-- (adding an empty is_admin column where the Flask schema had none) and run
-- 001_initial.sql, all in the same transaction as this script.

INSERT INTO users (
    id, username, password_hash, is_admin, active, can_control,
    created_at, updated_at, last_login
)
SELECT
    id,
    username,
    password,
    CASE WHEN is_admin THEN 1 ELSE 0 END,
    -- SQLAlchemy's column default made new users active; NULL only came from raw SQL.
    CASE WHEN active IS NULL OR active THEN 1 ELSE 0 END,
    1,
    -- Flask stored naive local times ('YYYY-MM-DD HH:MM:SS.ffffff'); 'utc' converts them
    -- with this machine's time zone, the one the Flask version ran in.
    coalesce(
        (julianday(created_at, 'utc') - 2440587.5) * 86400.0,
        (julianday('now') - 2440587.5) * 86400.0
    ),
    coalesce(
        (julianday(updated_at, 'utc') - 2440587.5) * 86400.0,
        (julianday(created_at, 'utc') - 2440587.5) * 86400.0,
        (julianday('now') - 2440587.5) * 86400.0
    ),
    NULL
FROM flask_users;

DROP TABLE flask_users;
