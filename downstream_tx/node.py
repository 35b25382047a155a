"""The node's private functions: the library API behind the HTTP routes, the timers and
``downstream-admin``.

Every method is a coroutine. Database work goes through :meth:`Database.run` (one transaction per
call); CPU-heavy or blocking file work goes through ``blocking`` (a worker thread in the daemon).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from downstream_tx import bitcoin
from downstream_tx.chunkstore import ChunkStore, Progress
from downstream_tx.config import Config
from downstream_tx.db import challenges, contracts, files, meta, tokens
from downstream_tx.db.database import Database
from downstream_tx.errors import CONFLICT, FORBIDDEN, INVALID, LIMIT, NOT_FOUND, NodeError
from downstream_tx.heartbeat import hashchal

log = Logger()
Blocking = Callable[..., Awaitable[Any]]

TOKEN_BYTES = 16
#: node_meta name of the time the challenge timer last completed a pass
LAST_ALIVE = "last_alive"
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def hash_token(token: str) -> bytes:
    """SHA-256 of the token's 16 raw bytes: what the database keeps instead of the token."""
    raw = parse_token(token)
    return hashlib.sha256(raw).digest()


def farmer_id_of(token_hash: bytes) -> str:
    return token_hash.hex()[:20]


def parse_token(token: str) -> bytes:
    if not isinstance(token, str) or not _HEX32.match(token):
        raise NodeError(INVALID, "invalid_token", "token must be 32 hexadecimal characters")
    return bytes.fromhex(token)


def parse_file_hash(file_hash: str) -> str:
    if not is_hex64(file_hash):
        raise NodeError(INVALID, "invalid_hash", "file hash must be 64 hexadecimal characters")
    return file_hash.lower()


def is_hex64(text: object) -> bool:
    return isinstance(text, str) and _HEX64.match(text) is not None


class Node:
    def __init__(self, config: Config, db: Database, clock: Any, blocking: Blocking,
                 chunks: ChunkStore | None = None):
        self.config = config
        self.db = db
        self.clock = clock
        self.blocking = blocking
        self.chunks = chunks or ChunkStore(config.chunk_path)
        self.secret: bytes | None = None
        #: a window (start, end) of node downtime: deadlines inside it are not counted as misses
        self.forgive: tuple[float, float] | None = None
        self._topping_up: set[int] = set()
        #: called with (result, count, protocol) for every pass/fail/miss counted (metrics)
        self.result_observers: list[Callable[[str, int, int], None]] = []
        self._v1: Any = None

    def count_results(self, result: str, n: int, protocol: int = 0) -> None:
        for observer in self.result_observers:
            observer(result, n, protocol)

    def now(self) -> float:
        return self.clock.seconds()

    async def start(self) -> None:
        """Load (on first start: create) the node secret."""
        self.chunks.ensure()
        self.secret = await self.db.run("node_secret", meta.get_or_create_txn, "secret", os.urandom(32))

    def _secret(self) -> bytes:
        if self.secret is None:
            raise RuntimeError("Node.start() has not run")
        return self.secret

    def heartbeat_key(self) -> bytes:
        """The v1 Merkle heartbeat key, derived from the node secret (never sent, never logged)."""
        return hmac.new(self._secret(), b"heartbeat-key", hashlib.sha256).digest()

    @property
    def v1(self):
        """Protocol v1 functions (:class:`downstream_tx.farming_v1.FarmingV1`)."""
        if self._v1 is None:
            from downstream_tx.farming_v1 import FarmingV1

            self._v1 = FarmingV1(self)
        return self._v1

    def hash_ip(self, ip: str | None) -> str | None:
        if not ip:
            return None
        return hmac.new(self._secret(), b"ip:" + ip.encode(), hashlib.sha256).hexdigest()

    # --- tokens ---------------------------------------------------------------------------------

    async def create_token(self, address: str, ip: str | None = None, message: str | None = None,
                           signature: str | None = None, location: str | None = None) -> str:
        """A new token for ``address``; only its SHA-256 is stored."""
        try:
            bitcoin.decode_address(address)
        except bitcoin.InvalidAddress as e:
            raise NodeError(INVALID, "invalid_address", f"invalid address: {e}") from None
        raw = os.urandom(TOKEN_BYTES)
        token_hash = hashlib.sha256(raw).digest()
        await self.db.run("create_token", self._create_token_txn, address, token_hash, self.hash_ip(ip),
                          message, signature, location)
        log.info("token created for farmer {farmer_id}", farmer_id=farmer_id_of(token_hash))
        return raw.hex()

    def _create_token_txn(self, txn, address, token_hash, ip_hash, message, signature, location) -> int:
        config = self.config
        if config.whitelist:
            balance = tokens.balance_txn(txn, address)
            if balance is None:
                raise NodeError(FORBIDDEN, "not_whitelisted", "address is not in the whitelist")
            if balance < config.min_balance:
                raise NodeError(FORBIDDEN, "not_whitelisted",
                                f"address balance is under the minimum of {config.min_balance}")
        if config.max_tokens_per_address and tokens.count_by_address_txn(txn, address) >= config.max_tokens_per_address:
            raise NodeError(LIMIT, "limit_reached",
                            f"address already holds {config.max_tokens_per_address} tokens")
        if ip_hash and config.max_tokens_per_ip and tokens.count_by_ip_txn(txn, ip_hash) >= config.max_tokens_per_ip:
            raise NodeError(LIMIT, "limit_reached",
                            f"IP Disallowed, only {config.max_tokens_per_ip} tokens are permitted per IP address")
        return tokens.insert_txn(txn, token_hash, farmer_id_of(token_hash), address, ip_hash, self.now(),
                                 location, message, signature)

    async def token(self, token: str) -> tokens.TokenRow:
        row = await self.db.run("get_token", tokens.get_by_hash_txn, hash_token(token))
        if row is None:
            raise NodeError(NOT_FOUND, "no_token", "unknown token")
        return row

    @staticmethod
    def _token_txn(txn, token_hash: bytes) -> tokens.TokenRow:
        row = tokens.get_by_hash_txn(txn, token_hash)
        if row is None:
            raise NodeError(NOT_FOUND, "no_token", "unknown token")
        return row

    def with_token(self, desc: str, func: Callable[..., Any], token: str, *args: Any) -> Awaitable[Any]:
        """``(token row, func(txn, token_id, *args))`` in one transaction that first looks the token
        up (404 no_token if unknown): one database round trip per farmer request, not two."""
        token_hash = hash_token(token)

        def body(txn):
            row = self._token_txn(txn, token_hash)
            return row, func(txn, row.id, *args)

        return self.db.run(desc, body)

    async def delete_token(self, token: str) -> int:
        """Delete a token; its active contracts end and their files return to the pool."""
        row = await self.token(token)
        ended = await self.db.run("delete_token", tokens.delete_txn, row.id, self.now())
        log.info("token of farmer {farmer_id} deleted, {ended} contracts ended", farmer_id=row.farmer_id,
                 ended=ended)
        return ended

    async def farmer(self, farmer_id: str) -> dict:
        farmer_id = farmer_id.lower()
        if len(farmer_id) != 20 or any(c not in "0123456789abcdef" for c in farmer_id):
            raise NodeError(INVALID, "invalid_farmer_id", "farmer id must be 20 hexadecimal characters")

        def txn_body(txn):
            rows = tokens.get_by_farmer_txn(txn, farmer_id)
            if not rows:
                return None
            return rows, contracts.summary_for_tokens_txn(txn, [r.id for r in rows])

        found = await self.db.run("farmer", txn_body)
        if found is None:
            raise NodeError(NOT_FOUND, "no_farmer", "unknown farmer id")
        rows, summary = found
        first = rows[0]
        return {"farmer_id": farmer_id, "address": first.address, "created": first.created,
                "heartbeats": sum(r.hbcount for r in rows), "contracts": summary}

    async def import_whitelist(self, rows: Iterable[tuple[str, int]], replace: bool = False) -> dict[str, int]:
        checked = []
        for line, (address, balance) in enumerate(rows, 1):
            try:
                bitcoin.decode_address(address)
            except bitcoin.InvalidAddress as e:
                raise NodeError(INVALID, "invalid_address", f"row {line}: {e}") from None
            if not isinstance(balance, int) or balance < 0:
                raise NodeError(INVALID, "invalid_balance", f"row {line}: balance must be a whole number >= 0")
            checked.append((address, balance))
        return await self.db.run("import_whitelist", tokens.import_whitelist_txn, checked, replace, self.now())

    # --- files ------------------------------------------------------------------------------------

    async def add_file(self, path: str, redundancy: int, interval: int, metadisk: bool = False,
                       progress: Progress | None = None) -> str:
        """Copy a chunk into the store (encrypted unless ``metadisk``), record it, and generate its
        first challenge batch. Returns the file hash (SHA-256 of the stored bytes)."""
        if not isinstance(redundancy, int) or not 1 <= redundancy <= 1000:
            raise NodeError(INVALID, "invalid_redundancy", "redundancy must be a whole number from 1 to 1000")
        if not isinstance(interval, int) or not 1 <= interval <= 30 * 86400:
            raise NodeError(INVALID, "invalid_interval", "interval must be a whole number of seconds, 1 to 2592000")
        ingested = await self.blocking(self._ingest, path, not metadisk, progress)
        try:
            file_id = await self.db.run("add_file", self._add_file_txn, ingested, redundancy, interval)
        except BaseException:
            self.chunks.discard(ingested)
            raise
        try:
            self.chunks.commit(ingested)
        except OSError:
            await self.db.run("undo_add_file", files.remove_txn, file_id, self.now())
            self.chunks.discard(ingested)
            raise
        await self._generate_batch(file_id, ingested.file_hash, os.urandom(32), self.config.challenge_batch)
        log.info("file {file_hash} added ({size} bytes, redundancy {redundancy}, interval {interval}s)",
                 file_hash=ingested.file_hash, size=ingested.size, redundancy=redundancy, interval=interval)
        return ingested.file_hash

    def _ingest(self, path: str, encrypt: bool, progress: Progress | None):
        """Copy ``path`` into the chunk store. The file is checked after it is opened (non-blocking,
        so a FIFO cannot hang the command; a path swapped after a check cannot slip through): only a
        regular file (or a symlink to one) is accepted."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except IsADirectoryError:
            raise NodeError(INVALID, "invalid_path", f"{path}: not a regular file (a directory)") from None
        except FileNotFoundError as e:
            raise NodeError(INVALID, "invalid_path", f"{path}: {e.strerror}") from None
        except OSError as e:
            raise NodeError(INVALID, "unreadable", f"{path}: cannot read: {e.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NodeError(INVALID, "invalid_path", f"{path}: not a regular file")
            size = info.st_size
            if size == 0:
                raise NodeError(INVALID, "empty_file", f"{path}: file is empty")
            if size > self.config.max_file_size:
                raise NodeError(INVALID, "file_too_large",
                                f"{path}: {size} bytes is over max_file_size ({self.config.max_file_size})")
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            with os.fdopen(fd, "rb") as source:
                fd = -1
                return self.chunks.ingest(source, size, encrypt, progress)
        except OSError as e:
            raise NodeError(INVALID, "unreadable", f"{path}: cannot read: {e.strerror}") from None
        finally:
            if fd >= 0:
                os.close(fd)

    def _add_file_txn(self, txn, ingested, redundancy: int, interval: int) -> int:
        duplicate = files.find_duplicate_txn(txn, ingested.file_hash, ingested.original_hash)
        if duplicate is not None:
            raise NodeError(CONFLICT, "duplicate", f"these bytes are already monitored as {duplicate}")
        return files.insert_txn(
            txn, file_hash=ingested.file_hash, kind="stored", size=ingested.size, redundancy=redundancy,
            interval=interval, now=self.now(), original_hash=ingested.original_hash, enc_key=ingested.enc_key,
        )

    async def _active_file(self, file_hash: str) -> files.FileRow:
        row = await self.db.run("get_file", files.get_active_txn, parse_file_hash(file_hash))
        if row is None:
            raise NodeError(NOT_FOUND, "no_hash", "no such file is monitored")
        return row

    async def remove_file(self, file_hash: str) -> int:
        """Stop monitoring a file: its contracts end and its bytes leave the chunk store."""
        row = await self._active_file(file_hash)
        ended = await self.db.run("remove_file", files.remove_txn, row.id, self.now())
        if row.kind == "stored":
            await self.blocking(self.chunks.delete, row.file_hash)
        log.info("file {file_hash} removed, {ended} contracts ended", file_hash=row.file_hash, ended=ended)
        return ended

    async def list_files(self) -> list[dict]:
        out: list[dict] = []
        after = 0
        while True:
            page = await self.db.run("list_files", files.list_active_txn, "stored", after, 1000)
            out.extend(page)
            if len(page) < 1000:
                return out
            after = page[-1]["id"]

    async def export_file(self, file_hash: str, output: str, progress: Progress | None = None) -> int:
        """Write a stored file's original bytes (decrypted) to ``output`` (created 0600)."""
        row = await self._active_file(file_hash)
        if row.kind != "stored":
            raise NodeError(INVALID, "not_stored", "seeded files have no stored bytes")

        def write() -> int:
            try:
                fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise NodeError(INVALID, "exists", f"{output}: already exists") from None
            except OSError as e:
                raise NodeError(INVALID, "invalid_path", f"{output}: {e.strerror}") from None
            with os.fdopen(fd, "wb") as out:
                return self.chunks.export(row.file_hash, row.enc_key, out, progress)

        return await self.blocking(write)

    # --- v0 hash challenges -----------------------------------------------------------------------

    async def gen_challenges(self, file_hash: str, root_seed: bytes | None = None,
                             count: int | None = None) -> dict:
        """Generate and store a challenge batch for a file (random root seed unless given)."""
        row = await self._active_file(file_hash)
        if row.kind != "stored":
            raise NodeError(INVALID, "not_stored", "seeded files use Merkle challenges")
        count = self.config.challenge_batch if count is None else count
        if not 1 <= count <= 100_000:
            raise NodeError(INVALID, "invalid_count", "count must be from 1 to 100000")
        if root_seed is not None and len(root_seed) != 32:
            raise NodeError(INVALID, "invalid_root_seed", "root seed must be 32 bytes (64 hex characters)")
        return await self._generate_batch(row.id, row.file_hash, root_seed or os.urandom(32), count)

    async def _generate_batch(self, file_id: int, file_hash: str, root_seed: bytes, count: int) -> dict:
        seeds, answers, root = await self.blocking(self._compute_batch, file_hash, root_seed, count)
        batch_id = await self.db.run("store_batch", challenges.insert_batch_txn, file_id, root_seed, root, seeds,
                                     answers, self.now())
        return {"batch_id": batch_id, "file_hash": file_hash, "root_seed": root_seed.hex(),
                "merkle_root": root.hex(), "count": count}

    def _compute_batch(self, file_hash: str, root_seed: bytes, count: int):
        seeds = hashchal.derive_seeds(self._secret(), root_seed, count)
        answers = hashchal.batch_answers(seeds, self.chunks.path_for(file_hash))
        return seeds, answers, hashchal.merkle_root(seeds, answers)

    async def update_challenges(self, page: int = 5000) -> contracts.TickResult:
        """One pass of the periodic work: issue due challenges, count misses, fail contracts, and
        top up files whose unused challenges ran low."""
        total = contracts.TickResult()
        while True:
            result = await self.db.run("update_challenges", contracts.update_due_txn, self.now(),
                                       self.config.max_failures, page, self.forgive)
            for name in ("issued", "missed", "forgiven", "failed", "starved"):
                setattr(total, name, getattr(total, name) + getattr(result, name))
            total.file_ids |= result.file_ids
            if not result.more:
                break
        self.count_results("miss", total.missed)
        if total.file_ids:
            # a starved contract means its file has no unused challenge at all: top up regardless
            floor = 1 if total.starved else 0
            await self.top_up(total.file_ids, max(self.config.challenge_low_water, floor))
        if total.starved:
            filled = await self.db.run("fill_starved", contracts.fill_starved_txn, self.now())
            total.issued += filled
            total.starved -= filled
        return total

    async def top_up(self, file_ids: Iterable[int] | None = None, low_water: int | None = None) -> int:
        """Generate a new batch for every file (of ``file_ids``, or all) under the low-water mark."""
        low_water = self.config.challenge_low_water if low_water is None else low_water
        if file_ids is None:
            low = await self.db.run("low_files", challenges.all_low_files_txn, low_water)
        else:
            low = await self.db.run("low_files", challenges.low_files_txn, list(file_ids), low_water)
        made = 0
        for file_id in low:
            if file_id in self._topping_up:
                continue
            self._topping_up.add(file_id)
            try:
                row = await self.db.run("get_file", files.get_by_id_txn, file_id)
                if row is None or row.removed is not None:
                    continue
                await self._generate_batch(file_id, row.file_hash, os.urandom(32), self.config.challenge_batch)
                made += 1
            except Exception:
                log.failure("challenge top-up for file {file_id} failed", file_id=file_id)
            finally:
                self._topping_up.discard(file_id)
        return made

    # --- node liveness (timer downtime rule) --------------------------------------------------------

    async def last_alive(self) -> float | None:
        """When the challenge timer last completed a pass (any earlier run of the node)."""
        value = await self.db.run("last_alive", meta.get_txn, LAST_ALIVE)
        if value is None:
            return None
        try:
            return float(value.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            log.warn("ignoring an unreadable {name} marker", name=LAST_ALIVE)
            return None

    async def mark_alive(self, when: float) -> None:
        await self.db.run("mark_alive", meta.set_txn, LAST_ALIVE, repr(float(when)).encode("ascii"))

    # --- v0 farmer functions ----------------------------------------------------------------------

    async def get_chunk(self, token: str) -> contracts.Assignment:
        _, assignment = await self.with_token("get_chunk", contracts.assign_txn, token, self.now())
        if assignment is None:
            raise NodeError(NOT_FOUND, "no_chunks", "no chunk needs another farmer right now")
        self._top_up_soon([assignment.file_id])
        return assignment

    def _top_up_soon(self, file_ids: list[int]) -> None:
        """Start a top-up without making the caller wait for it (it logs its own errors)."""
        defer.ensureDeferred(self.top_up(file_ids))

    async def due(self, token: str) -> tuple[list[dict], list[dict]]:
        """(all active contracts, those with an outstanding challenge) of a token."""
        _, rows = await self.with_token("due", contracts.token_contracts_txn, token)
        now = self.now()
        outstanding = [r for r in rows if r["challenge"] is not None and not r["answered"] and r["deadline"] > now]
        return rows, outstanding

    async def answer(self, token: str, file_hash: str, response: str) -> str:
        """Check a v0 answer: ``"pass"`` or ``"fail"``."""
        if not is_hex64(response):
            raise NodeError(INVALID, "invalid_response", "response must be 64 hexadecimal characters")
        file_hash = parse_file_hash(file_hash)
        row, result = await self.with_token("answer", contracts.answer_txn, token, file_hash, response, self.now(),
                                            self.config.max_failures)
        if result.status == "no_hash":
            raise NodeError(NOT_FOUND, "no_hash", "no active contract on this file for this token")
        if result.status == "not_due":
            raise NodeError(CONFLICT, "not_due", "no challenge is outstanding on this contract")
        self.count_results(result.status, 1)
        if result.failed_contract:
            log.info("contract of farmer {farmer_id} on {file_hash} failed", farmer_id=row.farmer_id,
                     file_hash=file_hash)
        return result.status

    async def download(self, file_hash: str) -> tuple[str, int]:
        """(path, size) of a monitored stored file's bytes, for the download route."""
        row = await self._active_file(file_hash)
        if row.kind != "stored":
            raise NodeError(NOT_FOUND, "no_hash", "no such file is stored on this node")
        return self.chunks.path_for(row.file_hash), row.size

    async def end_contract(self, token: str, file_hash: str) -> None:
        file_hash = parse_file_hash(file_hash)
        _, ended = await self.with_token("end_contract", contracts.end_one_txn, token, file_hash, self.now())
        if not ended:
            raise NodeError(NOT_FOUND, "no_hash", "no active contract on this file for this token")

