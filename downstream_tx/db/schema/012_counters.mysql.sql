-- Schema version 12: kept counters (db/counters.py; docs/operations.md, "Statistics").
-- counters: the counts the stats job, dashboard and metrics read, kept by the writes that change
-- them, in the same transaction: name (contracts.<state>, unanswered.<protocol>, tokens.live),
-- slot (concurrent writers add to different rows: each pool thread its own) and n. A counter's
-- value is the sum of its slots. This step's filling from the existing rows is done by the code
-- (db/counters.py: fill_txn), in bounded ranges of contract ids.
CREATE TABLE counters (
    name VARCHAR(64) NOT NULL,
    slot SMALLINT NOT NULL,
    n BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (name, slot)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
-- Per token: its active contracts and their bytes (the status list counts online contracts from
-- them, less the active ones past their deadline: db/status.py). Kept by the same writes.
ALTER TABLE tokens ADD COLUMN active_contracts BIGINT NOT NULL DEFAULT 0, ADD COLUMN active_size BIGINT NOT NULL DEFAULT 0;
