"""The v0 farmer calls (docs/protocol-v0.md): a token, a chunk contract, the due challenges, an
answer, ending a contract, the chunk's bytes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from twisted.logger import Logger

from downstream_tx import bitcoin
from downstream_tx.config import Config
from downstream_tx.core.context import Downloads, Results
from downstream_tx.core.reputation import placement_of, refusal
from downstream_tx.core.tokens import (
    ADDRESS_LIMIT,
    INVALID_ADDRESS,
    IP_LIMIT,
    LOW_BALANCE,
    NOT_WHITELISTED,
    Token,
    TokenRules,
    Tokens,
    ip_limit_message,
    parse_token,
)
from downstream_tx.db import downloads
from downstream_tx.db.contracts import Assignment, ContractStore
from downstream_tx.db.downloads import DownloadRules, DownloadStore
from downstream_tx.db.reputation import ReputationStore
from downstream_tx.db.tokens import TokenFacts, UnknownToken
from downstream_tx.domain import placement
from downstream_tx.domain.vetting import NotEligible
from downstream_tx.errors import CONFLICT, FORBIDDEN, INVALID, LIMIT, NOT_FOUND, NodeError
from downstream_tx.v0.capability import Capability, key_hash, new_key, parse_capability
from downstream_tx.v0.challenges import ChallengeSupply
from downstream_tx.v0.chunkstore import ChunkStore
from downstream_tx.v0.hashes import FileHash, Malformed, Response, malformed_response, parse_file_hash

log = Logger()


class AnswerOutcome(StrEnum):
    """What :meth:`V0Farming.answer` decided of an answer (the route renders it)."""

    PASS = "pass"
    #: a pass that arrived after its challenge's deadline, within ``late_grace``
    LATE_PASS = "late_pass"
    FAIL = "fail"


#: contracts in a /due page without a limit, and the most a limit may ask for
DUE_PAGE = 1000
#: the last page number /due takes (an offset beyond every token's contracts)
MAX_DUE_PAGE = 1_000_000

#: a download request without a capability (db/downloads.py has the other outcomes)
MISSING = "missing"


def no_download() -> NodeError:
    """The one answer to every download refused as if the file were unknown (no capability, a
    wrong or forged one, another contract's, a contract that is over, a seeded or unknown file):
    it never tells whether a file with this hash is stored here."""
    return NodeError(NOT_FOUND, "no_hash", "no such file is stored on this node")


def _invalid_address(facts: TokenFacts, config) -> NodeError:
    try:
        bitcoin.decode_address(facts.address)
        reason = "not a valid address"
    except bitcoin.InvalidAddress as e:
        reason = str(e)
    return NodeError(INVALID, "invalid_address", f"invalid address: {reason}")


#: v0 refuses a bad address first, then whitelist, per-address and per-client-address limits
TOKEN_RULES = TokenRules(
    name="v0",
    order=(INVALID_ADDRESS, NOT_WHITELISTED, LOW_BALANCE, ADDRESS_LIMIT, IP_LIMIT),
    refusal={
        INVALID_ADDRESS: _invalid_address,
        NOT_WHITELISTED: lambda f, c: NodeError(FORBIDDEN, "not_whitelisted", "address is not in the whitelist"),
        LOW_BALANCE: lambda f, c: NodeError(FORBIDDEN, "not_whitelisted",
                                            f"address balance is under the minimum of {c.min_balance}"),
        ADDRESS_LIMIT: lambda f, c: NodeError(LIMIT, "limit_reached",
                                              f"address already holds {c.max_tokens_per_address} tokens"),
        IP_LIMIT: lambda f, c: NodeError(LIMIT, "limit_reached", ip_limit_message(c.max_tokens_per_ip)),
    },
)


def token_hash_of(token: Token | str) -> bytes:
    """The hash of a token given typed (the route checked it) or as text (checked here: 400
    ``invalid_token``)."""
    checked = parse_token(token)
    if checked is None:
        raise NodeError(INVALID, "invalid_token", "token must be 32 hexadecimal characters")
    return checked.hash


class V0Farming:
    def __init__(self, contracts: ContractStore, reputation: ReputationStore, downloads: DownloadStore,
                 chunks: ChunkStore, supply: ChallengeSupply, tokens: Tokens, config: Config, clock: Any,
                 results: Results, downloaded: Downloads):
        self.contracts = contracts
        self.reputation = reputation
        self.downloads = downloads
        self.chunks = chunks
        self.supply = supply
        self.tokens = tokens
        self.config = config
        self.clock = clock
        self.results = results
        #: download outcomes, for the observers (metrics)
        self.downloaded = downloaded
        self.placement = placement_of(config)

    async def _call(self, call):
        """A store call for a token: an unknown token is 404 ``no_token``."""
        try:
            return await call
        except UnknownToken:
            raise NodeError(NOT_FOUND, "no_token", "unknown token") from None

    async def create_token(self, address: str, ip: str | None = None) -> str:
        """``/new``: a token for ``address`` (also ``downstream-admin token create``)."""
        return await self.tokens.create(address, ip, TOKEN_RULES)

    async def get_chunk(self, token: Token | str, ip: str | None = None) -> Assignment:
        """``/chunk``: a contract on the file furthest below its redundancy target that the farmer
        may hold — a file's replicas on distinct payout addresses and, unless ``distinct_networks``
        is off, distinct networks of the client address ``ip`` (403 for a farmer disqualified,
        suspended or in containment; none beyond the vetting share)."""
        key = new_key()  # made before the transaction, so that a retry stores the same one
        network = placement.network_key(ip, self.placement)
        try:
            _, assignment = await self._call(self.contracts.assign(
                token_hash_of(token), self.clock.seconds(), key_hash(key), network))
        except NotEligible as e:
            raise refusal(e) from None
        if assignment is None:
            raise NodeError(NOT_FOUND, "no_chunks", "no chunk needs another farmer right now")
        self.supply.top_up_soon([assignment.file_id])
        return dataclasses.replace(assignment, capability=str(Capability(assignment.contract_id, key)))

    async def due(self, token: Token | str, limit: int = DUE_PAGE, page: int = 0) -> tuple[list[dict], list[dict]]:
        """``/due``: (a page of ``limit`` active contracts of a token, oldest first, and those of
        them with an outstanding challenge)."""
        _, rows = await self._call(self.contracts.of_token(token_hash_of(token), limit, limit * page,
                                                                       self.clock.seconds()))
        now = self.clock.seconds()
        outstanding = [r for r in rows if r["challenge"] is not None and not r["answered"] and r["deadline"] > now]
        # challenges were taken for the windows read now: top those files up under the low-water
        # mark; a file with none left for a contract at all (starved: it takes one at its next read)
        # regardless, as the timer pass does
        starved = sorted({r["file_id"] for r in rows if r["challenge"] is None})
        taken = sorted({r["file_id"] for r in rows if r["taken"]} - set(starved))
        if taken:
            self.supply.top_up_soon(taken)
        if starved:
            self.supply.top_up_soon(starved, max(self.config.challenge_low_water, 1))
        return rows, outstanding

    async def answer(self, token: Token | str, file_hash: FileHash | str, response: Response | Malformed,
                     arrived: float | None = None) -> AnswerOutcome:
        """``/challenge``: check an answer: a :class:`AnswerOutcome`, pass, late pass (it arrived after the
        deadline, within ``late_grace``) or fail (one attempt per challenge). ``arrived``: when the
        request reached the node (default now); it is judged by that time (domain/verdicts.py). A malformed
        response (400 ``invalid_response``) from a live token counts against its farmer's
        unknown-error score; a malformed token or file hash is not attributable and counts nothing."""
        file_hash = parse_file_hash(file_hash)
        if isinstance(response, Malformed):
            live = parse_token(token)
            if live is not None:
                await self.reputation.record_errors(live.hash, 1, self.clock.seconds())
            raise malformed_response()
        token_hash = token_hash_of(token)
        row, result = await self._call(self.contracts.answer(
            token_hash, file_hash, response.hex, self.clock.seconds(), self.config.max_failures,
            arrived, self.config.late_grace))
        if result.status == "no_hash":
            raise NodeError(NOT_FOUND, "no_hash", "no active contract on this file for this token")
        if result.status == "not_due":
            raise NodeError(CONFLICT, "not_due", "no challenge is outstanding on this contract")
        status = AnswerOutcome.LATE_PASS if result.late else AnswerOutcome(result.status)
        self.results.count(status.value, 1)
        if result.failed_contract:
            log.info("contract of farmer {farmer_id} on {file_hash} failed", farmer_id=row.farmer_id,
                     file_hash=file_hash)
        return status

    async def end_contract(self, token: Token | str, file_hash: FileHash | str) -> None:
        """``/remove``: end the token's contract on a file."""
        file_hash = parse_file_hash(file_hash)
        token_hash = token_hash_of(token)
        _, ended = await self._call(self.contracts.end(token_hash, file_hash, self.clock.seconds()))
        if not ended:
            raise NodeError(NOT_FOUND, "no_hash", "no active contract on this file for this token")

    async def download(self, file_hash: FileHash | str, capability: str | None,
                       record: Callable[[int], bool] = lambda size: True) -> tuple[str, int]:
        """``/api/download``: (path, size) of a stored chunk's bytes, for the holder of a contract's
        download capability (``cap``) within its window (db/downloads.py). ``record(size)``: the
        request will get bytes of a chunk of that size (a GET, not a HEAD, not a range past the
        end): it is counted, and the first one starts the window. Refused: 403 ``download_closed``
        to the contract's holder, else the 404 of an unknown file."""
        file_hash = parse_file_hash(file_hash)
        cap = parse_capability(capability)
        if cap is None:
            outcome, size = MISSING if capability is None else downloads.INVALID, 0
        else:
            config = self.config
            outcome, size = await self.downloads.use(
                cap.contract_id, cap.key_hash, file_hash, self.clock.seconds(),
                DownloadRules(config.download_window, config.redownload), record)
        if outcome not in downloads.SERVED or record(size):
            self.downloaded.count(outcome)
        if outcome == downloads.CLOSED:
            raise NodeError(FORBIDDEN, "download_closed",
                            "this contract's download was served already: a chunk is served once per contract "
                            "(with its resumes, until the contract's first pass or the end of its download "
                            "window); keep the bytes")
        if outcome not in downloads.SERVED:
            raise no_download()
        return self.chunks.path_for(file_hash), size
