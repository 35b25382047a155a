-- Schema version 11: fair verdicts (docs/operations.md "Reputation").
-- tokens.last_seen: when the token's farmer last made a request (written at most once per
-- last_seen_every seconds per token, and at least once per online window it is seen in).
-- contracts.network: the key of the network (IPv4 /24, IPv6 /48 by default; a hash, never the
-- address) the contract was assigned to, so a file's replicas go to distinct networks.
-- reputation.online_window: the last online window counted in the online score (NULL: none yet).
ALTER TABLE tokens ADD COLUMN last_seen DOUBLE;
ALTER TABLE contracts ADD COLUMN network VARCHAR(32);
ALTER TABLE reputation ADD COLUMN online_window BIGINT;
-- reputation.vetted: the node's own verdict (1: preferred), as it judged at the farmer's last request for work
ALTER TABLE reputation ADD COLUMN vetted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX reputation_online ON reputation (online_window);
-- the online score now counts online windows (online_lambda 0.97 per window): it starts afresh at
-- its steady state 1 / (1 - 0.97); likewise the unknown-error score for its own factor 0.98
UPDATE reputation SET online_alpha = 100.0 / 3, online_beta = 0, unknown_alpha = 50 WHERE unknown_beta = 0;
UPDATE reputation SET online_alpha = 100.0 / 3, online_beta = 0;
-- the vetting counters start again: assignments while nobody was vetted no longer count
UPDATE vetting SET total = 0, unvetted = 0;
