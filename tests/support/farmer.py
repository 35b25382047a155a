"""The farmer client (``downstream_tx.farmer``) in-process against an in-process node: treq's
``StubTreq`` over the node's own Klein resource, one ``task.Clock`` for both, blocking work run
inline, and the node's periodic passes (v0 challenges, v1 expiry) run on the clock as the daemon's
timer would."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from typing import Any

from treq.testing import StubTreq
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from downstream_tx.farmer.farm import Farm
from downstream_tx.farmer.settings import NodeSettings, Settings
from support import ADDRESS, inline_blocking, make_resource, run
from support.daemon import daemon_env, sigterm

URL = "http://node.test"


def farmer_settings(tmp_path, url: str = URL, address: str | None = ADDRESS, size: int = 1 << 20,
                    protocol: str = "auto", per_node: dict | None = None, **overrides: Any) -> Settings:
    base = tmp_path / "farmer"
    values: dict[str, Any] = {"history": str(base / "history.json"), "identity": str(base / "identities.json"),
                              "data_directory": str(base / "chunks"), "chunk_retry": 5.0, "request_timeout": 10.0,
                              "log_path": "", "min_free": 0}
    values.update(overrides)
    return Settings(nodes=(NodeSettings(url=url, address=address, size=size, protocol=protocol, **(per_node or {})),),
                    **values)


class InProcessFarm:
    """``farm = InProcessFarm(tmp_path, node, clock); farm.start(); farm.pump(120)``."""

    def __init__(self, tmp_path, node: Any, clock: Any, settings: Settings | None = None, timers: bool = True,
                 resource: Any = None, **kw: Any):
        self.node = node
        self.clock = clock
        self.treq = StubTreq(resource if resource is not None else make_resource(node))
        self.settings = settings or farmer_settings(tmp_path, **kw)
        self.timers = timers
        self.farm = Farm(self.settings, self.treq, clock, inline_blocking, random.Random(7))  # the same jitter each run

    @property
    def farmer(self):
        """The one node's farmer (:class:`~downstream_tx.farmer.node.NodeFarmer`)."""
        return self.farm.nodes[0]

    def settle(self) -> None:
        for _ in range(20):
            self.treq.flush()

    def start(self) -> InProcessFarm:
        self.farm.start()
        self.settle()
        return self

    def pump(self, seconds: float, step: float = 0.25) -> None:
        """Let ``seconds`` pass on the clock, ``step`` at a time, with the node's timers."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.seconds()))
            self.settle()
            if self.timers:
                run(self.node.supply.issue_due())
                run(self.node.expiry.expire())
            self.settle()

    def stop(self) -> int:
        """Stop the farmer as SIGTERM does; its exit status."""
        self.farm.stop()
        for _ in range(400):
            if self.farm.done.called:
                break
            self.clock.advance(0.1)
            self.settle()
        return run(self.farm.done)

    def restarted(self, **changes: Any) -> InProcessFarm:
        """A new farmer process over the same files (the same settings, with ``changes``)."""
        settings = replace(self.settings, **changes) if changes else self.settings
        return InProcessFarm(None, self.node, self.clock, settings, self.timers,
                             resource=self.treq._agent._rootResource)

    def files(self) -> list[str]:
        return sorted(os.listdir(self.farmer.book.directory))


class FaultyNode(Resource):
    """The node's resource behind a switch: every request is recorded (method, path, headers, body);
    ``mode`` makes the node look busy (``"503"``, with ``Retry-After``), gone (``"drop"``: the
    connection is cut before an answer), or stalled (``"hold"``: no answer until ``release()``);
    ``only`` limits the fault to paths containing it; ``cut_after`` cuts a reply after that many body
    bytes (once); ``override(request)`` may answer a recorded request in the node's place (its bytes,
    or None to let the node answer)."""

    isLeaf = True

    def __init__(self, inner: Any):
        super().__init__()
        self.inner = inner
        self.mode: str | None = None
        self.only: str | None = None
        self.retry_after = "7"
        self.cut_after: int | None = None
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.held: list[Any] = []
        self.override: Any = None

    def paths(self, part: str = "") -> list[str]:
        return [p for _, p, _, _ in self.requests if part in p]

    def render(self, request: Any) -> Any:
        body = request.content.read()
        request.content.seek(0)
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        path = request.uri.decode()
        self.requests.append((request.method.decode(), path, headers, body))
        if self.override is not None:
            answer = self.override(request)
            if answer is not None:
                return answer
        if self.mode and (self.only is None or self.only in path):
            if self.mode == "503":
                request.setResponseCode(503)
                request.setHeader(b"Retry-After", self.retry_after.encode())
                request.setHeader(b"Content-Type", b"application/json")
                return b'{"status": "unavailable", "message": "the database is unavailable, try again soon"}'
            if self.mode == "drop":
                request.transport.abortConnection()
                return NOT_DONE_YET
            if self.mode == "hold":
                self.held.append(request)
                return NOT_DONE_YET
        if self.cut_after is not None and (self.only is None or self.only in path):
            limit, self.cut_after = self.cut_after, None
            write = request.write
            sent = [0]

            def cut(data: bytes) -> None:
                if sent[0] >= limit:
                    return
                write(data[:limit - sent[0]])
                sent[0] += len(data[:limit - sent[0]])
                if sent[0] >= limit:
                    request.transport.abortConnection()

            request.write = cut
        return self.inner.render(request)

    def release(self) -> None:
        """Answer the held requests (as the node would have)."""
        held, self.held = self.held, []
        self.mode = None
        for request in held:
            result = self.inner.render(request)
            if result is not NOT_DONE_YET:
                request.write(result)
                request.finish()


FARMER = [sys.executable, "-m", "downstream_tx.farmer"]


class FarmerProcess:
    """``downstream-farmer`` as a subprocess in ``workdir`` (its 0.1.8 default paths are relative to
    it), logging JSON lines to its output."""

    def __init__(self, workdir, args: list[str]):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.out = self.workdir / "farmer.out"
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self, extra: list[str] | None = None) -> FarmerProcess:
        argv = FARMER + self.args + list(extra or []) + ["--print-log", "--json-log", "--log-path", ""]
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=self.workdir, env=daemon_env(), stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.runs += 1
        return self

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as systemd stops it; its exit status."""
        assert self.proc is not None
        return sigterm(self.proc, timeout, lambda: f"the farmer did not stop within {timeout}s:\n{self.text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def events(self) -> list[dict]:
        out = []
        for line in self.text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"level": "raw", "message": line})
        return out

    def messages(self, level: str | None = None) -> list[str]:
        return [e["message"] for e in self.events() if level is None or e.get("level") == level]

    def answered(self) -> int:
        """Challenges answered in every run so far (each run says so when it stops)."""
        said = [m for m in self.messages() if "downstream-farmer stopped: " in m]
        return sum(int(m.split("stopped: ")[1].split()[0]) for m in said)

    def state(self) -> dict:
        """The contract state of the (one) node the farmer farms."""
        [directory] = [p for p in (self.workdir / "data" / "chunks").iterdir() if p.is_dir()]
        return json.loads((directory / "state.json").read_text())
