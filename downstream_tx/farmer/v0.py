"""Farming with protocol v0 (docs/protocol-v0.md): a chunk contract at a time, its data downloaded
once from the contract's ``url`` exactly as given (resumed with ``Range`` if interrupted, never
fetched again to answer), each challenge answered with the HMAC over the stored bytes (checked
against the file hash in the same pass), ``/due`` polled when the next challenge is expected, and
``/remove`` for a contract the farmer gives up.

A download is written to its ``.part`` file as it arrives, on the reactor thread (buffered writes of
the pieces the connection delivers); checking it (SHA-256) and every answer (HMAC) run on the worker
threads.
"""

from __future__ import annotations

import os
import re
from collections import deque
from typing import Any

from twisted.logger import Logger

from downstream_tx import wire

from .chunks import ChunkDamaged, ChunkProblem, answer_stored, finish_download, is_disk_full, remove_files
from .client import TRANSIENT, NodeRefused, NodeUnavailable, retry_after
from .contracts import Contract
from .session import Session, TokenLost

log = Logger()

#: downloads at once
DOWNLOADS = 2
#: seconds after a challenge's deadline (when the next one is issued) before /due is asked
POLL_DELAY = 1.0
#: /due at most this often, and at least this often
MIN_POLL = 1.0
MAX_POLL = 60.0
#: seconds before asking for a chunk again after the node offered one this farmer gave back before
DECLINED_WAIT = 600.0
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class V0Session(Session):
    protocol = "v0"

    def __init__(self, node: Any):
        super().__init__(node)
        self.downloads: deque[Contract] = deque()
        self.answers: deque[Contract] = deque()
        self.removals: deque[tuple[Contract, str]] = deque()
        self.downloading = 0
        self.answering = 0
        self.polling = self.filling = self.removing = False
        self.next_poll = 0.0
        self.next_fill = 0.0
        #: the smallest chunk the node offered that did not fit: no new one until there is that room
        self.too_big = 0

    def resume(self) -> None:
        for c in self.book.of("v0"):
            if c.given_back:
                self.removals.append((c, c.problem or "given back"))
            elif c.problem is None and not c.stored:
                self.downloads.append(c)
        self.next_poll = self.clock.seconds()

    def _path(self, route: str, *parts: str) -> str:
        return "/".join([f"{wire.V0_PREFIX}/{route}", self.node.token or "", *parts])

    # --- the step

    def step(self) -> float | None:
        now = self.clock.seconds()
        node = self.node
        if not node.ready():
            return node.open_at
        # each queue is looked at once a step (work that fails at once goes back to its end)
        for _ in range(len(self.downloads)):
            if self.downloading >= DOWNLOADS or not node.ready():
                break
            c = self.downloads.popleft()
            if self.book.get("v0", c.id) is c:
                self.downloading += 1
                self.spawn(self._download, c)
        for _ in range(len(self.answers)):
            if self.answering >= node.farm.threads * 2 or not node.ready():
                break
            c = self.answers.popleft()
            if self.book.get("v0", c.id) is c and not c.busy:
                self.answering += 1
                c.busy = True
                self.spawn(self._answer, c)
        if self.removals and not self.removing:
            self.removing = True
            self.spawn(self._remove)
        wanted = [self.next_poll]
        if not self.polling and not self.filling:
            if now >= self.next_poll:
                self.polling = True
                self.spawn(self._poll)
            elif not self.downloads and self.downloading == 0:
                if now < self.next_fill:
                    wanted.append(self.next_fill)
                else:
                    room = node.room()
                    if room > 0 and room >= self.too_big:
                        self.filling = True
                        self.spawn(self._fill, room)
                    else:  # full: look again later (room is a sum over the contracts)
                        self.next_fill = now + node.farm.chunk_retry
        return min(wanted)

    # --- contracts

    async def _fill(self, room: int) -> None:
        try:
            await self._take(room)
        finally:
            self.filling = False
            if self.next_fill > self.clock.seconds() and self.node.v0_first:
                self.node.v0_first = False  # no more stored chunks for now: seeded ones may fill the rest
                for session in self.node.sessions:
                    session.kick()

    async def _take(self, room: int) -> None:
        """One /chunk: a contract to download, or when to ask again."""
        try:
            a = await self.node.request("GET", self._path("chunk"))
        except NodeRefused as e:
            if self.refused_token(e):
                raise TokenLost() from None
            if e.status != wire.V0_NO_CHUNKS:
                log.warn("{node} v0: no chunk: {message}", node=self.node.url, message=e.message)
            self.next_fill = self.clock.seconds() + self.node.farm.chunk_retry
            return
        except NodeUnavailable:
            return
        if not _contract_ok(a):
            log.error("{node} v0: malformed /chunk answer; asking again later", node=self.node.url)
            self.next_fill = self.clock.seconds() + self.node.farm.chunk_retry
            return
        now = self.clock.seconds()
        c = Contract("v0", a["file_hash"].lower(), a["size"], a["challenge"].lower(), now + float(a["due"]),
                     url=a["url"], interval=a["interval"], added=now)
        self.book.add(c)
        self.node.save_soon()
        if c.id in self.book.declined:
            self.give_up(c, "it was given back before")
            self.next_fill = now + max(DECLINED_WAIT, self.node.farm.chunk_retry)
            return
        if c.size > room:
            self.too_big = c.size
            self.give_up(c, f"its {c.size} bytes do not fit in the {room} bytes left to farm")
            return
        self.too_big = 0
        log.info("{node} v0: new contract {cid}, {size} bytes, a challenge every {interval} s",
                 node=self.node.url, cid=c.id, size=c.size, interval=c.interval)
        self.downloads.append(c)

    def give_up(self, c: Contract, why: str) -> None:
        """End a contract the farmer cannot hold: ``/remove`` it (the slot goes to another farmer)."""
        c.problem = why
        c.given_back = True
        self.book.decline(c.id)
        self.next_fill = max(self.next_fill, self.clock.seconds() + self.node.farm.chunk_retry)
        self.node.dirty()
        self.removals.append((c, why))
        self.kick()

    async def _remove(self) -> None:
        try:
            while self.removals and self.running:
                c, why = self.removals[0]
                if self.book.get("v0", c.id) is c:
                    try:
                        await self.node.request("GET", self._path("remove", c.id))
                    except NodeRefused as e:
                        if self.refused_token(e):
                            raise TokenLost() from None
                        # no_hash: it has ended already
                    except NodeUnavailable:
                        return
                    self.drop(c, f"given back: {why}")
                self.removals.popleft()
        finally:
            self.removing = False

    # --- the data

    async def _download(self, c: Contract) -> None:
        try:
            await self._fetch(c)
        finally:
            self.downloading -= 1

    async def _fetch(self, c: Contract) -> None:
        part, chunk = self.book.path(c, ".part"), self.book.path(c, ".chunk")
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if have > c.size:
            have = 0
        if have < c.size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                response = await self.node.client.send("GET", c.url, headers=headers)
            except NodeUnavailable as e:
                self._retry_download(c, e)
                return
            if response.code == 206 and _range_start(response) == have:
                mode = "ab"
            elif response.code == 200:
                mode, have = "wb", 0
            else:
                await self._download_refused(c, response)
                return
            try:
                with open(part, mode) as fh:
                    await self.node.client.read(response, fh.write, c.size - have)
            except NodeUnavailable as e:
                self._retry_download(c, e)
                return
            except OSError as e:
                if is_disk_full(e):
                    self.node.disk_full = True
                remove_files(part)
                self.give_up(c, f"the chunk could not be written ({e.strerror or e})")
                return
        if self.book.get("v0", c.id) is not c:  # ended meanwhile
            remove_files(part)
            return
        try:
            await self.node.blocking(finish_download, part, chunk, c.id, c.size)
        except ChunkDamaged as e:
            self.give_up(c, e.reason)
            return
        self.node.available()
        self.node.disk_full = False
        c.stored = True
        self.node.save_soon()
        log.info("{node} v0: contract {cid}: {size} bytes downloaded and checked", node=self.node.url, cid=c.id,
                 size=c.size)
        if not c.answered and c.due_at > self.clock.seconds():
            self.answers.append(c)
        self.next_poll = min(self.next_poll, self._next_poll_time())

    def _retry_download(self, c: Contract, e: NodeUnavailable) -> None:
        self.node.unavailable(e)
        if self.book.get("v0", c.id) is c:
            self.downloads.append(c)  # resumed from what arrived, with Range

    async def _download_refused(self, c: Contract, response: Any) -> None:
        body: list[bytes] = []
        try:
            await self.node.client.read(response, body.append, 1 << 16)
        except NodeUnavailable:
            pass
        code = response.code
        if code in TRANSIENT:
            wait = retry_after((response.headers.getRawHeaders("Retry-After") or [None])[0], self.clock.seconds())
            self._retry_download(c, NodeUnavailable(f"download answered {code}", wait, code))
            return
        text = b"".join(body)[:200].decode("utf-8", "replace")
        log.error("{node} v0: contract {cid}: the download was refused ({code} {text})", node=self.node.url,
                  cid=c.id, code=code, text=text)
        remove_files(self.book.path(c, ".part"))
        self.give_up(c, f"its data could not be downloaded ({code})")

    # --- challenges

    async def _poll(self) -> None:
        try:
            try:
                a = await self.node.request("GET", self._path("due"))
            except NodeRefused as e:
                if self.refused_token(e):
                    raise TokenLost() from None
                log.warn("{node} v0: /due refused: {message}", node=self.node.url, message=e.message)
                self.next_poll = self.clock.seconds() + MAX_POLL
                return
            except NodeUnavailable:
                return
            if not isinstance(a, dict) or not isinstance(a.get("all_contracts"), list) \
                    or not isinstance(a.get("due_contracts"), list):
                log.error("{node} v0: malformed /due answer", node=self.node.url)
                self.next_poll = self.clock.seconds() + MAX_POLL
                return
            self._due(a)
        finally:
            self.polling = False
            self.next_poll = max(self.next_poll, self._next_poll_time())

    def _due(self, a: dict[str, Any]) -> None:
        now = self.clock.seconds()
        listed = {str(e.get("hash", "")).lower() for e in a["all_contracts"] if isinstance(e, dict)}
        for entry in a["due_contracts"]:
            if not isinstance(entry, dict):
                continue
            c = self.book.get("v0", str(entry.get("hash", "")).lower())
            challenge = str(entry.get("challenge", "")).lower()
            if c is None or not _HEX64.match(challenge) or not isinstance(entry.get("due"), (int, float)):
                continue
            if c.busy and c.challenge == challenge:
                continue
            c.challenge, c.due_at, c.answered = challenge, now + entry["due"], False
            if c.stored and c.problem is None:
                self.answers.append(c)
        for c in list(self.book.of("v0")):
            if c.id not in listed and not c.busy and c.problem is None:
                self.drop(c, "the node no longer lists it (ended or failed)")
            elif c.id not in listed and c.problem is not None and not any(r[0] is c for r in self.removals):
                self.drop(c, f"the node ended it (its data was lost: {c.problem})")
        ours = {c.id for c in self.book.of("v0")}
        for cid in sorted(listed - ours):
            if _HEX64.match(cid):
                log.warn("{node} v0: the node lists contract {cid}, whose data this farmer does not hold: giving "
                         "it back", node=self.node.url, cid=cid)
                stranger = Contract("v0", cid, 0, "", now, added=now)
                self.book.add(stranger)
                self.give_up(stranger, "its data is not held here")
        self.node.dirty()

    def _next_poll_time(self) -> float:
        """When the next challenge of a held contract should be out: one is issued at each deadline;
        one that is late (the node's timer) is looked for again soon, then less and less often."""
        now = self.clock.seconds()
        best = now + MAX_POLL
        for c in self.book.of("v0"):
            if not c.stored or c.problem is not None or not c.interval:
                continue
            late = now - c.due_at
            if late > c.interval / 2:  # no challenge in that window (the node had none left): the next
                c.due_at += c.interval * (1 + int(late // c.interval))
                late = now - c.due_at
            at = c.due_at + POLL_DELAY if late < 0 else now + min(max(MIN_POLL, late / 4), MAX_POLL)
            best = min(best, at)
        return max(best, now + MIN_POLL)

    async def _answer(self, c: Contract) -> None:
        try:
            await self._respond(c)
        finally:
            c.busy = False
            self.answering -= 1

    async def _respond(self, c: Contract) -> None:
        challenge = c.challenge
        try:
            response = await self.node.blocking(answer_stored, self.book.path(c, ".chunk"), challenge, c.id, c.size)
        except ChunkProblem as e:
            if c.problem is None:
                log.error("{node} v0: contract {cid}: {reason}; it will not be answered (the node will count it "
                          "missed)", node=self.node.url, cid=c.id, reason=e.reason)
            c.problem = e.reason
            self.node.dirty()
            return
        if c.challenge != challenge or c.answered:
            return
        try:
            a = await self.node.request("GET", self._path("challenge", c.id, response))
        except NodeRefused as e:
            if self.refused_token(e):
                raise TokenLost() from None
            if e.status == wire.V0_NO_HASH:
                self.drop(c, "the node has no active contract on it")
            else:  # not_due: nothing is outstanding (answered already, or the deadline has passed)
                c.answered = True
                log.info("{node} v0: contract {cid}: {message}", node=self.node.url, cid=c.id, message=e.message)
            return
        except NodeUnavailable:
            if c.due_at > self.clock.seconds():
                self.answers.append(c)
            return
        c.answered = True
        self.next_poll = min(self.next_poll, self._next_poll_time())
        if isinstance(a, dict) and a.get("status") == wire.V0_PASS:
            c.passed += 1
            self.node.count(self.protocol, passed=1)
        else:
            c.failed += 1
            self.node.count(self.protocol, failed=1)
            log.error("{node} v0: contract {cid}: the node judged the answer wrong ({answer})", node=self.node.url,
                      cid=c.id, answer=a)
        self.node.dirty()


def _range_start(response: Any) -> int | None:
    value = (response.headers.getRawHeaders("Content-Range") or [""])[0]
    m = re.match(r"bytes (\d+)-", value if isinstance(value, str) else value.decode("latin-1"))
    return int(m.group(1)) if m else None


def _contract_ok(a: Any) -> bool:
    return (isinstance(a, dict) and isinstance(a.get("url"), str) and a["url"].startswith(("http://", "https://"))
            and isinstance(a.get("file_hash"), str) and bool(_HEX64.match(a["file_hash"]))
            and isinstance(a.get("challenge"), str) and bool(_HEX64.match(a["challenge"]))
            and type(a.get("interval")) is int and a["interval"] > 0
            and type(a.get("size")) is int and a["size"] >= 0 and isinstance(a.get("due"), (int, float)))
