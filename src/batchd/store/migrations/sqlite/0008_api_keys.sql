-- API keys made by `batchd keys create`. Only a SHA-256 hash of each key is kept (the key itself
-- is shown once, when made), with its first characters to tell keys apart.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    name        TEXT,
    prefix      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
-- A project's unfinished batches, counted for its quotas at every batch created.
CREATE INDEX batches_unfinished_by_project ON batches (project)
    WHERE status IN ('cancelling', 'finalizing', 'in_progress', 'validating');
