"""Stand-in for ``RandomIO`` 0.2.1: ``from RandomIO import RandomIO`` gives downstream_tx's
byte-compatible stream (``RandomIO(seed).genfile(size, path)``, read/seek/tell)."""

from downstream_tx.heartbeat.randomio import RandomIO  # noqa: F401
