"""Farming with protocol v1 (docs/protocol-v1.md): seeded chunks taken in batches by size, written to
disk and checked, each challenge proven from the stored bytes (off the reactor) and answered in
batches, the next challenge asked for once the current one is due, the contract's end handled.

Each contract is in one place at a time: being written or proven (a worker thread), a proof ready
to send, or waiting (a heap by time) for its next challenge. A step does only what is due.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Any

from twisted.logger import Logger

from downstream_tx import wire
from downstream_tx.heartbeat import HeartbeatFormatError

from .chunks import ChunkProblem, is_disk_full, prove_seeded, write_seeded
from .client import NodeRefused, NodeUnavailable
from .contracts import Contract
from .session import Session, TokenLost

log = Logger()

#: proofs (or challenge requests) in one /answer (or /challenge) request, well under wire.MAX_ITEMS
BATCH = 500
#: seconds after a due time before the next challenge is asked for (the node's clock and timer)
UPDATE_DELAY = 1.0
#: seconds after which a contract the node called expired is asked about again, then given up: the
#: node may still bring it back -- its first timer pass after a restart gives the downtime back, and
#: containment asks a missed challenge again after the node's late_grace (5 s by default) and a tick
EXPIRED_RECHECKS = (1.0, 3.0, 8.0)
#: seconds ready proofs wait so that they go in one request
BATCH_DELAY = 0.2
ENDS = {wire.CONTRACT_EXPIRED, wire.ANSWER_EXPIRED}


class V1Session(Session):
    protocol = "v1"

    def __init__(self, node: Any):
        super().__init__(node)
        self.jobs: deque[tuple[str, Contract]] = deque()  # ("write" | "prove", contract)
        self.working = 0
        self.ready: dict[Any, tuple[Contract, dict[str, Any]]] = {}
        self.ready_since: float | None = None
        self.waiting: list[tuple[float, int, Contract]] = []
        #: contract id -> the time it waits for in ``waiting`` (older heap entries are stale)
        self.wait_at: dict[Any, float] = {}
        self._seq = itertools.count()
        self.filling = self.submitting = self.updating = False
        self.next_fill = 0.0
        #: contract id -> how many times in a row the node called it expired
        self.expired: dict[Any, int] = {}

    # --- where each contract goes

    def resume(self) -> None:
        for c in list(self.book.of("v1")):
            self.place(c)

    def place(self, c: Contract) -> None:
        """Put ``c`` where its state says it belongs."""
        if c.problem is not None or c.answered:
            self.wait(c, c.due_at + UPDATE_DELAY)
        elif not c.stored:
            self.jobs.append(("write", c))
        else:
            self.prove_next(c)

    def wait(self, c: Contract, at: float) -> None:
        """Ask the node about ``c`` at ``at`` (an earlier entry for it in the heap no longer counts)."""
        self.wait_at[c.id] = at
        heapq.heappush(self.waiting, (at, next(self._seq), c))

    def prove_next(self, c: Contract) -> None:
        self.wait_at.pop(c.id, None)
        self.jobs.append(("prove", c))

    # --- the step

    def step(self) -> float | None:
        now = self.clock.seconds()
        self._start_jobs()
        node = self.node
        if not node.ready():
            return node.open_at
        wanted: list[float] = []
        if self.ready and not self.submitting:
            if self.ready_since is None:
                self.ready_since = now
            if now >= self.ready_since + BATCH_DELAY or len(self.ready) >= BATCH:
                self.submitting = True
                self.spawn(self._submit)
            else:
                wanted.append(self.ready_since + BATCH_DELAY)
        if self.waiting and not self.updating:
            if self.waiting[0][0] <= now:
                self.updating = True
                self.spawn(self._update)
            else:
                wanted.append(self.waiting[0][0])
        if not self.filling and not self.jobs and self.working == 0 and not node.v0_first:
            if now >= self.next_fill:
                room = node.room()
                if room > 0:
                    self.filling = True
                    self.spawn(self._fill, room)
                else:  # full: look again later (room is a sum over the contracts)
                    self.next_fill = now + node.farm.chunk_retry
            else:
                wanted.append(self.next_fill)
        return min(wanted) if wanted else None

    def finish(self) -> None:
        if self.ready and not self.submitting:
            self.submitting = True
            self.spawn(self._submit)

    # --- local work on the worker threads

    def _start_jobs(self) -> None:
        limit = self.node.farm.threads * 2
        for _ in range(len(self.jobs) + limit):  # a write done at once queues its proof: look at that too
            if not self.jobs or self.working >= limit:
                break
            kind, c = self.jobs.popleft()
            if self.book.get("v1", c.id) is not c:
                continue
            self.working += 1
            self.spawn(self._write if kind == "write" else self._prove, c)

    async def _write(self, c: Contract) -> None:
        try:
            await self.node.blocking(write_seeded, self.book.path(c, ".chunk"), self.book.path(c, ".tag"),
                                     c.seed, c.size, c.tag)
        except Exception as e:
            if is_disk_full(e):
                self.node.disk_full = True
                self.next_fill = self.clock.seconds() + self.node.farm.chunk_retry
                why = f"the disk is full ({self.book.directory}): no new chunk until there is room"
            elif isinstance(e, (ChunkProblem, HeartbeatFormatError)):
                why = f"the node's chunk cannot be stored ({e})"
            else:
                why = f"the chunk could not be written ({e})"
            log.error("{node} v1: contract {cid} ({size} bytes) not taken: {why}", node=self.node.url, cid=c.id,
                      size=c.size, why=why)
            self.book.remove(c)  # v1 has no removal route: the node will see it missed
            self.node.save_soon()
            return
        finally:
            self.working -= 1
        c.tag = None
        c.stored = True
        self.node.disk_full = False
        self.node.save_soon()
        self.jobs.appendleft(("prove", c))

    async def _prove(self, c: Contract) -> None:
        try:
            proof = await self.node.blocking(prove_seeded, self.book.path(c, ".chunk"), self.book.path(c, ".tag"),
                                             c.challenge, c.size)
        except ChunkProblem as e:
            self.lost(c, e.reason)
            return
        except Exception as e:
            self.lost(c, f"the proof could not be computed ({e})")
            return
        finally:
            self.working -= 1
        if self.book.get("v1", c.id) is c:
            self.ready[c.id] = (c, proof)

    def lost(self, c: Contract, reason: str) -> None:
        """The data cannot back an answer: say so, send nothing, wait for the node's verdict."""
        if c.problem is None:
            log.error("{node} v1: contract {cid}: {reason}; it will not be answered (the node will count it "
                      "missed)", node=self.node.url, cid=c.id, reason=reason)
        c.problem = reason
        self.node.dirty()
        self.wait(c, c.due_at + UPDATE_DELAY)

    # --- requests

    def _token_path(self, route: str) -> str:
        return f"{wire.V1_PREFIX}/{route}/{self.node.token}"

    async def _fill(self, room: int) -> None:
        try:
            try:
                answer = await self.node.request("GET", f"{self._token_path('chunk')}/{room}")
            except NodeRefused as e:
                if self.refused_token(e):
                    raise TokenLost() from None
                log.warn("{node} v1: no chunks: {message}", node=self.node.url, message=e.message)
                self.next_fill = self.clock.seconds() + self.node.farm.chunk_retry
                return
            except NodeUnavailable:
                return
            chunks = answer.get("chunks") if isinstance(answer, dict) else None
            if not isinstance(chunks, list) or not all(_chunk_ok(ch) for ch in chunks):
                log.error("{node} v1: malformed /chunk answer; asking again later", node=self.node.url)
                self.next_fill = self.clock.seconds() + self.node.farm.chunk_retry
                return
            total = sum(ch["size"] for ch in chunks)
            if total > room:
                log.error("{node} v1: the node sent {total} bytes of chunks for {room} asked; not taken",
                          node=self.node.url, total=total, room=room)
                self.next_fill = self.clock.seconds() + self.node.farm.chunk_retry
                return
            if not chunks:
                self.next_fill = self.clock.seconds() + self.node.farm.chunk_retry
                return
            now = self.clock.seconds()
            for ch in chunks:
                c = Contract("v1", ch["file_hash"], ch["size"], ch["challenge"], now + float(ch["due"]),
                             seed=ch["seed"], tag=ch["tag"], added=now)
                self.book.add(c)
                self.jobs.append(("write", c))
            self.node.save_soon()
            log.info("{node} v1: {n} new contracts, {total} bytes", node=self.node.url, n=len(chunks), total=total)
        finally:
            self.filling = False

    async def _submit(self) -> None:
        batch = list(itertools.islice(self.ready.values(), BATCH))
        for c, _ in batch:
            del self.ready[c.id]
        if not self.ready:
            self.ready_since = None
        try:
            body = {"proofs": [{"file_hash": c.id, "proof": proof} for c, proof in batch]}
            try:
                # the published client's request, header included (its body is plain JSON)
                answer = await self.node.request("POST", self._token_path("answer"), body,
                                                 {"Content-Encoding": "gzip"})
            except NodeRefused as e:
                if self.refused_token(e):
                    raise TokenLost() from None
                log.warn("{node} v1: answers refused: {message}", node=self.node.url, message=e.message)
                self._requeue(batch)
                self.node.unavailable(NodeUnavailable(e.message))
                return
            except NodeUnavailable:
                self._requeue(batch)
                return
            report = answer.get("report") if isinstance(answer, dict) else None
            if not isinstance(report, list):
                log.error("{node} v1: malformed /answer report", node=self.node.url)
                self._requeue(batch)
                self.node.unavailable(NodeUnavailable("malformed /answer report"))
                return
            sent = {c.id: c for c, _ in batch}
            seen: set[Any] = set()
            passed = 0
            for entry in report:
                c = _entry_contract(entry, sent)
                if c is None or c.id in seen:
                    continue
                seen.add(c.id)
                if entry.get("status") == "ok":
                    passed += 1
                    c.passed += 1
                    self._answered(c)
                elif entry.get("error") == wire.ALREADY_ANSWERED:
                    self._answered(c)  # an earlier copy of this answer got there
                elif entry.get("error") in ENDS:
                    self._expired(c, entry["error"])
                else:
                    c.failed += 1
                    self.node.count(self.protocol, failed=1)
                    log.error("{node} v1: contract {cid}: the node refused the proof: {error}", node=self.node.url,
                              cid=c.id, error=entry.get("error") or entry.get("status"))
                    self.drop(c, f"proof refused ({entry.get('error') or entry.get('status')})")
            self._requeue([(c, p) for c, p in batch if c.id not in seen])
            if passed:
                self.node.count("v1", passed=passed)
            self.node.dirty()
        finally:
            self.submitting = False

    def _requeue(self, batch: list[tuple[Contract, dict[str, Any]]]) -> None:
        for c, proof in batch:
            if self.book.get("v1", c.id) is c:
                self.ready.setdefault(c.id, (c, proof))

    def _answered(self, c: Contract) -> None:
        c.answered = True
        self.expired.pop(c.id, None)
        self.wait(c, c.due_at + UPDATE_DELAY)

    def _expired(self, c: Contract, error: str) -> None:
        """The node says the contract expired: for good, or until its timer gives it back (the
        downtime rule, containment). Ask again a few times over some seconds before giving it up."""
        times = self.expired.get(c.id, 0)
        if times >= len(EXPIRED_RECHECKS):
            self.expired.pop(c.id, None)
            self.drop(c, error)
            return
        self.expired[c.id] = times + 1
        c.answered = False
        self.wait(c, self.clock.seconds() + EXPIRED_RECHECKS[times])

    async def _update(self) -> None:
        now = self.clock.seconds()
        batch: dict[Any, Contract] = {}
        while self.waiting and self.waiting[0][0] <= now and len(batch) < BATCH:
            at, _, c = heapq.heappop(self.waiting)
            if self.wait_at.get(c.id) == at and self.book.get("v1", c.id) is c:
                del self.wait_at[c.id]
                batch[c.id] = c
        try:
            if not batch:
                return
            try:
                answer = await self.node.request("POST", self._token_path("challenge"), {"hashes": list(batch)})
            except NodeRefused as e:
                if self.refused_token(e):
                    raise TokenLost() from None
                log.warn("{node} v1: challenges refused: {message}", node=self.node.url, message=e.message)
                self.node.unavailable(NodeUnavailable(e.message))
                self._rewait(batch.values())
                return
            except NodeUnavailable:
                self._rewait(batch.values())
                return
            entries = answer.get("challenges") if isinstance(answer, dict) else None
            if not isinstance(entries, list):
                log.error("{node} v1: malformed /challenge answer", node=self.node.url)
                self.node.unavailable(NodeUnavailable("malformed /challenge answer"))
                self._rewait(batch.values())
                return
            now = self.clock.seconds()
            done: set[Any] = set()
            for entry in entries:
                c = _entry_contract(entry, batch)
                if c is None or c.id in done:
                    continue
                done.add(c.id)
                self._challenge_entry(c, entry, now)
            self._rewait([c for cid, c in batch.items() if cid not in done])
            self.node.dirty()
        finally:
            self.updating = False

    def _rewait(self, contracts: Any) -> None:
        at = self.clock.seconds() + UPDATE_DELAY
        for c in contracts:
            if self.book.get("v1", c.id) is c:
                self.wait(c, at)

    def _challenge_entry(self, c: Contract, entry: dict[str, Any], now: float) -> None:
        if "error" in entry or "status" in entry:
            why = entry.get("error") or entry.get("status")
            if why == wire.CONTRACT_EXPIRED and c.problem is None:
                self._expired(c, why)
            elif c.problem is not None:
                self.drop(c, f"{why} (its data was lost: {c.problem})")
            else:
                self.drop(c, str(why))
            return
        try:
            due = float(entry["due"])
            challenge = entry["challenge"]
            answered = bool(entry["answered"])
        except (KeyError, TypeError, ValueError):
            log.error("{node} v1: malformed challenge for contract {cid}", node=self.node.url, cid=c.id)
            self.wait(c, now + UPDATE_DELAY)
            return
        self.expired.pop(c.id, None)
        c.due_at = now + due
        if answered:  # asked before it was due: ask again then
            c.answered = True
            self.wait(c, c.due_at + UPDATE_DELAY)
            return
        c.challenge = challenge
        c.answered = False
        if c.problem is not None:
            self.wait(c, c.due_at + UPDATE_DELAY)
        else:
            self.prove_next(c)


def _entry_contract(entry: Any, contracts: dict[Any, Contract]) -> Contract | None:
    """The contract a report entry is about (the id with the JSON type it was sent with)."""
    if not isinstance(entry, dict):
        return None
    cid = entry.get("file_hash")
    try:
        c = contracts.get(cid)
    except TypeError:
        return None
    return c if c is not None and type(cid) is type(c.id) else None


def _chunk_ok(chunk: Any) -> bool:
    return (isinstance(chunk, dict) and all(k in chunk for k in wire.CHUNK_KEYS)
            and type(chunk["size"]) is int and chunk["size"] >= 0 and isinstance(chunk["seed"], str)
            and isinstance(chunk["due"], (int, float)) and isinstance(chunk["challenge"], dict)
            and isinstance(chunk["tag"], dict) and isinstance(chunk["file_hash"], (int, str)))
