"""Stand-in for ``storj-heartbeat`` 0.1.10 built on downstream_tx.heartbeat.

Only what downstream-farmer 0.1.8 touches: ``heartbeat.Merkle.Merkle`` (the scheme the node
sends as type "Merkle") and ``heartbeat.Swizzle.Swizzle`` (looked up at import time only).
Our own code; it adapts our library to the old module and method names (todict/fromdict,
challenge_type/tag_type, prove on an open file).
"""

from . import Merkle, Swizzle  # noqa: F401
from .Merkle import HeartbeatError  # noqa: F401

__version__ = "0.1.10+downstream-tx-shim"
