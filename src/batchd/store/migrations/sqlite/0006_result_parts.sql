-- Output lines are written once, by the worker that made them, to an append-only part file per
-- batch, worker and kind (output or error), and a result row holds where its line sits in a part
-- instead of the line itself. Finalizing copies whole parts when every byte in them belongs to a
-- committed result (`committed` = `written`), and reads line by line only otherwise.
--   written:   how far the part was written when its last group of results was committed,
--   committed: the bytes of its lines that were counted (a result whose lease was lost is not),
--   lines:     how many lines were counted.
-- Results committed before the upgrade keep their line in `result`.
CREATE TABLE result_parts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    written    INTEGER NOT NULL DEFAULT 0,
    committed  INTEGER NOT NULL DEFAULT 0,
    lines      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX result_parts_by_batch ON result_parts (batch_id);
ALTER TABLE results ADD COLUMN part INTEGER;
ALTER TABLE results ADD COLUMN part_offset INTEGER;
ALTER TABLE results ADD COLUMN part_length INTEGER;
CREATE INDEX results_unparted ON results (batch_id, line) WHERE part IS NULL;
