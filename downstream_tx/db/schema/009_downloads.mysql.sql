-- Schema version 9: downloads are capabilities of one v0 contract (docs/protocol-v0.md, "Downloads").
-- contracts.download_key: SHA-256 of the contract's random download key (the key itself is only in
-- the URL handed to the farmer, never stored); NULL for v1 contracts and for v0 contracts made
-- before this version (their files can no longer be downloaded).
-- contracts.download_start: when the first download was served (the window starts);
-- downloads: downloads served; redownloads: those served after the window closed (only with the
-- `redownload` setting); downloads_refused: requests with the contract's key that were refused
-- (window closed, or the contract is over).
-- contract_totals: the same counts of archived contracts.
-- One ALTER per table: new trailing columns with defaults (MariaDB adds them in place).
ALTER TABLE contracts ADD COLUMN download_key VARBINARY(32), ADD COLUMN download_start DOUBLE,
    ADD COLUMN downloads INTEGER NOT NULL DEFAULT 0, ADD COLUMN redownloads INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN downloads_refused INTEGER NOT NULL DEFAULT 0;

ALTER TABLE contract_totals ADD COLUMN downloads BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN redownloads BIGINT NOT NULL DEFAULT 0, ADD COLUMN downloads_refused BIGINT NOT NULL DEFAULT 0;
