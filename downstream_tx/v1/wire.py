"""What protocol v1 puts on the wire: the original server's exact messages, its error envelope,
its time format, and how it read lists of contract ids (docs/protocol-v1.md).

Errors a client can see are ``NodeError``s whose status is ``"error"`` and whose message is the
original's text (400 unless noted), rendered as ``{"status": "error", "message": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from downstream_tx.config import Config
from downstream_tx.core.tokens import (
    ADDRESS_LIMIT,
    INVALID_ADDRESS,
    IP_LIMIT,
    LOW_BALANCE,
    NOT_WHITELISTED,
    TokenRules,
    ip_limit_message,
)
from downstream_tx.db.tokens import TokenFacts
from downstream_tx.errors import INVALID, NodeError
from downstream_tx.v1.reports import AnswerReport, ChallengeOutcome, ChallengesReport, ProofOutcome
from downstream_tx.wire import (
    ALREADY_ANSWERED,
    ANSWER_EXPIRED,
    CONTRACT_EXPIRED,
    CONTRACT_NOT_FOUND,
    HEARTBEAT_TYPE,
    INVALID_PROOF,
    MAX_ITEMS,
    NO_MORE_CHALLENGES,
    PROOF_CORRUPTED,
)

NONEXISTENT_FARMER = "Nonexistant farmer id."  # sic: the original's text
MSG_POST_REQUIRED = "New token requests must include posted signature proving ownership of farming address"
MSG_POST_JSON = 'Posted data must be JSON encoded object including "signature" and "message"'
MSG_MESSAGE_SIZE = "Please restrict your message to less than 1024 bytes."
MSG_SIGNATURE_LENGTH = "Your signature is the wrong length.  It should be 88bytes."
MSG_SIGNATURE_INVALID = "Signature invalid."
MSG_BAD_ADDRESS = "Invalid address given: address is not a valid SJCX address."
MSG_NOT_WHITELISTED = "Invalid address given: address must be in whitelist."
#: added here (``signature_names_node``)
MSG_NODE_NOT_NAMED = "The signed message must name this node: {url}"
MSG_INVALID_SORT = "Invalid sort."


def v1_error(message: str, kind: str = INVALID) -> NodeError:
    return NodeError(kind, "error", message)


def _address_limit(facts: TokenFacts, config: Config) -> NodeError:
    return v1_error(f"Address limit reached, only {config.max_tokens_per_address} tokens are permitted per address")


#: v1 refuses an over-limit client address first, then a bad address, the whitelist (one message
#: for both whitelist checks) and the per-address limit
TOKEN_RULES = TokenRules(
    name="v1",
    order=(IP_LIMIT, INVALID_ADDRESS, NOT_WHITELISTED, LOW_BALANCE, ADDRESS_LIMIT),
    refusal={
        IP_LIMIT: lambda f, c: v1_error(ip_limit_message(c.max_tokens_per_ip)),
        INVALID_ADDRESS: lambda f, c: v1_error(MSG_BAD_ADDRESS),
        NOT_WHITELISTED: lambda f, c: v1_error(MSG_NOT_WHITELISTED),
        LOW_BALANCE: lambda f, c: v1_error(MSG_NOT_WHITELISTED),
        ADDRESS_LIMIT: _address_limit,
    },
)


def heartbeat_body(token: str, check_fraction: float) -> dict[str, Any]:
    """The answer of /new and /heartbeat: the token and the (keyless) heartbeat object."""
    return {"token": token, "type": HEARTBEAT_TYPE, "heartbeat": {"key": "", "check_fraction": check_fraction}}


def as_int(item: Any) -> int:
    """``int(item)`` as the original applied it to each streamed item (raises on failure)."""
    if isinstance(item, (dict, list)) or item is None:
        raise TypeError("not a number")
    return int(item)


def contract_ids(items: Iterable[Any], key: Callable[[Any], Any]) -> list[tuple[Any, int, Any]]:
    """(as sent, id, item) for each of the first ``MAX_ITEMS`` items until the first whose key is
    not a number; duplicates collapse (the first wins)."""
    out: list[tuple[Any, int, Any]] = []
    seen: set[int] = set()
    for n, item in enumerate(items):
        if n >= MAX_ITEMS:
            break
        try:
            sent = key(item)
            value = as_int(sent)
        except (TypeError, ValueError, KeyError, OverflowError):
            break
        if value not in seen:
            seen.add(value)
            out.append((sent, value, item))
    return out


def proof_key(item: Any) -> Any:
    """The contract id of an /answer item."""
    if not isinstance(item, dict):
        raise TypeError("a proof item must be an object")
    return item["file_hash"]


#: the integers orjson can write; others are echoed as their decimal text, a raw JSON number
_JSON_INTS = range(-(1 << 63), 1 << 64)


def plain(value: Any) -> Any:
    """An item echoed back as sent (ijson hands out Decimals for non-integers; an integer past 64
    bits, which no contract id can be, is written as the number it was sent as)."""
    if type(value).__name__ == "Decimal":
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool) and value not in _JSON_INTS:
        return orjson.Fragment(str(value))
    return value


#: the key and text of each answer outcome in a report entry (the original server's)
ANSWER_ENTRY = {
    ProofOutcome.OK: ("status", "ok"),
    ProofOutcome.INVALID: ("error", INVALID_PROOF),
    ProofOutcome.CORRUPTED: ("error", PROOF_CORRUPTED),
    ProofOutcome.EXPIRED: ("error", ANSWER_EXPIRED),
    ProofOutcome.ANSWERED: ("error", ALREADY_ANSWERED),
    ProofOutcome.NOT_FOUND: ("error", CONTRACT_NOT_FOUND),
}


def answer_entries(report: AnswerReport) -> list[dict[str, Any]]:
    """An ``/answer`` report as the wire has it: ``{"file_hash": id, "status": "ok"}`` or
    ``{"file_hash": id, "error": <the original's text>}`` per proof (the id echoed as sent)."""
    out = []
    for file_hash, outcome in report.entries:
        key, text = ANSWER_ENTRY[outcome]
        out.append({"file_hash": plain(file_hash) if outcome is ProofOutcome.NOT_FOUND else file_hash, key: text})
    return out


def challenge_entries(report: ChallengesReport) -> list[dict[str, Any]]:
    """A ``/challenge`` report as the wire has it: ``{"file_hash", "challenge", "due", "answered"}``
    per contract with a challenge, else ``{"file_hash", "error": "contract not found" | "contract
    expired"}`` or ``{"file_hash", "status": "no more challenges"}`` (the original's texts)."""
    out: list[dict[str, Any]] = []
    for e in report.entries:
        if e.outcome is ChallengeOutcome.CHALLENGE:
            out.append({"file_hash": e.file_hash, "challenge": orjson.Fragment(e.challenge), "due": e.due,
                        "answered": e.answered})
        elif e.outcome is ChallengeOutcome.NOT_FOUND:
            out.append({"file_hash": plain(e.file_hash), "error": CONTRACT_NOT_FOUND})
        elif e.outcome is ChallengeOutcome.EXPIRED:
            out.append({"file_hash": e.file_hash, "error": CONTRACT_EXPIRED})
        else:
            out.append({"file_hash": e.file_hash, "status": NO_MORE_CHALLENGES})
    return out
