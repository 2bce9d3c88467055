-- Lines are claimed by span and their results appended to a table of their own. The request rows
-- are written once, at validation, and never again. Before, each line's row was rewritten on claim
-- and again (grown by its whole output line) on result, leaving dead tuples in the table and in
-- two partial indexes that claims walked past until VACUUM.
--   spans:   a run of fresh lines one worker holds (one row per claim, not per line), `open`
--            counts its lines without a result that have not moved to `retries`.
--   retries: lines to try again (or given back unsent), each with its attempts and lease.
--   results: the finished lines.
-- Batches running across the upgrade: every unfinished line becomes a retry with its attempts so
-- far, and the batch's cursor of fresh lines is moved past its last line.
CREATE TABLE results (
    batch_id  TEXT NOT NULL,
    line      INTEGER NOT NULL,
    state     TEXT NOT NULL,
    result    BYTEA,
    PRIMARY KEY (batch_id, line)
);
INSERT INTO results (batch_id, line, state, result)
    SELECT batch_id, line, state, result FROM requests WHERE state NOT IN ('pending', 'running');
CREATE TABLE retries (
    batch_id     TEXT NOT NULL,
    line         INTEGER NOT NULL,
    attempts     INTEGER NOT NULL,
    not_before   DOUBLE PRECISION,
    lease_owner  TEXT,
    lease_until  DOUBLE PRECISION,
    PRIMARY KEY (batch_id, line)
);
INSERT INTO retries (batch_id, line, attempts, not_before)
    SELECT batch_id, line, attempts, not_before FROM requests WHERE state IN ('pending', 'running');
CREATE INDEX retries_leased ON retries (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE spans (
    batch_id     TEXT NOT NULL,
    first_line   INTEGER NOT NULL,
    last_line    INTEGER NOT NULL,
    open         INTEGER NOT NULL,
    lease_owner  TEXT NOT NULL,
    lease_until  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (batch_id, first_line)
);
CREATE INDEX spans_by_owner ON spans (lease_owner);
ALTER TABLE batches ADD COLUMN next_line INTEGER NOT NULL DEFAULT 0;
UPDATE batches SET next_line = coalesce(
    (SELECT max(line) FROM requests WHERE requests.batch_id = batches.id), 0);
DROP INDEX requests_pending;
DROP INDEX requests_running;
ALTER TABLE requests DROP COLUMN state, DROP COLUMN attempts, DROP COLUMN lease_owner,
    DROP COLUMN lease_until, DROP COLUMN result, DROP COLUMN not_before;
-- Request rows are now only inserted and deleted: the default vacuum thresholds suit them again.
ALTER TABLE requests RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold
);
