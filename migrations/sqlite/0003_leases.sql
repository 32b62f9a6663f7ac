-- Fencing tokens: every claim of a job bumps its lease_token, and a completion or failure is
-- accepted only with the token of the claim it belongs to, so a stalled worker that wakes up
-- after its lease was taken over (even by its own daemon) changes nothing.
ALTER TABLE training_jobs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
-- Which daemon is discovering a session (a start in progress), so recovery resets only the
-- starts of daemons that are gone.
ALTER TABLE training_sessions ADD COLUMN owner TEXT;
-- Every daemon sharing the catalog, with its last heartbeat.
CREATE TABLE daemons (
    owner        TEXT    PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    version      TEXT
);
