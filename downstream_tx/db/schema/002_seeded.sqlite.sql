-- Schema version 2: protocol v1 (seeded chunks, Merkle heartbeat state, uptime).
CREATE TABLE seeded_pool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id BIGINT NOT NULL REFERENCES files (id),
    size BIGINT NOT NULL,
    hb_state TEXT NOT NULL,
    tag TEXT NOT NULL,
    created DOUBLE NOT NULL
);
CREATE INDEX seeded_pool_size ON seeded_pool (size);

ALTER TABLE contracts ADD COLUMN hb_state TEXT;
ALTER TABLE contracts ADD COLUMN hb_challenge TEXT;
ALTER TABLE contracts ADD COLUMN tag TEXT;

ALTER TABLE tokens ADD COLUMN uptime_start DOUBLE;
ALTER TABLE tokens ADD COLUMN uptime_end DOUBLE;
ALTER TABLE tokens ADD COLUMN upsum DOUBLE NOT NULL DEFAULT 0;
