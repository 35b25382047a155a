-- Schema version 7: scale-out (docs/operations.md, "Running several processes").
-- leases: one row per lease (name 'jobs': the periodic jobs). holder = the instance holding it,
-- generation = bumped at every change of holder (a fenced job transaction checks it), expires =
-- the holder's clock + lease_ttl at its last renewal. fences = counts the fenced transactions: each
-- one writes the row (a real change), so that on a Galera cluster certification orders it against a
-- takeover made through another node (a locking read alone is not certified across nodes).
CREATE TABLE leases (
    name VARCHAR(32) NOT NULL PRIMARY KEY,
    holder VARCHAR(128) NOT NULL,
    generation BIGINT NOT NULL,
    acquired DOUBLE NOT NULL,
    renewed DOUBLE NOT NULL,
    expires DOUBLE NOT NULL,
    fences BIGINT NOT NULL DEFAULT 0
);

-- rate_buckets: the token buckets of the per-client rate limits, shared by every instance.
-- bucket = '<limit>:<client key>', tokens = what was left at ``updated``.
CREATE TABLE rate_buckets (
    bucket VARCHAR(96) NOT NULL PRIMARY KEY,
    tokens DOUBLE NOT NULL,
    updated DOUBLE NOT NULL
);
CREATE INDEX rate_buckets_updated ON rate_buckets (updated);

-- the jobs lease exists from the start, held by nobody (expired, generation 0), so taking it is
-- always an UPDATE of one locked row (two instances starting at once never race on an INSERT)
INSERT INTO leases (name, holder, generation, acquired, renewed, expires) VALUES ('jobs', '', 0, 0, 0, 0);
