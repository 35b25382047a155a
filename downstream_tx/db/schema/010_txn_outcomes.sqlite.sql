-- Schema version 10: transaction outcomes (docs/operations.md, "Lost commits").
-- txn_outcomes: one row per write transaction of an engine whose COMMIT acknowledgement can be
-- lost (a server; in-process SQLite never writes here, the table exists so both engines have one
-- schema). id = 8 bytes of milliseconds since the epoch, big-endian, then 8 random bytes; attempt =
-- which run of the transaction's body committed.
CREATE TABLE txn_outcomes (
    id BLOB NOT NULL PRIMARY KEY,
    attempt INTEGER NOT NULL
) WITHOUT ROWID;
