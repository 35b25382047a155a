"""Protocol v0, the seed's API: stored files, hash challenges, the farmer calls (docs/protocol-v0.md)."""
