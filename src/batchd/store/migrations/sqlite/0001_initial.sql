CREATE TABLE files (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    project     TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    filename    TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    blob_key    TEXT NOT NULL
);
CREATE INDEX files_by_project ON files (project, purpose, seq);

CREATE TABLE batches (
    id                   TEXT NOT NULL UNIQUE,
    project              TEXT NOT NULL,
    seq                  INTEGER PRIMARY KEY,
    endpoint             TEXT NOT NULL,
    input_file_id        TEXT NOT NULL,
    completion_window    TEXT NOT NULL,
    status               TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    metadata             TEXT,
    output_expires_after INTEGER,
    model                TEXT,
    errors               TEXT,
    output_file_id       TEXT,
    error_file_id        TEXT,
    in_progress_at       INTEGER,
    finalizing_at        INTEGER,
    completed_at         INTEGER,
    failed_at            INTEGER,
    expired_at           INTEGER,
    cancelling_at        INTEGER,
    cancelled_at         INTEGER,
    total                INTEGER NOT NULL DEFAULT 0,
    completed            INTEGER NOT NULL DEFAULT 0,
    failed               INTEGER NOT NULL DEFAULT 0,
    input_tokens         INTEGER NOT NULL DEFAULT 0,
    cached_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens        INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens     INTEGER NOT NULL DEFAULT 0,
    total_tokens         INTEGER NOT NULL DEFAULT 0,
    lease_owner          TEXT,
    lease_until          REAL
);
CREATE INDEX batches_by_project ON batches (project, seq);
CREATE INDEX batches_by_status ON batches (status);

CREATE TABLE requests (
    batch_id     TEXT NOT NULL,
    line         INTEGER NOT NULL,
    custom_id    TEXT NOT NULL,
    byte_offset  INTEGER NOT NULL,
    byte_length  INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  REAL,
    result       BLOB,
    PRIMARY KEY (batch_id, line)
) WITHOUT ROWID;
CREATE INDEX requests_pending ON requests (batch_id, line) WHERE state = 'pending';
CREATE INDEX requests_running ON requests (lease_owner, lease_until) WHERE state = 'running';
