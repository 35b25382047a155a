-- Schema version 3: protocol v1 contract timing and the indexes its timers scan.
-- contracts.due is the absolute time the current v1 challenge is due; for v1 contracts
-- contracts.deadline holds the expiration (due + interval when answered, else due).
ALTER TABLE contracts ADD COLUMN due DOUBLE;
CREATE INDEX contracts_ended ON contracts (ended);
CREATE INDEX seeded_pool_take ON seeded_pool (size, id);
