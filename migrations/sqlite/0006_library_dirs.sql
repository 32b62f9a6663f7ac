-- Per-directory image counts, kept exact by triggers in the same transaction as every insert,
-- delete, move or (re)index of an asset, whichever code path writes it: the library tree,
-- directory listings, scans, admission and session creation read these (O(directories))
-- instead of walking the disk or reading every asset (O(images)) per request.
-- `path` is the directory that directly holds the images (no trailing slash); counts are direct
-- (not recursive: the reader folds them up the tree). A directory left with no image is deleted.
-- `changed_at` is the last time anything about its assets changed (the library version).
CREATE TABLE library_dirs (
    path            TEXT    PRIMARY KEY,
    images          INTEGER NOT NULL DEFAULT 0,
    indexed         INTEGER NOT NULL DEFAULT 0,
    last_indexed_at INTEGER,
    changed_at      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The directory of a path: everything before the last '/'. rtrim strips the trailing run of
-- characters that are not '/' (the set is every non-'/' character of the path itself).
CREATE TRIGGER library_dirs_insert AFTER INSERT ON image_assets BEGIN
    INSERT INTO library_dirs (path, images, indexed, last_indexed_at, changed_at)
    VALUES (substr(NEW.path, 1, length(rtrim(NEW.path, replace(NEW.path, '/', ''))) - 1), 1,
            NEW.indexed_at IS NOT NULL, NEW.indexed_at, NEW.updated_at)
    ON CONFLICT (path) DO UPDATE SET
        images = images + 1,
        indexed = indexed + excluded.indexed,
        last_indexed_at = max(coalesce(last_indexed_at, excluded.last_indexed_at), coalesce(excluded.last_indexed_at, last_indexed_at)),
        changed_at = max(changed_at, excluded.changed_at);
END;

CREATE TRIGGER library_dirs_delete AFTER DELETE ON image_assets BEGIN
    UPDATE library_dirs SET
        images = images - 1,
        indexed = indexed - (OLD.indexed_at IS NOT NULL),
        changed_at = max(changed_at, CAST(strftime('%s', 'now') AS INTEGER) * 1000)
    WHERE path = substr(OLD.path, 1, length(rtrim(OLD.path, replace(OLD.path, '/', ''))) - 1);
    DELETE FROM library_dirs WHERE path = substr(OLD.path, 1, length(rtrim(OLD.path, replace(OLD.path, '/', ''))) - 1) AND images <= 0;
END;

-- A move, or an index stamp set or cleared: out of the old directory's counts, into the new one's.
CREATE TRIGGER library_dirs_update AFTER UPDATE OF path, indexed_at, updated_at ON image_assets BEGIN
    UPDATE library_dirs SET
        images = images - 1,
        indexed = indexed - (OLD.indexed_at IS NOT NULL)
    WHERE path = substr(OLD.path, 1, length(rtrim(OLD.path, replace(OLD.path, '/', ''))) - 1);
    INSERT INTO library_dirs (path, images, indexed, last_indexed_at, changed_at)
    VALUES (substr(NEW.path, 1, length(rtrim(NEW.path, replace(NEW.path, '/', ''))) - 1), 1,
            NEW.indexed_at IS NOT NULL, NEW.indexed_at,
            max(NEW.updated_at, coalesce(NEW.indexed_at, 0), CAST(strftime('%s', 'now') AS INTEGER) * 1000))
    ON CONFLICT (path) DO UPDATE SET
        images = images + 1,
        indexed = indexed + excluded.indexed,
        last_indexed_at = max(coalesce(last_indexed_at, excluded.last_indexed_at), coalesce(excluded.last_indexed_at, last_indexed_at)),
        changed_at = max(changed_at, excluded.changed_at);
    DELETE FROM library_dirs WHERE path = substr(OLD.path, 1, length(rtrim(OLD.path, replace(OLD.path, '/', ''))) - 1) AND images <= 0;
END;

-- What the catalog already holds, counted once.
INSERT INTO library_dirs (path, images, indexed, last_indexed_at, changed_at)
SELECT substr(path, 1, length(rtrim(path, replace(path, '/', ''))) - 1), COUNT(*), COUNT(indexed_at), MAX(indexed_at), MAX(updated_at)
FROM image_assets GROUP BY 1;

-- A start or restart in progress (status 'discovering') says which, so a daemon that finds it
-- interrupted (its own crash, or a dead peer's) resumes it instead of dropping it: job creation
-- is idempotent, so resuming is doing it again from the beginning.
ALTER TABLE training_sessions ADD COLUMN discovery TEXT;

-- Regular files that are not images, per directory, as the watcher's last walk of it found them
-- (the catalog does not catalogue them; listings show how many there are).
CREATE TABLE library_other_files (
    path  TEXT   PRIMARY KEY,
    files BIGINT NOT NULL
);
