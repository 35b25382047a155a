-- Schema version 6: farmer reputation (docs/operations.md "Reputation"). One row per farmer, a
-- farmer being a payout address (every token of the address shares it). Scores are beta
-- reputations with forgetting: score = alpha / (alpha + beta); a new farmer starts at
-- alpha = 1 / (1 - lambda) = 1000, beta = 0 (the steady state of a farmer that always passes).
-- status: ok | suspended | disqualified; pending_end = 1 while a disqualified farmer still holds
-- active contracts (the reputation job ends them).
CREATE TABLE reputation (
    address VARCHAR(64) NOT NULL PRIMARY KEY,
    audit_alpha DOUBLE NOT NULL DEFAULT 1000,
    audit_beta DOUBLE NOT NULL DEFAULT 0,
    online_alpha DOUBLE NOT NULL DEFAULT 1000,
    online_beta DOUBLE NOT NULL DEFAULT 0,
    unknown_alpha DOUBLE NOT NULL DEFAULT 1000,
    unknown_beta DOUBLE NOT NULL DEFAULT 0,
    passes BIGINT NOT NULL DEFAULT 0,
    fails BIGINT NOT NULL DEFAULT 0,
    misses BIGINT NOT NULL DEFAULT 0,
    retries BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    status VARCHAR(16) NOT NULL DEFAULT 'ok',
    status_since DOUBLE,
    status_reason VARCHAR(200),
    pending_end INTEGER NOT NULL DEFAULT 0,
    updated DOUBLE
);
CREATE INDEX reputation_status ON reputation (status, pending_end);
CREATE INDEX reputation_vetted ON reputation (status, passes);

-- newly assigned contracts per protocol, and how many of them went to farmers not yet vetted
-- (the vetting share is checked and counted by one guarded UPDATE of the protocol's row)
CREATE TABLE vetting (
    protocol INTEGER NOT NULL PRIMARY KEY,
    total DOUBLE NOT NULL DEFAULT 0,
    unvetted DOUBLE NOT NULL DEFAULT 0
);
INSERT INTO vetting (protocol, total, unvetted) VALUES (0, 0, 0);
INSERT INTO vetting (protocol, total, unvetted) VALUES (1, 0, 0);

-- containment: how many times the contract's outstanding challenge was asked again after its
-- deadline passed unanswered (0: not contained)
ALTER TABLE contracts ADD COLUMN contained INTEGER NOT NULL DEFAULT 0;
CREATE INDEX contracts_contained ON contracts (contained, token_id);

-- farmers that exist already: their counts from their contracts (scores start fresh)
INSERT INTO reputation (address, passes, fails, misses)
SELECT t.address, COALESCE(SUM(c.passes), 0), COALESCE(SUM(c.fails), 0), COALESCE(SUM(c.misses), 0)
FROM tokens t LEFT JOIN contracts c ON c.token_id = t.id GROUP BY t.address;
