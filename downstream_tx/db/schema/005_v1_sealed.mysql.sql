-- Schema version 5: a v1 contract's heartbeat state in binary columns (the "sealed" state) instead of
-- JSON text: hb_seed (the current challenge's seed, which is also the state's seed), hb_n, hb_root,
-- hb_hmac, hb_time (str() of the state's timestamp, as signed). The state's index is seq + 1.
-- Rows written before this step keep hb_state/hb_challenge until their next refresh rewrites them.
ALTER TABLE contracts ADD COLUMN hb_seed VARBINARY(64), ADD COLUMN hb_n INT, ADD COLUMN hb_root VARBINARY(64),
    ADD COLUMN hb_hmac VARBINARY(64), ADD COLUMN hb_time VARCHAR(40);

-- A v1 contract's tag (JSON, 6-24 KB) moves out of the contract row into its own table, so that the
-- two writes of every challenge cycle rewrite a small row (an engine that stores a row whole, as
-- SQLite does, rewrote the tag with it).
CREATE TABLE contract_tags (
    contract_id BIGINT NOT NULL PRIMARY KEY,
    tag MEDIUMTEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO contract_tags (contract_id, tag) SELECT id, tag FROM contracts WHERE tag IS NOT NULL;
UPDATE contracts SET tag = NULL WHERE tag IS NOT NULL;
