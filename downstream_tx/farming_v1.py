"""Protocol v1: the node's functions behind the ``downstream-farmer`` 0.1.8 routes (spec
protocol-v1 Part B §2-§4), the seeded chunk pool, the v1 timers and the status API.

Reached as ``node.v1``. Errors the client can see are ``NodeError``s whose status is ``"error"``
and whose message is the original server's exact text (400 unless noted), so the API renders the
original envelope ``{"status": "error", "message": ...}``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from twisted.logger import Logger

from downstream_tx import bitcoin
from downstream_tx.db import seeded, status, tokens
from downstream_tx.errors import INVALID, NOT_FOUND, NodeError
from downstream_tx.heartbeat import (
    Challenge,
    HeartbeatError,
    HeartbeatFormatError,
    Merkle,
    Proof,
    RandomIO,
    State,
    encode_seeded,
)

if TYPE_CHECKING:
    from downstream_tx.node import Node

log = Logger()

HEARTBEAT_TYPE = "Merkle"
DEFAULT_CHUNK_SIZE = 33554432
#: items of one /challenge or /answer body looked at; the rest are ignored
MAX_ITEMS = 5000
#: bytes of seeded data encoded per pool pass (a pass never delays a stop for long)
POOL_PASS_BYTES = 64 << 20

NONEXISTENT_TOKEN = "Nonexistent token."
NONEXISTENT_FARMER = "Nonexistant farmer id."  # sic: the original's text
MSG_POST_REQUIRED = "New token requests must include posted signature proving ownership of farming address"
MSG_POST_JSON = 'Posted data must be JSON encoded object including "signature" and "message"'
MSG_MESSAGE_SIZE = "Please restrict your message to less than 1024 bytes."
MSG_SIGNATURE_LENGTH = "Your signature is the wrong length.  It should be 88bytes."
MSG_SIGNATURE_INVALID = "Signature invalid."
MSG_BAD_ADDRESS = "Invalid address given: address is not a valid SJCX address."
MSG_NOT_WHITELISTED = "Invalid address given: address must be in whitelist."


def v1_error(message: str, kind: str = INVALID) -> NodeError:
    return NodeError(kind, "error", message)


def iso_utc(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_int(item: Any) -> int:
    """``int(item)`` as the original applied it to each streamed item (raises on failure)."""
    if isinstance(item, (dict, list)) or item is None:
        raise TypeError("not a number")
    return int(item)


class FarmingV1:
    def __init__(self, node: Node):
        self.node = node
        self.config = node.config
        self._merkle: Merkle | None = None
        self._uptime_since: float | None = None
        self._uptime_ran = False

    # --- the heartbeat object ---------------------------------------------------------------------

    @property
    def merkle(self) -> Merkle:
        """The node's Merkle heartbeat; its key is derived from the node secret (never sent)."""
        if self._merkle is None:
            self._merkle = Merkle(self.config.seeded_check_fraction, self.node.heartbeat_key())
        return self._merkle

    def heartbeat_body(self, token: str) -> dict[str, Any]:
        return {"token": token, "type": HEARTBEAT_TYPE,
                "heartbeat": {"key": "", "check_fraction": self.config.seeded_check_fraction}}

    def _token_hash(self, token: str, kind: str = INVALID) -> bytes:
        """SHA-256 of the token's raw bytes; anything that is not a token is a nonexistent one."""
        if not isinstance(token, str) or len(token) != 32:
            raise v1_error(NONEXISTENT_TOKEN, kind)
        try:
            return hashlib.sha256(bytes.fromhex(token)).digest()
        except ValueError:
            raise v1_error(NONEXISTENT_TOKEN, kind) from None

    def _token_txn(self, txn, token_hash: bytes, kind: str = INVALID) -> tokens.TokenRow:
        row = tokens.get_by_hash_txn(txn, token_hash)
        if row is None:
            raise v1_error(NONEXISTENT_TOKEN, kind)
        return row

    def _ip_limit_message(self) -> str:
        return f"IP Disallowed, only {self.config.max_tokens_per_ip} tokens are permitted per IP address"

    def _ip_full_txn(self, txn, ip_hash: str | None) -> bool:
        limit = self.config.max_tokens_per_ip
        return bool(ip_hash and limit and tokens.count_by_ip_txn(txn, ip_hash) >= limit)

    def _process_ip_txn(self, txn, row: tokens.TokenRow, ip_hash: str | None, change: bool) -> None:
        """A token used from a new IP: the new IP must be under the per-IP limit; with ``change``
        the token moves to it (GeoIP location: none, see README)."""
        if ip_hash is None or row.ip_hash == ip_hash:
            return
        if self._ip_full_txn(txn, ip_hash):
            raise v1_error(self._ip_limit_message())
        if change:
            tokens.set_ip_txn(txn, row.id, ip_hash, None)

    # --- /new and /heartbeat ----------------------------------------------------------------------

    async def new_token(self, address: str, ip: str | None, message: str | None = None,
                        signature: str | None = None) -> dict[str, Any]:
        """§2.1 after the API's method and body checks: message size, signature length, signature
        (a bad or testnet address is a 400 here), then per-IP limit, address, whitelist."""
        if self.config.require_signature:
            if message is None or signature is None:
                raise v1_error(MSG_POST_JSON)
            if len(message) > bitcoin.MAX_MESSAGE_LENGTH:
                raise v1_error(MSG_MESSAGE_SIZE)
            if len(signature) != bitcoin.SIGNATURE_LENGTH:
                raise v1_error(MSG_SIGNATURE_LENGTH)
            try:
                valid = await self.node.blocking(bitcoin.verify_message, address, message, signature)
            except bitcoin.InvalidAddress:
                raise v1_error(MSG_BAD_ADDRESS) from None
            if not valid:
                raise v1_error(MSG_SIGNATURE_INVALID)
        else:
            message = signature = None
        raw = os.urandom(16)
        token_hash = hashlib.sha256(raw).digest()
        await self.node.db.run("v1_new_token", self._new_token_txn, address, token_hash, self.node.hash_ip(ip),
                               message, signature, self.node.now())
        log.info("v1 token created for farmer {farmer_id}", farmer_id=token_hash.hex()[:20])
        return self.heartbeat_body(raw.hex())

    def _new_token_txn(self, txn, address, token_hash, ip_hash, message, signature, now) -> int:
        config = self.config
        if self._ip_full_txn(txn, ip_hash):
            raise v1_error(self._ip_limit_message())
        if not bitcoin.is_valid_address(address):
            raise v1_error(MSG_BAD_ADDRESS)
        if config.whitelist:
            balance = tokens.balance_txn(txn, address)
            if balance is None or balance < config.min_balance:
                raise v1_error(MSG_NOT_WHITELISTED)
        if config.max_tokens_per_address and tokens.count_by_address_txn(txn, address) >= config.max_tokens_per_address:
            raise v1_error(f"Address limit reached, only {config.max_tokens_per_address} tokens are permitted per "
                           "address")
        return tokens.insert_txn(txn, token_hash, token_hash.hex()[:20], address, ip_hash, now, None, message,
                                 signature)

    async def heartbeat(self, token: str) -> dict[str, Any]:
        """§2.2: unknown token → 404 "Nonexistent token."."""
        token_hash = self._token_hash(token, NOT_FOUND)
        await self.node.db.run("v1_heartbeat", self._token_txn, token_hash, NOT_FOUND)
        return self.heartbeat_body(token.lower())

    # --- /chunk -------------------------------------------------------------------------------------

    async def chunks(self, token: str, ip: str | None, size: int = DEFAULT_CHUNK_SIZE) -> list[dict[str, Any]]:
        """§2.3: hand out the largest pooled chunks that fit, never more than ``size`` bytes in all."""
        token_hash = self._token_hash(token)
        return await self.node.db.run("v1_chunk", self._chunks_txn, token_hash, self.node.hash_ip(ip), size,
                                      self.node.now())

    def _chunks_txn(self, txn, token_hash: bytes, ip_hash: str | None, requested: int, now: float) -> list[dict]:
        config = self.config
        row = self._token_txn(txn, token_hash)
        self._process_ip_txn(txn, row, ip_hash, change=True)
        room = config.max_size_per_address - seeded.active_size_by_address_txn(txn, row.address, now)
        size = requested if requested < room else (room if room > 0 else 0)
        interval = config.seeded_interval
        limit = config.max_chunks_per_request
        out: list[dict[str, Any]] = []
        total = 0
        while (limit == 0 or len(out) < limit) and total < size:
            chunk = seeded.pool_take_txn(txn, size - total)
            if chunk is None:
                break
            try:
                state = State.from_dict(orjson.loads(chunk.hb_state))
                challenge = self.merkle.gen_challenge(state)
            except (HeartbeatError, HeartbeatFormatError, orjson.JSONDecodeError) as e:
                # e.g. the node secret changed: this chunk can never be verified
                log.warn("pooled seeded chunk {file_id} is unusable ({error}); discarded", file_id=chunk.file_id,
                         error=str(e))
                seeded.discard_file_txn(txn, chunk.file_id, now)
                continue
            due = now + interval
            contract_id = seeded.insert_contract_txn(
                txn, row.id, chunk.file_id, now, interval, challenge.index, due,
                orjson.dumps(state.to_dict()).decode(), orjson.dumps(challenge.to_dict()).decode(), chunk.tag)
            out.append({"seed": chunk.seed, "size": chunk.size, "file_hash": contract_id,
                        "challenge": challenge.to_dict(), "tag": orjson.Fragment(chunk.tag),
                        "due": float(due - now)})
            total += chunk.size
        return out

    # --- /challenge ---------------------------------------------------------------------------------

    async def challenges(self, token: str, items: Iterable[Any] | None) -> list[dict[str, Any]]:
        """§2.4 for ``items`` (as sent; the list ends at the first that is not a number) or, with
        None, for every active contract of the token."""
        token_hash = self._token_hash(token)
        wanted = None if items is None else self._ids(items, lambda item: item)
        return await self.node.db.run("v1_challenge", self._challenges_txn, token_hash, wanted, self.node.now())

    @staticmethod
    def _ids(items: Iterable[Any], key) -> list[tuple[Any, int, Any]]:
        """(as sent, id, item) for each item until the first whose key is not a number;
        duplicates collapse (the first wins)."""
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

    def _challenges_txn(self, txn, token_hash: bytes, wanted, now: float) -> list[dict[str, Any]]:
        row = self._token_txn(txn, token_hash)
        if wanted is None:
            wanted = [(i, i, None) for i in seeded.active_ids_txn(txn, row.id)]
        found = seeded.get_contracts_txn(txn, row.id, [w[1] for w in wanted])
        entries: list[dict[str, Any]] = []
        updates = []
        for sent, cid, _ in wanted:
            c = found.get(cid)
            if c is None:
                entries.append({"file_hash": _plain(sent), "error": "contract not found"})
            elif c.state != "active" or now >= c.deadline:
                entries.append({"file_hash": cid, "error": "contract expired"})
            elif c.hb_challenge is not None and c.due is not None and now < c.due:
                entries.append({"file_hash": cid, "challenge": orjson.Fragment(c.hb_challenge),
                                "due": c.due - now, "answered": c.answered})
            else:
                try:
                    state = State.from_dict(orjson.loads(c.hb_state or "null"))
                    challenge = self.merkle.gen_challenge(state)
                except (HeartbeatError, HeartbeatFormatError, orjson.JSONDecodeError):
                    entries.append({"file_hash": cid, "status": "no more challenges"})
                    continue
                old_due = c.due if c.due is not None else now
                new_due = old_due + c.interval
                challenge_json = orjson.dumps(challenge.to_dict()).decode()
                updates.append((orjson.dumps(state.to_dict()).decode(), challenge_json,
                                challenge.index, new_due, old_due, cid, c.due))
                entries.append({"file_hash": cid, "challenge": orjson.Fragment(challenge_json), "due": new_due - now,
                                "answered": False})
        seeded.set_challenges_txn(txn, updates)
        return entries

    # --- /answer ------------------------------------------------------------------------------------

    async def answer(self, token: str, ip: str | None, items: Iterable[Any]) -> list[dict[str, Any]]:
        """§2.5: one report entry per proof, checked in the original's order."""
        token_hash = self._token_hash(token)
        wanted = self._ids(items, _proof_key)
        report = await self.node.db.run("v1_answer", self._answer_txn, token_hash, self.node.hash_ip(ip), wanted,
                                        self.node.now())
        self.node.count_results("pass", sum(1 for r in report if r.get("status") == "ok"), protocol=1)
        self.node.count_results("fail", sum(1 for r in report if r.get("error") == "Invalid proof"), protocol=1)
        return report

    def _answer_txn(self, txn, token_hash: bytes, ip_hash: str | None, wanted, now: float) -> list[dict[str, Any]]:
        row = self._token_txn(txn, token_hash)
        self._process_ip_txn(txn, row, ip_hash, change=False)
        found = seeded.get_contracts_txn(txn, row.id, [w[1] for w in wanted])
        report: list[dict[str, Any]] = []
        passes: list[int] = []
        fails: list[int] = []
        for sent, cid, item in wanted:
            c = found.get(cid)
            if c is None:
                report.append({"file_hash": _plain(sent), "error": "contract not found"})
                continue
            try:
                proof = Proof.from_dict(item.get("proof"))
            except HeartbeatFormatError:
                report.append({"file_hash": cid, "error": "Proof corrupted"})
                continue
            if c.state != "active" or now >= c.deadline:
                report.append({"file_hash": cid, "error": "Answer failed: contract expired."})
            elif c.answered:
                report.append({"file_hash": cid, "error": "Challenge already answered."})
            elif self._verify(c, proof):
                report.append({"file_hash": cid, "status": "ok"})
                passes.append(cid)
            else:
                report.append({"file_hash": cid, "error": "Invalid proof"})
                fails.append(cid)
        seeded.record_answers_txn(txn, row.id, passes, fails)
        return report

    def _verify(self, c: seeded.V1Contract, proof: Proof) -> bool:
        try:
            challenge = Challenge.from_dict(orjson.loads(c.hb_challenge or "null"))
            state = State.from_dict(orjson.loads(c.hb_state or "null"))
            return self.merkle.verify(proof, challenge, state)
        except (HeartbeatError, HeartbeatFormatError, orjson.JSONDecodeError) as e:
            log.warn("v1 contract {contract_id}: stored heartbeat state unusable ({error})", contract_id=c.id,
                     error=str(e))
            return False

    # --- tags (added route) -------------------------------------------------------------------------

    async def tags(self, token: str) -> list[dict[str, Any]]:
        """The tags of the token's active contracts, for a farmer that lost its state."""
        token_hash = self._token_hash(token, NOT_FOUND)

        def txn_body(txn):
            row = self._token_txn(txn, token_hash, NOT_FOUND)
            return seeded.tags_txn(txn, row.id, self.node.now())

        rows = await self.node.db.run("v1_tags", txn_body)
        return [{"file_hash": cid, "tag": orjson.Fragment(tag)} for cid, tag in rows]

    # --- the seeded pool (timer) --------------------------------------------------------------------

    def encode_chunks(self, size: int, count: int) -> list[seeded.EncodedChunk]:
        """Encode ``count`` fresh seeded chunks of ``size`` bytes (CPU-heavy: a worker thread)."""
        out = []
        key = self.node.heartbeat_key()
        for _ in range(count):
            seed = os.urandom(16).hex()
            tag, state = encode_seeded(key, seed, size, n=self.config.seeded_challenges,
                                       check_fraction=self.config.seeded_check_fraction)
            digest = hashlib.sha256()
            stream = RandomIO(seed, size)
            for offset in range(0, size, 1 << 20):
                digest.update(stream.read_at(offset, min(1 << 20, size - offset)))
            out.append(seeded.EncodedChunk(seed, size, digest.hexdigest(), orjson.dumps(state.to_dict()).decode(),
                                           orjson.dumps(tag.to_dict()).decode()))
        return out

    async def refill_pool(self) -> int:
        """Encode and pool the chunks missing from ``seeded_pool``, at most ``POOL_PASS_BYTES``
        per pass (the timer calls this again). Returns the chunks added."""
        counts = await self.node.db.run("v1_pool_counts", seeded.pool_counts_txn)
        budget = POOL_PASS_BYTES
        added = 0
        for size, want in self.config.seeded_pool:
            missing = want - counts.get(size, 0)
            while missing > 0 and budget > 0:
                batch = max(1, min(missing, budget // size))
                chunks = await self.node.blocking(self.encode_chunks, size, batch)
                added += await self.node.db.run("v1_pool_add", seeded.pool_add_txn, chunks,
                                                self.config.seeded_interval, self.node.now())
                missing -= batch
                budget -= batch * size
        return added

    # --- expiry and uptime (timers) -----------------------------------------------------------------

    async def expire(self, page: int = 5000) -> seeded.ExpireResult:
        """End or fail expired v1 contracts (run by the contract timer, ``jobs/challenges.py``, after
        it has applied the downtime rule)."""
        total = seeded.ExpireResult()
        while True:
            result = await self.node.db.run("v1_expire", seeded.expire_txn, self.node.now(), page)
            total.ended += result.ended
            total.failed += result.failed
            if not result.more:
                self.node.count_results("miss", total.failed, protocol=1)
                return total

    async def shift_for_downtime(self, window: tuple[float, float]) -> int:
        """Give active v1 contracts the node's downtime back (see ``seeded.shift_for_downtime_txn``)."""
        return await self.node.db.run("v1_downtime", seeded.shift_for_downtime_txn, window[0], window[1])

    async def update_uptime(self) -> int:
        now = self.node.now()

        def txn_body(txn):
            since = self._uptime_since if self._uptime_ran else status.uptime_since_txn(txn)
            return status.update_uptime_txn(txn, now, since)

        updated = await self.node.db.run("v1_uptime", txn_body)
        self._uptime_since, self._uptime_ran = now, True
        return updated

    # --- status API ---------------------------------------------------------------------------------

    @staticmethod
    def _farmer_dict(row: status.FarmerRow) -> dict[str, Any]:
        return {"id": row.farmer_id, "address": row.address, "location": None,
                "uptime": round(row.uptime * 100, 2), "heartbeats": row.heartbeats, "contracts": row.contracts,
                "size": row.size, "online": row.online, "last_due": iso_utc(row.last_due)}

    async def farmers(self, online: bool = False, sort: str = "id", descending: bool = False,
                      limit: int | None = None, page: int | None = None) -> list[dict[str, Any]]:
        if sort not in status.SORT_COLUMNS:
            raise v1_error("Invalid sort.")
        offset = 0
        if limit is not None:
            limit = min(limit, 1 << 31)
            offset = min(limit * (page or 0), 1 << 62)
        rows = await self.node.db.run("status_list", status.farmers_txn, self.node.now(), online, sort, descending,
                                      limit, offset)
        return [self._farmer_dict(r) for r in rows]

    async def farmer(self, farmer_id: str) -> dict[str, Any]:
        farmer_id = farmer_id.lower()
        if len(farmer_id) != 20 or not all(c in "0123456789abcdef" for c in farmer_id):
            raise v1_error(NONEXISTENT_FARMER, NOT_FOUND)
        row = await self.node.db.run("status_show", status.farmer_txn, farmer_id, self.node.now())
        if row is None:
            raise v1_error(NONEXISTENT_FARMER, NOT_FOUND)
        return self._farmer_dict(row)


def _proof_key(item: Any) -> Any:
    if not isinstance(item, dict):
        raise TypeError("a proof item must be an object")
    return item["file_hash"]


#: the integers orjson can write; others are echoed as their decimal text, a raw JSON number
_JSON_INTS = range(-(1 << 63), 1 << 64)


def _plain(value: Any) -> Any:
    """An item echoed back as sent (ijson hands out Decimals for non-integers; an integer past 64
    bits, which no contract id can be, is written as the number it was sent as)."""
    if type(value).__name__ == "Decimal":
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool) and value not in _JSON_INTS:
        return orjson.Fragment(str(value))
    return value

