"""downstream-tx: a proof-of-storage verification node."""

__version__ = "0.1.0"
