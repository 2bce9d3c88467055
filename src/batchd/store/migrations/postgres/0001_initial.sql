CREATE TABLE files (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    project     TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    filename    TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    blob_key    TEXT NOT NULL
);
CREATE INDEX files_by_project ON files (project, purpose, seq);

CREATE TABLE batches (
    id                   TEXT NOT NULL UNIQUE,
    project              TEXT NOT NULL,
    seq                  BIGSERIAL PRIMARY KEY,
    endpoint             TEXT NOT NULL,
    input_file_id        TEXT NOT NULL,
    completion_window    TEXT NOT NULL,
    status               TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL,
    metadata             TEXT,
    output_expires_after BIGINT,
    model                TEXT,
    errors               TEXT,
    output_file_id       TEXT,
    error_file_id        TEXT,
    in_progress_at       BIGINT,
    finalizing_at        BIGINT,
    completed_at         BIGINT,
    failed_at            BIGINT,
    expired_at           BIGINT,
    cancelling_at        BIGINT,
    cancelled_at         BIGINT,
    total                BIGINT NOT NULL DEFAULT 0,
    completed            BIGINT NOT NULL DEFAULT 0,
    failed               BIGINT NOT NULL DEFAULT 0,
    input_tokens         BIGINT NOT NULL DEFAULT 0,
    cached_tokens        BIGINT NOT NULL DEFAULT 0,
    output_tokens        BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens     BIGINT NOT NULL DEFAULT 0,
    total_tokens         BIGINT NOT NULL DEFAULT 0,
    lease_owner          TEXT,
    lease_until          DOUBLE PRECISION
);
CREATE INDEX batches_by_project ON batches (project, seq);
CREATE INDEX batches_by_status ON batches (status);

CREATE TABLE requests (
    batch_id     TEXT NOT NULL,
    line         INTEGER NOT NULL,
    custom_id    TEXT NOT NULL,
    byte_offset  BIGINT NOT NULL,
    byte_length  INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  DOUBLE PRECISION,
    result       BYTEA,
    PRIMARY KEY (batch_id, line)
);
CREATE INDEX requests_pending ON requests (batch_id, line) WHERE state = 'pending';
CREATE INDEX requests_running ON requests (lease_owner, lease_until) WHERE state = 'running';
