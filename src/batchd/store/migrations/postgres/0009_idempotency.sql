-- Which object a client's idempotency key made, and a digest of the parameters it came with:
-- a retried create with the same key answers with that object for a day.
CREATE TABLE idempotency_keys (
    project     TEXT NOT NULL,
    operation   TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project, operation, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
