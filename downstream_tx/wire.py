"""What both ends of the farmer protocols agree on: the route prefixes, the protocol names ``GET /``
lists, the v1 heartbeat type and default chunk request, and the texts and codes a farmer acts on
(docs/protocol-v0.md, docs/protocol-v1.md).

The node (``downstream_tx.v1.wire``, ``downstream_tx.http``) and the farmer (``downstream_tx.farmer``)
both import them from here, the lowest layer, so neither side can drift from the other.
"""

from __future__ import annotations

#: what ``GET /`` lists under ``protocols`` on a node that speaks both
PROTOCOLS = ("v0", "v1")

# --- protocol v0 (the seed's API) ------------------------------------------------------------------

V0_PREFIX = "/api/downstream"
DOWNLOAD_PREFIX = "/api/download"
#: error codes (the ``status`` of a v0 error body) a farmer acts on
V0_NO_TOKEN = "no_token"
V0_NO_CHUNKS = "no_chunks"
V0_NOT_DUE = "not_due"
V0_NO_HASH = "no_hash"
#: v0 answers to a challenge
V0_PASS = "pass"
V0_FAIL = "fail"

# --- protocol v1 (downstream-farmer 0.1.8) ---------------------------------------------------------

V1_PREFIX = "/api/downstream/v1"
HEARTBEAT_TYPE = "Merkle"
#: ``/chunk/<token>`` without a size asks for this many bytes
DEFAULT_CHUNK_SIZE = 33554432
#: items of one ``/challenge`` or ``/answer`` body a node looks at; the rest are ignored
MAX_ITEMS = 5000
#: the keys every chunk of a v1 ``/chunk`` answer has
CHUNK_KEYS = ("seed", "size", "file_hash", "challenge", "tag", "due")

#: the one error text the published client matches: its token is unknown to the node
NONEXISTENT_TOKEN = "Nonexistent token."
#: per-contract entries of ``/challenge`` and ``/answer`` (the original server's texts)
CONTRACT_NOT_FOUND = "contract not found"
CONTRACT_EXPIRED = "contract expired"
NO_MORE_CHALLENGES = "no more challenges"
PROOF_CORRUPTED = "Proof corrupted"
ANSWER_EXPIRED = "Answer failed: contract expired."
ALREADY_ANSWERED = "Challenge already answered."
INVALID_PROOF = "Invalid proof"
