"""The node's one error type: what went wrong, in words and as a short wire code.

The API maps ``kind`` to an HTTP status; ``downstream-admin`` maps it to an exit status. The node
itself knows nothing of either.
"""

from __future__ import annotations

INVALID = "invalid"  # bad input: 400 / exit 2
NOT_FOUND = "not_found"  # 404 / exit 2
FORBIDDEN = "forbidden"  # 403 / exit 2
LIMIT = "limit"  # 429 / exit 2
CONFLICT = "conflict"  # 409 / exit 2
UNAVAILABLE = "unavailable"  # 503 / exit 1
REFUSED = "refused"  # what was asked does not fit the node's state (reinstate an ok farmer): 409 / exit 1


class NodeError(Exception):
    def __init__(self, kind: str, status: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"NodeError({self.kind!r}, {self.status!r}, {self.message!r})"
