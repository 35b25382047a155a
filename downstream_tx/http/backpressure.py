"""An HTTP/1.1 connection whose memory does not grow when its client stops reading.

twisted.web answers pipelined requests one after the other without looking at the output: while a
request is being answered it keeps reading the connection into a buffer, and once the answer is
finished it starts on the next buffered request even when the socket cannot take any more output.
A client that sends 120 KB of pipelined ``GET``\\ s of a 1 MB list and never reads made the node
buffer every answer (800 MB in 50 s). :class:`BackpressureChannel` changes four things, through the
channel's public hooks (the transport's ``pauseProducing``/``resumeProducing`` of ``IPushProducer``
and ``requestDone``):

* while the transport's output is above its buffer bound (it paused the channel), the connection is
  not read, also in the middle of a request (twisted stops reading only between requests);
* a finished answer's successor waits until that output has drained: the next pipelined request is
  started only once the transport resumes the channel, so at most one answer per connection sits in
  memory beside what the kernel holds;
* ``max_pipelined`` requests in a row sent before the previous answer was finished (read in the
  same read as the previous request, or buffered while it was answered) are the most: the next is
  refused with ``429`` and the connection closes once its answers are written (see ``site.py``);
* a client that reads nothing of its answers for the idle timeout (``timeOut`` when the connection
  opened) is disconnected, as an idle one is: twisted's idle timer is off while a request is answered.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import http

log = Logger(namespace="downstream_tx.requests")


class BackpressureChannel(http.HTTPChannel):
    """See the module's docstring. The site (if it has them) is told when the connection's output
    backs up and drains (``output_stalled(channel, bool)``) and when a stalled client is cut off."""

    #: pipelined requests in a row, most allowed (None: no limit)
    max_pipelined: int | None = None
    _backed_up = False
    _held: Any = None
    _replaying = False
    _stall_timer: Any = None
    _stall_after: float | None = None
    #: requests in a row sent before their predecessor's answer (0: the last one came after it)
    pipelined = 0
    #: reads of the connection so far, and the one during or after which the last answer was finished
    _reads = 0
    _answered_in = -1

    def connectionMade(self) -> None:
        # (the idle timeout, which twisted turns off while a request is answered)
        self._stall_after = self.timeOut
        super().connectionMade()

    # --- the transport's producer hooks: its output is above (pause) or below (resume) its bound

    def pauseProducing(self) -> None:
        self._backed_up = True
        super().pauseProducing()
        producer = IPushProducer(self.transport, None)
        if producer is not None:  # stop reading now, not only once the answer is finished
            producer.pauseProducing()
        self._tell_site(True)
        self._arm_stall()

    def resumeProducing(self) -> None:
        self._backed_up = False
        self._disarm_stall()
        self._tell_site(False)
        super().resumeProducing()
        held, self._held = self._held, None
        if held is not None:
            self.requestDone(held)  # (held again if the output backed up once more meanwhile)

    # --- one request at a time, and only while the output drains

    def dataReceived(self, data: bytes) -> None:
        if not self._replaying:  # (twisted hands buffered input back through here)
            self._reads += 1
        super().dataReceived(data)

    def requestDone(self, request: Any) -> None:
        self._answered_in = self._reads
        if self._backed_up and self.transport is not None and not self.transport.disconnecting:
            self._held = request  # the next pipelined request waits until the client reads
            return
        self._next_request(request)

    def _next_request(self, request: Any) -> None:
        self._replaying = True
        try:
            super().requestDone(request)
        finally:
            self._replaying = False

    def allHeadersReceived(self) -> None:
        # a request whose head was read no later than the read during which (or after which) the
        # previous answer was finished was sent before its client could have that answer: pipelined
        self.pipelined = self.pipelined + 1 if self._reads <= self._answered_in else 0
        super().allHeadersReceived()

    def over_pipeline_cap(self) -> bool:
        """Whether the request whose head was just read is one pipelined request too many."""
        return self.max_pipelined is not None and self.pipelined > self.max_pipelined

    # --- a client that does not read

    def _arm_stall(self) -> None:
        if self._stall_timer is None and self._stall_after:
            self._stall_timer = self.callLater(self._stall_after, self._stalled)

    def _disarm_stall(self) -> None:
        cancel(self._stall_timer)
        self._stall_timer = None

    def _stalled(self) -> None:
        self._stall_timer = None
        if self.transport is None:
            return
        log.info("disconnecting a client that read nothing of its answers for {timeout:g}s",
                 timeout=self._stall_after)
        closed = getattr(getattr(self, "site", None), "connection_closed", None)
        if closed is not None:
            closed("stalled")
        self.transport.abortConnection()

    def connectionLost(self, reason: Any) -> None:
        self._disarm_stall()
        self._held = None
        self._tell_site(False)
        super().connectionLost(reason)

    def _tell_site(self, stalled: bool) -> None:
        site = getattr(self, "site", None)
        notify = getattr(site, "output_stalled", None)
        if notify is not None:
            notify(self, stalled)


def cancel(call: Any) -> None:
    """Cancel a delayed call if it is still to run (None: nothing)."""
    if call is not None and call.active():
        call.cancel()
