-- Schema version 4: the dashboard's per-hour challenge results and each token's GeoIP country.
-- history: one row per (hour, source); hour = the hour's start (epoch seconds / 3600), source = the
-- node process that counted (each process writes its own totals, so a rewrite is idempotent).
CREATE TABLE history (
    hour BIGINT NOT NULL,
    source CHAR(16) NOT NULL,
    passes BIGINT NOT NULL DEFAULT 0,
    misses BIGINT NOT NULL DEFAULT 0,
    fails BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, source)
);

ALTER TABLE tokens ADD COLUMN country VARCHAR(64);
CREATE INDEX tokens_country ON tokens (deleted, country);
