-- Schema version 13: chunk assignment that walks only the files below their target (db/contracts.py:
-- assign_txn; docs/capacity.md). missing = the replicas a file lacks, kept by the database
-- (STORED, MariaDB's PERSISTENT: computed when a row is written). The two indexes give the
-- assignment's two orders without a sort: most missing first (files_urgent) and fewest missing
-- first (files_missing), ties by oldest id; a file at its target (missing = 0) is never visited.
-- (MariaDB before 10.8 ignores DESC in an index: there the urgent order sorts the files below their
-- target, still none of the others.) Adding the column rebuilds the files table: ~100 s per 3.2M
-- files (docs/operations.md, "Upgrades").
ALTER TABLE files ADD COLUMN missing INTEGER AS (redundancy - replicas) STORED,
    ADD INDEX files_missing (removed, kind, missing, id),
    ADD INDEX files_urgent (removed, kind, missing DESC, id);
