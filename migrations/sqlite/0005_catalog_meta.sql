-- Facts about the catalog itself. 'catalog_id': made once, the first time a daemon opens the
-- catalog; the vector store keeps it too, so vectors are never served to another catalog
-- (point id = asset id only means something in the catalog that numbered the assets).
CREATE TABLE catalog_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Directories under the library roots that were mount points (and of which device and inode)
-- when their images were catalogued: such a directory found unmounted and empty later is a
-- mount that is away, not a folder that was emptied (its assets and vectors are kept).
CREATE TABLE library_mounts (
    path    TEXT   PRIMARY KEY,
    dev     BIGINT NOT NULL,
    ino     BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);

-- A subdirectory's trained count reads its completed jobs through this index (without it,
-- every refresh scanned all jobs once per subdirectory: minutes per batch at 10^6 images).
CREATE INDEX training_jobs_subdir_status ON training_jobs(subdirectory_id, status);
-- Every claim first fails pending jobs claimed `max_attempts` times: through this index it reads
-- only those, not every pending job.
CREATE INDEX training_jobs_status_attempts ON training_jobs(status, attempts);
