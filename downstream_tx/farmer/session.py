"""What the two protocol sessions share: a step run on the injected clock (soon after something
changed, else when the step says it has work), work started from it tracked until it ends, and a
stop that waits for that work."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from .client import NodeProblem, NodeRefused
from .contracts import Contract

log = Logger()

#: seconds between steps when nothing is due sooner
IDLE = 5.0


class TokenLost(Exception):
    """The node answered that it does not know the farmer's token."""


class Session:
    """One protocol's farming with one node. Subclasses define ``resume`` (the contracts held when
    it starts) and ``step`` (start what is due; return when to run again, or None)."""

    protocol = ""

    def __init__(self, node: Any):
        """``node``: the :class:`~downstream_tx.farmer.node.NodeFarmer` this session farms with."""
        self.node = node
        self.clock = node.clock
        self.book = node.book
        self.settings = node.settings
        self.running = False
        self._call: Any = None
        self._inflight: set[defer.Deferred] = set()

    # --- the loop

    def start(self) -> None:
        self.running = True
        self.resume()
        self.kick()

    def resume(self) -> None:
        raise NotImplementedError

    def step(self) -> float | None:
        raise NotImplementedError

    def kick(self, at: float | None = None) -> None:
        """Run the step at ``at`` (Unix seconds; default now), unless it is to run sooner."""
        if not self.running:
            return
        now = self.clock.seconds()
        at = now if at is None else max(at, now)
        if self._call is not None and self._call.active():
            if self._call.getTime() <= at:
                return
            self._call.cancel()
        self._call = self.clock.callLater(at - now, self._run)

    def _run(self) -> None:
        self._call = None
        if not self.running:
            return
        try:
            wanted = self.step()
        except Exception:
            log.failure("{node} {protocol}: a step failed", node=self.node.url, protocol=self.protocol)
            wanted = None
        now = self.clock.seconds()
        self.kick(min(wanted, now + IDLE) if wanted is not None else now + IDLE)

    def spawn(self, work: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> defer.Deferred:
        """Run ``work(*args)``; tracked until it ends, its failure logged (never lost), the step run
        again after it."""
        d = defer.ensureDeferred(work(*args))
        self._inflight.add(d)

        def done(result: Any) -> None:
            self._inflight.discard(d)
            if isinstance(result, Failure):
                if result.check(TokenLost):
                    self.node.token_lost()
                elif result.check(defer.CancelledError) and not self.running:
                    pass
                elif result.check(NodeProblem):
                    pass  # said where it happened (the node's gate logs an unavailable node)
                else:
                    log.failure("{node} {protocol}: unexpected error", result, node=self.node.url,
                                protocol=self.protocol)
            self.kick()

        d.addBoth(done)
        return d

    def finish(self) -> None:
        """Start what must not wait for the next run (answers ready to send); called by ``stop``."""

    async def stop(self, timeout: float) -> None:
        """Send the answers that are ready, stop starting work, give what is under way ``timeout``
        seconds (then cancel it)."""
        if self.running and timeout > 0 and self.node.ready():
            self.finish()
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        pending = list(self._inflight)
        if not pending:
            return
        waiting = defer.DeferredList(pending, consumeErrors=True)
        timer = self.clock.callLater(timeout, waiting.cancel) if timeout > 0 else None
        if timer is None:
            waiting.cancel()
        try:
            await waiting
        except defer.CancelledError:
            for d in pending:
                d.cancel()
        if timer is not None and timer.active():
            timer.cancel()

    # --- shared pieces

    def refused_token(self, e: NodeRefused) -> bool:
        """Whether a refusal says the token is unknown (both protocols' words)."""
        return self.node.is_token_refusal(e)

    def drop(self, contract: Contract, why: str) -> None:
        """Forget a contract the node has ended (its files go)."""
        if self.book.get(contract.protocol, contract.id) is contract:
            self.book.remove(contract)
            self.node.save_soon()
        log.info("{node} {protocol}: contract {cid} ended: {why}", node=self.node.url, protocol=self.protocol,
                 cid=contract.id, why=why)
