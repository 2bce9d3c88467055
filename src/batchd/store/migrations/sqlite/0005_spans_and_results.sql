-- Lines are claimed by span and their results appended to a table of their own. The request rows
-- are written once, at validation, and never again. Before, each line's row was rewritten on claim
-- and again (grown by its whole output line) on result, and two partial indexes with it.
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
    result    BLOB,
    PRIMARY KEY (batch_id, line)
) WITHOUT ROWID;
INSERT INTO results (batch_id, line, state, result)
    SELECT batch_id, line, state, result FROM requests WHERE state NOT IN ('pending', 'running');
CREATE TABLE retries (
    batch_id     TEXT NOT NULL,
    line         INTEGER NOT NULL,
    attempts     INTEGER NOT NULL,
    not_before   REAL,
    lease_owner  TEXT,
    lease_until  REAL,
    PRIMARY KEY (batch_id, line)
) WITHOUT ROWID;
INSERT INTO retries (batch_id, line, attempts, not_before)
    SELECT batch_id, line, attempts, not_before FROM requests WHERE state IN ('pending', 'running');
CREATE INDEX retries_leased ON retries (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE spans (
    batch_id     TEXT NOT NULL,
    first_line   INTEGER NOT NULL,
    last_line    INTEGER NOT NULL,
    open         INTEGER NOT NULL,
    lease_owner  TEXT NOT NULL,
    lease_until  REAL NOT NULL,
    PRIMARY KEY (batch_id, first_line)
);
CREATE INDEX spans_by_owner ON spans (lease_owner);
ALTER TABLE batches ADD COLUMN next_line INTEGER NOT NULL DEFAULT 0;
UPDATE batches SET next_line = coalesce(
    (SELECT max(line) FROM requests WHERE requests.batch_id = batches.id), 0);
CREATE TABLE lines (
    batch_id     TEXT NOT NULL,
    line         INTEGER NOT NULL,
    custom_id    TEXT NOT NULL,
    byte_offset  INTEGER NOT NULL,
    byte_length  INTEGER NOT NULL,
    PRIMARY KEY (batch_id, line)
) WITHOUT ROWID;
INSERT INTO lines SELECT batch_id, line, custom_id, byte_offset, byte_length FROM requests;
DROP TABLE requests;
ALTER TABLE lines RENAME TO requests;
