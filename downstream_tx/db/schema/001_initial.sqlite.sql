-- Schema version 1: addresses, tokens, stored files, hash challenges and contracts.
CREATE TABLE node_meta (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE addresses (
    address VARCHAR(64) NOT NULL PRIMARY KEY,
    balance BIGINT NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1,
    updated DOUBLE NOT NULL
);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash BLOB NOT NULL UNIQUE,
    farmer_id CHAR(20) NOT NULL,
    address VARCHAR(64) NOT NULL,
    ip_hash CHAR(64),
    location TEXT,
    message TEXT,
    signature VARCHAR(128),
    hbcount BIGINT NOT NULL DEFAULT 0,
    created DOUBLE NOT NULL,
    deleted DOUBLE
);
CREATE INDEX tokens_address ON tokens (address, deleted);
CREATE INDEX tokens_ip ON tokens (ip_hash, deleted);
CREATE INDEX tokens_farmer ON tokens (farmer_id);

CREATE TABLE files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_hash CHAR(64) NOT NULL,
    original_hash CHAR(64),
    kind VARCHAR(8) NOT NULL,
    size BIGINT NOT NULL,
    redundancy INTEGER NOT NULL,
    interval_s INTEGER NOT NULL,
    replicas INTEGER NOT NULL DEFAULT 0,
    encrypted INTEGER NOT NULL DEFAULT 0,
    enc_key BLOB,
    seed VARCHAR(64),
    added DOUBLE NOT NULL,
    removed DOUBLE
);
CREATE INDEX files_hash ON files (file_hash, removed);
CREATE INDEX files_original ON files (original_hash, removed);
CREATE INDEX files_assign ON files (removed, kind, replicas);

CREATE TABLE challenge_batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id BIGINT NOT NULL REFERENCES files (id),
    root_seed BLOB NOT NULL,
    merkle_root BLOB NOT NULL,
    count INTEGER NOT NULL,
    created DOUBLE NOT NULL
);
CREATE INDEX batches_file ON challenge_batches (file_id);

CREATE TABLE challenges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id BIGINT NOT NULL REFERENCES challenge_batches (id),
    file_id BIGINT NOT NULL REFERENCES files (id),
    seq INTEGER NOT NULL,
    seed BLOB NOT NULL,
    answer CHAR(64) NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX challenges_unused ON challenges (file_id, used, id);

CREATE TABLE contracts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
);
CREATE INDEX contracts_due ON contracts (state, protocol, deadline);
CREATE INDEX contracts_token ON contracts (token_id, state);
CREATE INDEX contracts_file ON contracts (file_id, state);
