-- Webhooks: each project's endpoints, the outbox of events (one row per event, written in the
-- transaction that makes a batch terminal, only while its project has an endpoint), and one
-- delivery row per (event, subscribed endpoint), made from an event by the worker that fans it
-- out, deleted once delivered or given up. A delivery's lease and its next try share due_at.
CREATE TABLE webhook_endpoints (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    project          TEXT NOT NULL,
    name             TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_types      TEXT NOT NULL,
    secret           TEXT NOT NULL,
    old_secret       TEXT,
    old_secret_until INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_by_project ON webhook_endpoints (project, seq);
CREATE TABLE webhook_events (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    project    TEXT NOT NULL,
    type       TEXT NOT NULL,
    batch_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE webhook_deliveries (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    type        TEXT NOT NULL,
    batch_id    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_at      REAL NOT NULL,
    lease_owner TEXT,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id);
