-- Schema version 10: transaction outcomes (docs/operations.md, "Lost commits").
-- txn_outcomes: one row per write transaction of a server engine, written in the transaction's own
-- commit: id = the transaction's id (8 bytes of milliseconds since the epoch, big-endian, then 8
-- random bytes: ids sort by time, so rows are appended and old ones purged by primary key range),
-- attempt = which run of the transaction's body committed. When the acknowledgement of a COMMIT is
-- lost, the node looks the id up before it runs the body again: a row means it committed (the
-- result of that attempt is what the client is told), none means it rolled back.
CREATE TABLE txn_outcomes (
    id BINARY(16) NOT NULL PRIMARY KEY,
    attempt SMALLINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
