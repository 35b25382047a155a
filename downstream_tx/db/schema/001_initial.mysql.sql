-- Schema version 1: addresses, tokens, stored files, hash challenges and contracts.
CREATE TABLE node_meta (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARBINARY(1024) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE addresses (
    address VARCHAR(64) NOT NULL PRIMARY KEY,
    balance BIGINT NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1,
    updated DOUBLE NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE tokens (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    token_hash VARBINARY(32) NOT NULL UNIQUE,
    farmer_id CHAR(20) NOT NULL,
    address VARCHAR(64) NOT NULL,
    ip_hash CHAR(64),
    location TEXT,
    message TEXT,
    signature VARCHAR(128),
    hbcount BIGINT NOT NULL DEFAULT 0,
    created DOUBLE NOT NULL,
    deleted DOUBLE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX tokens_address ON tokens (address, deleted);
CREATE INDEX tokens_ip ON tokens (ip_hash, deleted);
CREATE INDEX tokens_farmer ON tokens (farmer_id);

CREATE TABLE files (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    file_hash CHAR(64) NOT NULL,
    original_hash CHAR(64),
    kind VARCHAR(8) NOT NULL,
    size BIGINT NOT NULL,
    redundancy INTEGER NOT NULL,
    interval_s INTEGER NOT NULL,
    replicas INTEGER NOT NULL DEFAULT 0,
    encrypted INTEGER NOT NULL DEFAULT 0,
    enc_key VARBINARY(64),
    seed VARCHAR(64),
    added DOUBLE NOT NULL,
    removed DOUBLE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX files_hash ON files (file_hash, removed);
CREATE INDEX files_original ON files (original_hash, removed);
CREATE INDEX files_assign ON files (removed, kind, replicas);

CREATE TABLE challenge_batches (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    file_id BIGINT NOT NULL REFERENCES files (id),
    root_seed VARBINARY(32) NOT NULL,
    merkle_root VARBINARY(32) NOT NULL,
    count INTEGER NOT NULL,
    created DOUBLE NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX batches_file ON challenge_batches (file_id);

CREATE TABLE challenges (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    batch_id BIGINT NOT NULL REFERENCES challenge_batches (id),
    file_id BIGINT NOT NULL REFERENCES files (id),
    seq INTEGER NOT NULL,
    seed VARBINARY(32) NOT NULL,
    answer CHAR(64) NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX challenges_unused ON challenges (file_id, used, id);

CREATE TABLE contracts (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    token_id BIGINT NOT NULL REFERENCES tokens (id),
    file_id BIGINT NOT NULL REFERENCES files (id),
    protocol INTEGER NOT NULL DEFAULT 0,
    state VARCHAR(8) NOT NULL,
    start DOUBLE NOT NULL,
    interval_s INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    challenge_id BIGINT,
    issued DOUBLE,
    deadline DOUBLE,
    answered INTEGER NOT NULL DEFAULT 0,
    passes INTEGER NOT NULL DEFAULT 0,
    fails INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    run INTEGER NOT NULL DEFAULT 0,
    ended DOUBLE,
    end_reason VARCHAR(16)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX contracts_due ON contracts (state, protocol, deadline);
CREATE INDEX contracts_token ON contracts (token_id, state);
CREATE INDEX contracts_file ON contracts (file_id, state);
