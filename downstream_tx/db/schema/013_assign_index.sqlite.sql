-- Schema version 13: chunk assignment that walks only the files below their target (db/contracts.py:
-- assign_txn; docs/capacity.md). missing = the replicas a file lacks, kept by the database (a
-- VIRTUAL generated column, SQLite >= 3.31: SQLite cannot add a STORED one; the indexes hold its
-- value). The two indexes give the assignment's two orders without a sort: most missing first
-- (files_urgent) and fewest missing first (files_missing), ties by oldest id; a file at its target
-- (missing = 0) is never visited.
ALTER TABLE files ADD COLUMN missing INTEGER AS (redundancy - replicas) VIRTUAL;
CREATE INDEX files_missing ON files (removed, kind, missing, id);
CREATE INDEX files_urgent ON files (removed, kind, missing DESC, id);
