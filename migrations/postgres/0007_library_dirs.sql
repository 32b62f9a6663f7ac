-- Per-directory image counts, kept exact by a trigger in the same transaction as every insert,
-- delete, move or (re)index of an asset, whichever code path (or daemon) writes it: the library
-- tree, directory listings, scans, admission and session creation read these (O(directories))
-- instead of walking the disk or reading every asset (O(images)) per request.
-- `path` is the directory that directly holds the images (no trailing slash); counts are direct
-- (not recursive: the reader folds them up the tree). A directory left with no image is deleted.
-- `changed_at` is the last time anything about its assets changed (the library version).
CREATE TABLE library_dirs (
    path            TEXT   PRIMARY KEY,
    images          BIGINT NOT NULL DEFAULT 0,
    indexed         BIGINT NOT NULL DEFAULT 0,
    last_indexed_at BIGINT,
    changed_at      BIGINT NOT NULL DEFAULT 0
);

CREATE FUNCTION pixdex_dir_of(p TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS
$$ SELECT regexp_replace(p, '/[^/]*$', '') $$;

CREATE FUNCTION pixdex_library_dirs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_ms BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE library_dirs SET
            images = images - 1,
            indexed = indexed - (CASE WHEN OLD.indexed_at IS NOT NULL THEN 1 ELSE 0 END),
            changed_at = GREATEST(changed_at, now_ms)
        WHERE path = pixdex_dir_of(OLD.path);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO library_dirs AS d (path, images, indexed, last_indexed_at, changed_at)
        VALUES (pixdex_dir_of(NEW.path), 1, CASE WHEN NEW.indexed_at IS NOT NULL THEN 1 ELSE 0 END, NEW.indexed_at,
                GREATEST(NEW.updated_at, COALESCE(NEW.indexed_at, 0)))
        ON CONFLICT (path) DO UPDATE SET
            images = d.images + 1,
            indexed = d.indexed + excluded.indexed,
            last_indexed_at = GREATEST(d.last_indexed_at, excluded.last_indexed_at),
            changed_at = GREATEST(d.changed_at, excluded.changed_at);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM library_dirs WHERE path = pixdex_dir_of(OLD.path) AND images <= 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER library_dirs_insert AFTER INSERT OR DELETE ON image_assets
    FOR EACH ROW EXECUTE FUNCTION pixdex_library_dirs();
CREATE TRIGGER library_dirs_update AFTER UPDATE OF path, indexed_at, updated_at ON image_assets
    FOR EACH ROW EXECUTE FUNCTION pixdex_library_dirs();

-- What the catalog already holds, counted once.
INSERT INTO library_dirs (path, images, indexed, last_indexed_at, changed_at)
SELECT pixdex_dir_of(path), COUNT(*), COUNT(indexed_at), MAX(indexed_at), COALESCE(MAX(updated_at), 0)
FROM image_assets GROUP BY 1;

-- Range scans by path prefix ('/photos/a/' ≤ path < '/photos/a0') need byte order whatever the
-- database's collation is; queries that scan a folder's images compare with COLLATE "C".
CREATE INDEX image_assets_path_c ON image_assets (path COLLATE "C");

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
