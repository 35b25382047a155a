"""Protocol v1, the 2015 client's (``downstream-farmer`` 0.1.8): seeded chunks, Merkle heartbeats,
batched challenges and answers, the seeded pool, the status API (docs/protocol-v1.md)."""
