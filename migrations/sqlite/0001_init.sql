-- pixdex catalog, SQLite dialect. Times are Unix milliseconds; booleans are 0/1 integers
-- (the same representation as the PostgreSQL dialect, so one set of queries serves both).

CREATE TABLE image_assets (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    path             TEXT    NOT NULL UNIQUE,
    file_size        INTEGER NOT NULL,
    file_modified_at INTEGER NOT NULL,
    width            INTEGER,
    height           INTEGER,
    content_hash     TEXT,
    labels           TEXT,
    indexed_at       INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE training_sessions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT    NOT NULL UNIQUE,
    status           TEXT    NOT NULL,
    root_path        TEXT    NOT NULL,
    category_id      INTEGER,
    config           TEXT    NOT NULL DEFAULT '{}',
    source           TEXT    NOT NULL DEFAULT 'api',
    auto_start       INTEGER NOT NULL DEFAULT 0,
    live             INTEGER NOT NULL DEFAULT 1,
    total_images     INTEGER NOT NULL DEFAULT 0,
    processed_images INTEGER NOT NULL DEFAULT 0,
    failed_images    INTEGER NOT NULL DEFAULT 0,
    skipped_images   INTEGER NOT NULL DEFAULT 0,
    pending_reason   TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    paused_at        INTEGER,
    completed_at     INTEGER
);
CREATE INDEX training_sessions_status ON training_sessions(status);

CREATE TABLE training_subdirectories (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id    INTEGER NOT NULL REFERENCES training_sessions(id) ON DELETE CASCADE,
    path          TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    selected      INTEGER NOT NULL DEFAULT 1,
    is_root       INTEGER NOT NULL DEFAULT 0,
    image_count   INTEGER NOT NULL DEFAULT 0,
    trained_count INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (session_id, path)
);

CREATE TABLE training_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id       INTEGER NOT NULL REFERENCES training_sessions(id) ON DELETE CASCADE,
    asset_id         INTEGER REFERENCES image_assets(id) ON DELETE SET NULL,
    subdirectory_id  INTEGER REFERENCES training_subdirectories(id) ON DELETE SET NULL,
    status           TEXT    NOT NULL,
    error_message    TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    UNIQUE (session_id, asset_id)
);
CREATE INDEX training_jobs_session_status ON training_jobs(session_id, status);
CREATE INDEX training_jobs_status_lease ON training_jobs(status, lease_expires_at);
CREATE INDEX training_jobs_asset ON training_jobs(asset_id);

CREATE TABLE ignored_directories (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    path       TEXT    NOT NULL UNIQUE,
    reason     TEXT,
    created_at INTEGER NOT NULL
);
