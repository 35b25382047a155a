"""Farming with one node: which protocols it speaks, the farmer's token there, the backoff while it
is down or busy, the contracts held (saved atomically), and one session per protocol."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from downstream_tx import wire

from .backoff import Backoff
from .client import HttpClient, NodeClient, NodeRefused, NodeUnavailable
from .contracts import ContractBook, node_directory
from .files import FarmerFileError, History, Identities, SignedMessage, check_signature
from .session import Session
from .settings import NodeSettings, Settings

log = Logger()

#: how long to wait before trying a node again, at most
BACKOFF_CAP = 300.0
#: seconds between saves of a node's contracts while they change
SAVE_EVERY = 10.0
#: a save soon after new contracts
SAVE_SOON = 1.0

Blocking = Callable[..., defer.Deferred]


class NodeFailed(Exception):
    """The farmer cannot go on with this node (the message says why and what to do)."""


def farmer_id(token: str) -> str:
    """The node's id of a token (shown instead of the token, which is a secret)."""
    return hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]


class NodeFarmer:
    def __init__(self, settings: NodeSettings, farm: Settings, http: HttpClient, clock: IReactorTime,
                 blocking: Blocking, history: History, identities: Identities,
                 kinds: Mapping[str, Callable[[NodeFarmer], Session]],
                 on_pass: Callable[[int], None] = lambda n: None, rng: random.Random | None = None):
        """``kinds``: the session class of each protocol."""
        self.settings = settings
        self.farm = farm
        self.url = settings.url
        self.clock = clock
        self.blocking = blocking
        self.history = history
        self.identities = identities
        self.on_pass = on_pass
        self.kinds = kinds
        self.client = NodeClient(self.url, http, clock, farm.request_timeout)
        self.book = ContractBook(node_directory(farm.data_directory, self.url), self.url)
        self.backoff = Backoff(1.0, BACKOFF_CAP, rng)
        self.open_at = 0.0
        self.down: str | None = None
        self.protocols: list[str] = []
        self.address = settings.address
        self.token: str | None = None
        self.farmer_id: str | None = None
        self.sessions: list[Session] = []
        self.state = "starting"
        self.error: str | None = None
        self.disk_full = False
        #: with both protocols, the node's stored (v0) chunks are taken first and seeded (v1) ones fill
        #: the rest: v1 asks for chunks once v0 has had its first answer from /chunk
        self.v0_first = True
        #: per protocol: (proofs passed, proofs failed) since the start
        self.results: dict[str, tuple[int, int]] = {}
        self._save_call: Any = None
        self._saving: defer.Deferred | None = None
        self._dirty = False
        self._stopping = False
        self.finished: defer.Deferred = defer.Deferred()

    # --- requests through the gate

    def ready(self) -> bool:
        return self.clock.seconds() >= self.open_at

    async def request(self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None,
                      raw: bytes | None = None) -> Any:
        """A JSON call to the node; a :class:`NodeUnavailable` closes the gate for a backoff."""
        try:
            result = await self.client.call(method, path, payload, headers, raw)
        except NodeUnavailable as e:
            self.unavailable(e)
            raise
        self.available()
        return result

    def unavailable(self, e: NodeUnavailable) -> None:
        now = self.clock.seconds()
        if now < self.open_at and e.retry_after is None:
            return  # another request under way failed already: one step of backoff per try
        wait = self.backoff.failed(e.retry_after)
        self.open_at = max(self.open_at, now + wait)
        if self.down is None:
            log.warn("{node}: {reason}; the contracts are kept, trying again in {wait:.1f} s", node=self.url,
                     reason=e.reason, wait=wait)
        else:
            log.info("{node}: still unavailable ({reason}); trying again in {wait:.1f} s", node=self.url,
                     reason=e.reason, wait=wait)
        self.down = e.reason

    def available(self) -> None:
        if self.down is not None:
            log.info("{node}: answering again", node=self.url)
        self.down = None
        self.backoff.succeeded()

    def is_token_refusal(self, e: NodeRefused) -> bool:
        return e.message == wire.NONEXISTENT_TOKEN or e.status == wire.V0_NO_TOKEN

    # --- start and stop

    async def run(self) -> None:
        """Connect (protocols, token), then farm until stopped; a failure is kept in ``error``."""
        try:
            await self._connect()
        except (NodeFailed, FarmerFileError) as e:
            self.fail(str(e))
            return
        except defer.CancelledError:
            return
        except Exception as e:
            log.failure("{node}: cannot start farming", node=self.url)
            self.fail(f"cannot start farming: {e}")
            return
        if self._stopping:
            return
        self.state = "farming"
        for session in self.sessions:
            session.start()
        self._schedule_save(SAVE_EVERY)

    async def _connect(self) -> None:
        await self.blocking(os.makedirs, self.book.directory, exist_ok=True)
        await self.blocking(self.book.load)
        self.protocols = await self._retrying(self._detect)
        await self._retrying(self._token)
        if self.book.farmer_id not in (None, self.farmer_id):
            held = len(self.book)
            for contract in list(self.book.contracts.values()):
                await self.blocking(self.book.remove, contract)
            if held:
                log.warn("{node}: {n} contracts held for an earlier token were given up", node=self.url, n=held)
        self.book.farmer_id = self.farmer_id
        self.history.remember(self.url, self.token, self.address)
        await self.blocking(self.history.save)
        self.sessions = [self.kinds[p](self) for p in self.protocols]
        self.v0_first = "v0" in self.protocols
        log.info("{node}: farming with {protocols} as farmer {farmer_id} for {address}", node=self.url,
                 protocols="+".join(self.protocols), farmer_id=self.farmer_id, address=self.address)

    async def _retrying(self, work: Callable[[], Any]) -> Any:
        """``work()`` again after each backoff while the node is unavailable."""
        while not self._stopping:
            wait = self.open_at - self.clock.seconds()
            if wait > 0:
                self.state = "waiting"
                await _sleep(self.clock, wait)
                continue
            try:
                return await work()
            except NodeUnavailable:
                continue
        raise defer.CancelledError()

    async def _detect(self) -> list[str]:
        """The protocols to farm: those asked for, among those ``GET /`` lists (a node that does not
        say, such as the 2015 node, speaks v1)."""
        self.state = "connecting"
        wanted = self.settings.protocol
        spoken = ["v1"]
        try:
            index = await self.request("GET", "/")
        except NodeRefused:
            index = None
        if isinstance(index, dict) and isinstance(index.get("protocols"), list):
            spoken = [p for p in wire.PROTOCOLS if p in index["protocols"]]
        chosen = spoken if wanted == "auto" else [p for p in spoken if p == wanted]
        if not chosen:
            raise NodeFailed(f"{self.url} speaks {', '.join(spoken) or 'no protocol this farmer knows'}, "
                             f"not {wanted}")
        return chosen

    async def _token(self) -> None:
        saved_token, saved_address = self.history.entry(self.url)
        given = self.settings.token
        if self.address is None:
            self.address = saved_address or self.identities.first_address()
        token = given if given is not None else saved_token
        if self.farm.forcenew and given is None:
            token = None
        elif given is None and self.settings.address is not None and self.settings.address != saved_address:
            token = None  # a new address: a new token (0.1.8)
        if token is not None:
            if await self._known(token):
                self._use(token)
                return
            held = sum(1 for _ in self.book.contracts.values()) if self.book.farmer_id == farmer_id(token) else 0
            if given is not None or held:
                raise NodeFailed(self._unknown_token_message(token, held))
            log.warn("{node}: the node no longer knows the saved token; asking for a new one", node=self.url)
        if self.address is None:
            raise NodeFailed("Must specify farming address if one is not available (--address, or an "
                             "identity file)")
        self._use(await self._new_token())

    def _unknown_token_message(self, token: str, held: int) -> str:
        return (f"{self.url} does not know the token of farmer {farmer_id(token)} (its database was reset, or "
                f"the token was deleted): its {held} contracts cannot be answered. Start again with --forcenew to "
                f"get a new token (the contracts held for the old one are then given up)")

    def _use(self, token: str) -> None:
        self.token = token.lower()
        self.farmer_id = farmer_id(self.token)

    async def _known(self, token: str) -> bool:
        path = f"{wire.V1_PREFIX}/heartbeat/{token}" if "v1" in self.protocols else f"{wire.V0_PREFIX}/due/{token}"
        try:
            answer = await self.request("GET", path)
        except NodeRefused as e:
            if self.is_token_refusal(e):
                return False
            raise NodeFailed(f"{self.url} refused the token check: {e.message}") from None
        if "v1" in self.protocols:
            self._check_heartbeat(answer)
        return True

    async def _new_token(self) -> str:
        address = self.address
        if "v1" in self.protocols:
            path = f"{wire.V1_PREFIX}/new/{address}"
            signed = self._signed_message()
            try:
                if signed is None:
                    answer = await self.request("GET", path)
                else:
                    answer = await self.request("POST", path, {"message": signed.message,
                                                               "signature": signed.signature})
            except NodeRefused as e:
                raise NodeFailed(f"{self.url} gave no token for {address}: {e.message}") from None
            self._check_heartbeat(answer)
        else:
            try:
                answer = await self.request("GET", f"{wire.V0_PREFIX}/new/{address}")
            except NodeRefused as e:
                raise NodeFailed(f"{self.url} gave no token for {address}: {e.message}") from None
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or len(token) != 32:
            raise NodeFailed(f"{self.url} sent a malformed token answer")
        try:
            bytes.fromhex(token)
        except ValueError:
            raise NodeFailed(f"{self.url} sent a malformed token answer") from None
        log.info("{node}: new token for {address}, farmer {farmer_id}", node=self.url, address=address,
                 farmer_id=farmer_id(token))
        return token

    def _signed_message(self) -> SignedMessage | None:
        signed = self.settings.signed or self.identities.signed_message(self.address, self.url)
        if signed is not None:
            problem = check_signature(self.address, signed)
            if problem is not None:
                raise NodeFailed(f"identity for {self.address}: {problem}")
        return signed

    def _check_heartbeat(self, answer: Any) -> None:
        if not isinstance(answer, dict) or not all(k in answer for k in ("token", "heartbeat", "type")):
            raise NodeFailed(f"{self.url}: malformed response from the node")
        if answer["type"] != wire.HEARTBEAT_TYPE:
            raise NodeFailed(f"{self.url} uses the heartbeat type {answer['type']!r}, which this farmer does not "
                             f"speak ({wire.HEARTBEAT_TYPE} only)")

    def fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        log.error("{node}: {message}", node=self.url, message=message)
        if not self.finished.called:
            self.finished.callback(None)

    def token_lost(self) -> None:
        """A session was told the token is unknown: stop farming this node, say what to do."""
        if self.state == "failed":
            return
        held = len(self.book)
        self.fail(self._unknown_token_message(self.token or "00" * 16, held))
        for session in self.sessions:
            defer.ensureDeferred(session.stop(0))
        self.save_soon(0)

    async def stop(self, timeout: float) -> None:
        """Stop every session (answers under way get ``timeout`` seconds), then save."""
        self._stopping = True
        await defer.gatherResults([defer.ensureDeferred(s.stop(timeout)) for s in self.sessions],
                                  consumeErrors=True)
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        if self._saving is not None:
            await self._saving
        if self.book.farmer_id is not None:
            await self._save()
        if self.state != "failed":
            self.state = "stopped"
        if not self.finished.called:
            self.finished.callback(None)

    # --- saving the contracts

    def save_soon(self, delay: float = SAVE_SOON) -> None:
        self._dirty = True
        self._schedule_save(delay)

    def _schedule_save(self, delay: float) -> None:
        if self._stopping:
            return
        if self._save_call is not None and self._save_call.active():
            if self._save_call.getTime() <= self.clock.seconds() + delay:
                return
            self._save_call.cancel()
        self._save_call = self.clock.callLater(delay, self._periodic_save)

    def _periodic_save(self) -> None:
        self._save_call = None
        if self._saving is None and self._dirty:
            self._saving = defer.ensureDeferred(self._save())
            self._saving.addBoth(self._saved)
        self._schedule_save(SAVE_EVERY)

    def _saved(self, _: Any) -> None:
        self._saving = None

    def dirty(self) -> None:
        """The contracts changed (a save follows within ``SAVE_EVERY`` seconds)."""
        self._dirty = True

    async def _save(self) -> None:
        self._dirty = False
        snapshot = self.book.snapshot()
        try:
            await self.blocking(self.book.save, snapshot)
        except OSError as e:
            self._dirty = True
            log.error("{node}: cannot save the contracts to {path}: {error} (the previous state is kept; "
                      "trying again)", node=self.url, path=self.book.directory, error=e.strerror or str(e))

    # --- disk space

    def free_bytes(self) -> int:
        """Bytes free for chunks in the node's directory (less the ``min_free`` reserve)."""
        try:
            free = shutil.disk_usage(self.book.directory).free
        except OSError:
            return 0
        return max(0, free - self.farm.min_free)

    def room(self) -> int:
        """Bytes of new contracts this node may still give: up to ``--size``, within free space."""
        return max(0, min(self.settings.size - self.book.held_bytes(), self.free_bytes()))

    def count(self, protocol: str, passed: int = 0, failed: int = 0) -> None:
        before = self.results.get(protocol, (0, 0))
        self.results[protocol] = (before[0] + passed, before[1] + failed)
        if passed:
            self.on_pass(passed)


def _sleep(clock: IReactorTime, seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred(lambda d: call.cancel())
    call = clock.callLater(seconds, d.callback, None)
    return d

