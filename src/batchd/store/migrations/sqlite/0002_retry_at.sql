ALTER TABLE requests ADD COLUMN not_before REAL;
