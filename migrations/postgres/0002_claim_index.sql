-- Claims take each running session's first pending jobs in id order (LATERAL … ORDER BY id
-- LIMIT n); this index serves that walk without sorting a big session's backlog.
CREATE INDEX training_jobs_claim ON training_jobs(session_id, status, id);
