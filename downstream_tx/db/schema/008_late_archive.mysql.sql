-- Schema version 8: late answers (v0) and contract archiving.
-- contracts.prev_*: the previous window's challenge of a v0 contract when the timer turned the
-- window while it was outstanding (prev_missed = 1 when that counted a miss), so that an answer to
-- it that arrived in time, or within late_grace after its deadline, is still recognised
-- (docs/protocol-v0.md "Late answers"). contracts.late_passes counts those late passes (they are
-- passes too).
-- contract_totals: per token, what archiving removed from contracts (finished contracts older than
-- contract_retention), so that totals shown per farmer stay the same (docs/operations.md
-- "Contract archiving").
ALTER TABLE contracts ADD COLUMN prev_challenge_id BIGINT;
ALTER TABLE contracts ADD COLUMN prev_deadline DOUBLE;
ALTER TABLE contracts ADD COLUMN prev_missed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE contracts ADD COLUMN late_passes INTEGER NOT NULL DEFAULT 0;

CREATE TABLE contract_totals (
    token_id BIGINT NOT NULL PRIMARY KEY,
    ended BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    passes BIGINT NOT NULL DEFAULT 0,
    fails BIGINT NOT NULL DEFAULT 0,
    misses BIGINT NOT NULL DEFAULT 0,
    late_passes BIGINT NOT NULL DEFAULT 0,
    size BIGINT NOT NULL DEFAULT 0,
    v0 INTEGER NOT NULL DEFAULT 0,
    v1 INTEGER NOT NULL DEFAULT 0,
    last_start DOUBLE,
    last_answered DOUBLE,
    last_due DOUBLE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
