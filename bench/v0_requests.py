"""Node CPU per v0 request, in process: the real site, resource, services and SQLite database
(adbapi pool, reactor), requests written into the HTTP channel one after another over an in-memory
transport — no load generator, no timer pass, no other work on the node. What the request path
alone costs, next to the bare twisted.web resource driven the same way.

Measured: ``GET /due`` (the token's 30 contracts), ``GET /challenge`` answered right (a pass: the
answer's update), the same answer again (409 ``not_due``: the error path), and downloads of the 1 KiB
chunks through each contract's URL: a ``HEAD`` (the capability checked, nothing written), the first
``GET`` (checked, counted, the window started, the bytes streamed) and a ``GET`` without the
capability (404, no database). CPU is the process's (all threads) per request.

Usage: python bench/v0_requests.py [--farmers 50] [--contracts 30] [--rounds 4] [--db sqlite|mysql] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402


def farmer_address(n: int) -> str:
    """A valid payout address of its own for farmer ``n``."""
    import coincurve

    from downstream_tx.bitcoin import address_from_pubkey

    return address_from_pubkey(coincurve.PrivateKey((n + 1).to_bytes(32, "big")).public_key.format(compressed=True))


class Connection:
    """One keep-alive HTTP connection into a site, over an in-memory transport."""

    def __init__(self, site, waiter: list | None, port: int):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        self.transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 5000),
                                         peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        self.proto = site.buildProtocol(self.transport.getPeer())
        self.proto.makeConnection(self.transport)
        self.waiter = waiter

    async def get(self, path: str, method: bytes = b"GET") -> tuple[int, bytes]:
        from twisted.internet import defer

        d: defer.Deferred | None = None
        if self.waiter is not None:
            d = defer.Deferred()
            self.waiter.append(d)
        self.transport.clear()
        self.proto.dataReceived(b"%s %s HTTP/1.1\r\nHost: node.test\r\n\r\n" % (method, path.encode()))
        if d is not None:
            await d
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--farmers", type=int, default=50)
    ap.add_argument("--contracts", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4, help="/due requests per farmer")
    ap.add_argument("--db", choices=["sqlite", "mysql"], default="sqlite",
                    help="mysql: $DOWNSTREAM_TEST_MYSQL_URL's server, database $DOWNSTREAM_BENCH_DB (dropped and "
                         "re-created, default dtx_test_bench6)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.farmers, args.contracts, args.rounds = 3, 2, 2

    from twisted.internet import defer, task

    from downstream_tx.config import load_config
    from downstream_tx.runtime import build_server, open_services

    figures: dict[str, tuple[float, int]] = {}

    async def measure(reactor, tmp: str) -> None:
        db = f"sqlite:///{tmp}/data/downstream.db"
        if args.db == "mysql":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from farmers import mysql_url

            db = mysql_url()
        config = load_config(environ={}, overrides={
            "db": db, "data_dir": f"{tmp}/data", "max_tokens_per_ip": 0,
            "token_rate": 0, "max_tokens_per_address": 0, "challenge_batch": 100})
        services = await open_services(config, reactor)
        data: dict[str, bytes] = {}
        for i in range(args.contracts):
            path = os.path.join(tmp, f"f{i}")
            with open(path, "wb") as f:
                f.write(os.urandom(1024))
            file_hash = await services.files.add(path, args.farmers, 3600)
            with open(services.chunks.path_for(file_hash), "rb") as f:  # the bytes farmers hold: encrypted
                data[file_hash] = f.read()
        tokens = []
        downloads = []  # (farmer index, the path of a contract's download URL)
        for i in range(args.farmers):
            token = await services.v0.create_token(farmer_address(i))  # replicas go to distinct addresses
            for _ in range(args.contracts):
                a = await services.v0.get_chunk(token)
                downloads.append((i, f"/api/download/{a.file_hash}?cap={a.capability}"))
            tokens.append(token)
        server = build_server(services)
        site = server.site(reactor)
        waiter: list = []
        site.observers.append(lambda *a: waiter.pop().callback(None))
        conns = [Connection(site, waiter, 40000 + i) for i in range(len(tokens))]

        def timed(name: str):
            class Timer:
                def __enter__(self):
                    self.cpu = time.process_time()

                def __exit__(self, *exc):
                    cpu, n = figures.get(name, (0.0, 0))
                    figures[name] = (cpu + time.process_time() - self.cpu, n + 1)
            return Timer()

        answers = []
        for rounds in range(args.rounds):
            for conn, token in zip(conns, tokens):
                with timed("GET /due (30 contracts)" if args.contracts == 30 else "GET /due"):
                    code, body = await conn.get(f"/api/downstream/due/{token}")
                assert code == 200, body
                if rounds == 0:
                    for item in orjson.loads(body)["due_contracts"]:
                        answer = hmac.new(bytes.fromhex(item["challenge"]), data[item["hash"]], hashlib.sha256)
                        answers.append((conn, f"/api/downstream/challenge/{token}/{item['hash']}/{answer.hexdigest()}"))
        # the downloads first: a contract's first pass closes its download window
        for name, method, expected in (("HEAD /api/download (capability)", b"HEAD", 200),
                                       ("GET /api/download 1 KiB (first)", b"GET", 200),
                                       ("GET /api/download, no capability", b"GET", 404)):
            for i, path in downloads:
                if expected == 404:
                    path = path.partition("?")[0]
                with timed(name):
                    code, body = await conns[i].get(path, method)
                assert code == expected, (code, body[:200])
        for name, expected in (("GET /challenge, a pass", 200), ("GET /challenge again, 409 not_due", 409)):
            for conn, path in answers:
                with timed(name):
                    code, body = await conn.get(path)
                assert code == expected, (code, body)
                assert expected != 200 or orjson.loads(body)["status"] == "pass", body
        for conn in conns:
            conn.proto.connectionLost(None)
        services.stores.db.close()
        # the bare resource of bench/ceiling.py, driven the same way (it answers at once)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from ceiling import BODY
        from twisted.web import resource, server

        class Fixed(resource.Resource):
            isLeaf = True

            def render_GET(self, request):
                request.setHeader(b"Content-Type", b"application/json")
                return BODY

        bare = server.Site(Fixed())
        bare.log = lambda request: None
        conn = Connection(bare, None, 39999)
        for token in tokens * args.rounds:
            with timed("bare twisted.web fixed JSON"):
                code, body = await conn.get(f"/api/downstream/due/{token}")
            assert code == 200

    with tempfile.TemporaryDirectory(prefix="dtx-v0req-") as tmp:
        try:
            task.react(lambda reactor: defer.ensureDeferred(measure(reactor, tmp)))
        except SystemExit as e:
            if e.code:
                raise
    print(f"== node CPU per v0 request, in process, one request at a time ({args.farmers} farmers × "
          f"{args.contracts} contracts, {'MariaDB' if args.db == 'mysql' else 'SQLite'})")
    bare_us = figures["bare twisted.web fixed JSON"][0] / figures["bare twisted.web fixed JSON"][1] * 1e6
    for name, (cpu, n) in figures.items():
        us = cpu / n * 1e6
        print(f"   {name:<36} {us:7.0f} µs   {us / bare_us:5.1f}× bare   ({n} requests)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
