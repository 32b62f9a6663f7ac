-- Categories (the replaced service's grouping of sessions and their images). The default
-- category "General" always exists and cannot be deleted.
CREATE TABLE categories (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT,
    color       TEXT,
    is_default  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
INSERT INTO categories (name, description, color, is_default, created_at, updated_at)
VALUES ('General', 'Default category for sessions and images', '#6b7280', 1,
        CAST(strftime('%s','now') AS INTEGER) * 1000, CAST(strftime('%s','now') AS INTEGER) * 1000);
CREATE INDEX training_sessions_category ON training_sessions(category_id);
