"""The v1 farmer calls (docs/protocol-v1.md): a token for a signed address, chunks from the
seeded pool, challenges and answers in batches, the tags of a farmer's contracts."""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson
from twisted.logger import Logger

from downstream_tx import bitcoin, geoip
from downstream_tx.config import Config
from downstream_tx.core.context import Blocking, Results
from downstream_tx.core.keys import NodeKeys
from downstream_tx.core.tokens import Token, Tokens, ip_limit_message, parse_token
from downstream_tx.db.database import SHORT_BATCH
from downstream_tx.db.seeded import IssuedChallenge, PoolChunk, Refresh, Sealed, SeededStore, V1Contract
from downstream_tx.db.tokens import IpLimitReached, TokenStore, UnknownToken
from downstream_tx.domain.vetting import NotEligible
from downstream_tx.errors import INVALID, NOT_FOUND
from downstream_tx.heartbeat import Challenge, HeartbeatError, HeartbeatFormatError, Merkle, Proof, State
from downstream_tx.v1.reports import (
    AnswerReport,
    ChallengeOutcome,
    ChallengeResult,
    ChallengesReport,
    ProofOutcome,
    ProofResult,
)
from downstream_tx.v1.signatures import names_node, node_key
from downstream_tx.v1.wire import (
    MSG_BAD_ADDRESS,
    MSG_MESSAGE_SIZE,
    MSG_NODE_NOT_NAMED,
    MSG_POST_JSON,
    MSG_SIGNATURE_INVALID,
    MSG_SIGNATURE_LENGTH,
    TOKEN_RULES,
    contract_ids,
    heartbeat_body,
    proof_key,
    v1_error,
)
from downstream_tx.wire import (
    DEFAULT_CHUNK_SIZE,
    NONEXISTENT_TOKEN,
)

log = Logger()

#: what a stored heartbeat state that cannot be used raises
UNUSABLE = (HeartbeatError, HeartbeatFormatError, orjson.JSONDecodeError, ValueError)

#: the outcome of a verified proof whose contract changed before it could be recorded
LOST = {"expired": ProofOutcome.EXPIRED, "answered": ProofOutcome.ANSWERED}


def seal(state: State) -> Sealed:
    """The columns a contract stores for ``state`` (see :class:`~downstream_tx.db.seeded.Sealed`)."""
    return Sealed(state.seed, state.n, state.root, state.hmac, str(state.timestamp))


def _timestamp(text: str) -> float | int:
    # str() of an int has only digits (and maybe a sign); str() of a finite float never does
    return int(text) if text.lstrip("-").isdigit() else float(text)


def unseal(c: V1Contract) -> tuple[State, Challenge]:
    """A contract's heartbeat state and its outstanding challenge, from the sealed columns or, for a
    row written before they existed, from its JSON (raises one of :data:`UNUSABLE`)."""
    if c.sealed is not None:
        s = c.sealed
        return State(c.seq + 1, s.seed, s.n, s.root, s.hmac, _timestamp(s.time)), Challenge(s.seed, c.seq)
    return (State.from_dict(orjson.loads(c.hb_state or "null")),
            Challenge.from_dict(orjson.loads(c.hb_challenge or "null")))


def challenge_json(challenge: Challenge) -> str:
    """A challenge as the farmer is sent it (the heartbeat's dict form)."""
    return orjson.dumps({"seed": base64.b64encode(challenge.seed).decode(), "index": challenge.index}).decode()


def make_merkle(check_fraction: float, heartbeat_key: bytes) -> Merkle:
    """The node's Merkle heartbeat; its key is derived from the node secret (never sent)."""
    return Merkle(check_fraction, heartbeat_key)


#: seconds a token found live stays known to :meth:`V1Farming.check_token_before_body`
KNOWN_TOKEN_SECONDS = 60.0
#: tokens it remembers at most (about 100 bytes each; the least recently used go first)
KNOWN_TOKENS = 10_000


class V1Farming:
    def __init__(self, seeded: SeededStore, token_store: TokenStore, tokens: Tokens, config: Config, clock: Any,
                 blocking: Blocking, keys: NodeKeys, results: Results):
        self.seeded = seeded
        self.token_store = token_store
        self.tokens = tokens
        self.config = config
        self.clock = clock
        self.blocking = blocking
        self.hash_ip = keys.hash_ip
        self.results = results
        self.merkle = make_merkle(config.seeded_check_fraction, keys.heartbeat_key())
        #: the node a signed message must name (None: any message)
        self.named = node_key(config.public_url) if config.require_signature and config.signature_names_node else None
        #: token hash -> when it was last found live (see :meth:`check_token_before_body`)
        self._known: OrderedDict[bytes, float] = OrderedDict()

    def _token(self, token: Token | str, kind: str = INVALID) -> Token:
        """A token given typed (the route checked it) or as text: anything that is not a token is
        a nonexistent one."""
        checked = parse_token(token)
        if checked is None:
            raise v1_error(NONEXISTENT_TOKEN, kind)
        return checked

    def _token_hash(self, token: Token | str, kind: str = INVALID) -> bytes:
        return self._token(token, kind).hash

    async def _call(self, call, kind: str = INVALID):
        """A store call for a token, its refusals in the protocol's words."""
        try:
            return await call
        except UnknownToken:
            raise v1_error(NONEXISTENT_TOKEN, kind) from None
        except IpLimitReached:
            raise v1_error(ip_limit_message(self.config.max_tokens_per_ip)) from None
        except NotEligible:
            # the client knows no refusal here: "nothing fits now" (it asks again 30 s later)
            return []

    # --- /new and /heartbeat

    async def new_token(self, address: str, ip: str | None, message: str | None = None,
                        signature: str | None = None) -> dict[str, Any]:
        """After the route's method and body checks: message size, signature length, that the
        message names this node (``signature_names_node``), signature (a bad or testnet address is
        a 400 here), then the token rules."""
        config = self.config
        if config.require_signature:
            if message is None or signature is None:
                raise v1_error(MSG_POST_JSON)
            if len(message) > bitcoin.MAX_MESSAGE_LENGTH:
                raise v1_error(MSG_MESSAGE_SIZE)
            if len(signature) != bitcoin.SIGNATURE_LENGTH:
                raise v1_error(MSG_SIGNATURE_LENGTH)
            if self.named is not None and not names_node(message, self.named):
                raise v1_error(MSG_NODE_NOT_NAMED.format(url=config.public_url))
            try:
                valid = await self.blocking(bitcoin.verify_message, address, message, signature)
            except bitcoin.InvalidAddress:
                raise v1_error(MSG_BAD_ADDRESS) from None
            if not valid:
                raise v1_error(MSG_SIGNATURE_INVALID)
        else:
            message = signature = None
        token = await self.tokens.create(address, ip, TOKEN_RULES, message, signature)
        return heartbeat_body(token, config.seeded_check_fraction)

    async def check_token(self, token: Token | str, kind: str = INVALID) -> None:
        """Refuse an unknown token (``Nonexistent token.``, 400 unless ``kind`` says otherwise)."""
        await self._call(self.token_store.get(self._token_hash(token, kind), self.clock.seconds()), kind)

    async def check_token_before_body(self, token: Token | str) -> None:
        """:meth:`check_token`, asked by a request whose body costs work to read before it reads
        it, so that anyone without a token costs the node no more than the lookup. A token found
        live in the last :data:`KNOWN_TOKEN_SECONDS` is not looked up again (a farmer's batches
        cost no extra transaction): this decides only whether the body is read, never an answer —
        the call that follows checks its token in its own transaction, so a token deleted
        meanwhile is still refused."""
        token_hash = self._token_hash(token)
        now = self.clock.seconds()
        seen = self._known.get(token_hash)
        if seen is not None and now - seen < KNOWN_TOKEN_SECONDS:
            return
        await self._call(self.token_store.get(token_hash, now))
        self._known[token_hash] = now
        self._known.move_to_end(token_hash)
        while len(self._known) > KNOWN_TOKENS:
            self._known.popitem(last=False)

    async def heartbeat(self, token: Token | str) -> dict[str, Any]:
        """An unknown token is a 404 here."""
        checked = self._token(token, NOT_FOUND)
        await self.check_token(checked, NOT_FOUND)
        return heartbeat_body(checked.text, self.config.seeded_check_fraction)

    # --- /chunk

    def _first_challenge(self, chunk: PoolChunk) -> IssuedChallenge | None:
        try:
            state = State.from_dict(orjson.loads(chunk.hb_state))
            challenge = self.merkle.gen_challenge(state)
        except UNUSABLE as e:
            log.warn("pooled seeded chunk {file_id} is unusable ({error}); discarded", file_id=chunk.file_id,
                     error=str(e))
            return None
        return IssuedChallenge(seal(state), challenge_json(challenge), challenge.index)

    async def chunks(self, token: Token | str, ip: str | None, size: int = DEFAULT_CHUNK_SIZE) -> list[dict[str, Any]]:
        """The largest pooled chunks that fit, never more than ``size`` bytes in all."""
        config = self.config
        now = self.clock.seconds()
        # GeoIP of the client, stored if the token moves to its address (dashboard, status API)
        location = geoip.stored_location(await self.tokens.locate(ip))
        made = await self._call(self.seeded.take_chunks(
            self._token_hash(token), self.hash_ip(ip), config.max_tokens_per_ip, size, now,
            max_size_per_address=config.max_size_per_address, max_chunks=config.max_chunks_per_request,
            interval=config.seeded_interval, issue=self._first_challenge, location=location))
        return [{"seed": c.chunk.seed, "size": c.chunk.size, "file_hash": c.id,
                 "challenge": orjson.Fragment(c.issued.hb_challenge), "tag": orjson.Fragment(c.chunk.tag),
                 "due": float(c.due - now)} for c in made]

    # --- /challenge

    async def challenges(self, token: Token | str, items: Iterable[Any] | None) -> ChallengesReport:
        """For ``items`` (as sent; the list ends at the first that is not a number) or, with None,
        for every active contract of the token: the outstanding challenge, or a new one once the
        current one is due."""
        token_hash = self._token_hash(token)
        wanted = None if items is None else contract_ids(items, lambda item: item)
        now = self.clock.seconds()

        def plan(ids: list[int], found: dict[int, V1Contract]) -> tuple[ChallengesReport, list[Refresh]]:
            sent_ids = [(i, i) for i in ids] if wanted is None else [(sent, cid) for sent, cid, _ in wanted]
            return self._plan_challenges(sent_ids, found, now)

        ids = None if wanted is None else [cid for _, cid, _ in wanted]
        return await self._call(self.seeded.refresh_challenges(token_hash, ids, plan, self.clock.seconds()))

    def _plan_challenges(self, sent_ids, found: dict[int, V1Contract],
                         now: float) -> tuple[ChallengesReport, list[Refresh]]:
        entries: list[ChallengeResult] = []
        refreshes: list[Refresh] = []
        for sent, cid in sent_ids:
            c = found.get(cid)
            if c is None:
                entries.append(ChallengeResult(sent, ChallengeOutcome.NOT_FOUND))
            elif c.state != "active" or now >= c.deadline:
                entries.append(ChallengeResult(cid, ChallengeOutcome.EXPIRED))
            elif c.due is not None and now < c.due:
                try:
                    text = challenge_json(unseal(c)[1])
                except UNUSABLE:
                    entries.append(ChallengeResult(cid, ChallengeOutcome.NO_MORE))
                    continue
                entries.append(ChallengeResult(cid, ChallengeOutcome.CHALLENGE, text, c.due - now, c.answered))
            else:
                try:
                    state = unseal(c)[0]
                    challenge = self.merkle.gen_challenge(state)
                except UNUSABLE:
                    entries.append(ChallengeResult(cid, ChallengeOutcome.NO_MORE))
                    continue
                old_due = c.due if c.due is not None else now
                new_due = old_due + c.interval
                refreshes.append(Refresh(seal(state), challenge.index, new_due, old_due, cid, c.due, c.sealed is None))
                entries.append(ChallengeResult(cid, ChallengeOutcome.CHALLENGE, challenge_json(challenge),
                                               new_due - now, False))
        return ChallengesReport(entries), refreshes

    # --- /answer

    async def answer(self, token: Token | str, ip: str | None, items: Iterable[Any],
                     arrived: float | None = None) -> AnswerReport:
        """One report entry (a :class:`~downstream_tx.v1.reports.ProofResult`) per proof, checked in
        the original's order: the contracts are read, the proofs verified outside any transaction,
        then one guarded write records them (a proof whose contract changed in between is reported
        as the change makes it). ``arrived``: when the request reached the node (default now): a
        contract counts as expired only if it had expired then (the expiry timer waits
        ``late_grace`` for such answers)."""
        token_hash = self._token_hash(token)
        wanted = contract_ids(items, proof_key)
        now = self.clock.seconds() if arrived is None else min(arrived, self.clock.seconds())
        seeded = self.seeded
        found = await self._call(seeded.contracts(token_hash, [cid for _, cid, _ in wanted]))
        if len(found) <= SHORT_BATCH:
            report, passes, fails = self._plan_answers(wanted, found, now)
        else:  # a large batch is verified off the reactor thread (~25 µs a proof)
            report, passes, fails = await self.blocking(self._plan_answers, wanted, found, now)
        # a malformed proof is an error on the farmer's side, not a proof: its unknown-error score,
        # counted in the answers' own transaction
        corrupted = report.count(ProofOutcome.CORRUPTED)
        _, lost = await self._call(seeded.record_answers(
            token_hash, self.hash_ip(ip), self.config.max_tokens_per_ip,
            {cid: found[cid].seq for cid in passes}, fails, now, errors=corrupted, after=self._count_results))
        if lost:
            why = {x.id: LOST[x.reason] for x in lost}
            report.entries = [ProofResult(e.file_hash, why[e.file_hash])
                              if e.outcome is ProofOutcome.OK and e.file_hash in why else e for e in report.entries]
        return report

    def _count_results(self, passes: int, fails: int) -> None:
        """The results an /answer committed, for the observers (metrics, the dashboard's history)."""
        self.results.count("pass", passes, protocol=1)
        self.results.count("fail", fails, protocol=1)

    def _plan_answers(self, wanted, found: dict[int, V1Contract],
                      now: float) -> tuple[AnswerReport, list[int], list[int]]:
        entries: list[ProofResult] = []
        passes: list[int] = []
        fails: list[int] = []
        for sent, cid, item in wanted:
            c = found.get(cid)
            if c is None:
                entries.append(ProofResult(sent, ProofOutcome.NOT_FOUND))
                continue
            try:
                proof = Proof.from_dict(item.get("proof"))
            except HeartbeatFormatError:
                entries.append(ProofResult(cid, ProofOutcome.CORRUPTED))
                continue
            if c.state != "active" or now >= c.deadline:
                entries.append(ProofResult(cid, ProofOutcome.EXPIRED))
            elif c.answered:
                entries.append(ProofResult(cid, ProofOutcome.ANSWERED))
            elif self.verify(c, proof):
                entries.append(ProofResult(cid, ProofOutcome.OK))
                passes.append(cid)
            else:
                entries.append(ProofResult(cid, ProofOutcome.INVALID))
                fails.append(cid)
        return AnswerReport(entries), passes, fails

    def verify(self, c: V1Contract, proof: Proof) -> bool:
        """Does ``proof`` answer the contract's outstanding challenge? A stored state that cannot be
        used (corrupt, or made with another node secret) verifies nothing."""
        try:
            state, challenge = unseal(c)
            return self.merkle.verify(proof, challenge, state)
        except UNUSABLE as e:
            log.warn("v1 contract {contract_id}: stored heartbeat state unusable ({error})", contract_id=c.id,
                     error=str(e))
            return False

    # --- /tags (added here: for a farmer that lost its state)

    async def tags(self, token: Token | str) -> list[dict[str, Any]]:
        """The tags of the token's live contracts."""
        rows = await self._call(self.seeded.tags(self._token_hash(token, NOT_FOUND), self.clock.seconds()),
                                NOT_FOUND)
        return [{"file_hash": cid, "tag": orjson.Fragment(tag)} for cid, tag in rows]
