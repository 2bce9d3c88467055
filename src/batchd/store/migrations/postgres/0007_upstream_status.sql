-- Each worker's view of its upstreams (GET /v1/upstreams), rewritten when it changes and every
-- few seconds. A worker that stops deletes its rows, and rows not rewritten for a while are stale.
CREATE TABLE upstream_status (
    worker        TEXT NOT NULL,
    upstream      TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT,
    since         DOUBLE PRECISION,
    lines_waiting INTEGER NOT NULL,
    batches       INTEGER NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (worker, upstream)
);
-- One row per process, rewritten to check that the store takes writes (/readyz).
CREATE TABLE write_checks (
    process TEXT PRIMARY KEY,
    at      DOUBLE PRECISION NOT NULL
);
