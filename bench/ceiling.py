"""The request ceiling of this machine, and the v0 node measured against it in the same run.

1. A bare twisted.web resource that answers every GET with a fixed JSON body (a subprocess, like
   the daemon), driven by the same load generator and the same number of farmers, each looping
   GET on a v0-shaped path: the most requests/s twisted.web + this load generator reach here.
2. The real daemon (spawned, --db sqlite|mysql) under v0 farmers (bench/farmers.py v0).
3. The v0 figures against the ceiling: requests/s, node CPU µs per request (target: at most 2× the
   bare resource's), and p99 next to Little's law (mean latency = farmers / requests per second).

Usage: python bench/ceiling.py [--db sqlite|mysql] [--farmers 200] [--contracts 30] [--duration 15] [--quick]
       python bench/ceiling.py --serve   (only the bare resource; prints "listening on …:PORT")
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import farmers  # noqa: E402
from loadgen import Spawned, machine, report, run_load  # noqa: E402

BODY = b'{"all_contracts": [{"hash": "' + b"a" * 64 + b'"}], "due_contracts": []}'


def serve() -> None:
    from twisted.internet import endpoints, reactor
    from twisted.web import resource, server

    class Fixed(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader(b"Content-Type", b"application/json")
            return BODY

    site = server.Site(Fixed())
    site.noisy = False
    site.log = lambda request: None

    def listening(port):
        print(f"listening on 127.0.0.1:{port.getHost().port} ", flush=True)

    endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site).addCallback(listening)
    reactor.run()


async def fixed_farmer(client, url: str, index: int, params: dict, ready: Any) -> None:
    path = f"{url}/api/downstream/due/{index:032x}"
    await farmers.mark_ready(ready)
    while not client.stopping:
        await client.request("GET", path)


def per_request_us(cpu_s: float, requests: int) -> float:
    """Server CPU microseconds per request (nan without requests)."""
    return cpu_s / requests * 1e6 if requests else float("nan")


def comparison(v0: dict[str, float], ceiling: dict[str, float], farmers: int) -> list[str]:
    """The lines comparing the v0 node with the bare resource: requests/s, server CPU per request
    (target: the node at most 2× the bare resource), and p99 next to Little's law.

    Little's law for a closed loop of ``farmers`` clients with one request in flight each and no
    think time: mean latency = farmers / throughput. No request mix can give a p99 below that mean,
    so it is the bound the p99 is compared with (v0 farmers sleep when nothing is due, so for them
    it is an upper estimate of the mean)."""
    node_us = per_request_us(v0["node_cpu_s"], int(v0["requests"]))
    bare_us = per_request_us(ceiling["node_cpu_s"], int(ceiling["requests"]))
    lines = [
        f"requests/s      v0 {v0['requests_s']:.0f} / ceiling {ceiling['requests_s']:.0f} = "
        f"{v0['requests_s'] / ceiling['requests_s']:.1%}",
        f"CPU µs/request  node {node_us:.0f} / bare {bare_us:.0f} = {node_us / bare_us:.2f}×   (target <= 2×)",
    ]
    for name, figures in (("v0", v0), ("ceiling", ceiling)):
        bound = farmers / figures["requests_s"] * 1000 if figures["requests_s"] else float("nan")
        lines.append(f"p99 ms {name:<8} {figures['p99_ms']:.1f}   Little's law mean at {farmers} farmers: "
                     f"{farmers} / {figures['requests_s']:.0f} req/s = {bound:.1f} ms")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = farmers.parser()
    ap.description = __doc__.splitlines()[0]
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--serve" in argv:
        serve()
        return 0
    args = ap.parse_args(["v0", "--spawn", *argv])
    farmers.defaults(args)
    print(f"machine: {machine()}; the load generator and the servers share these cores")
    with tempfile.TemporaryDirectory(prefix="dtx-ceiling-") as tmp:
        bare = Spawned([sys.executable, __file__, "--serve"], Path(tmp) / "bare")
        with bare:
            cpu: dict[str, float] = {}
            params = {"client": args.client, "_on_measure": lambda what: cpu.__setitem__(what, bare.cpu())}
            stats, seconds, info = run_load("ceiling:fixed_farmer", bare.url, args.farmers, args.processes, params,
                                            args.duration, setup_timeout=60, warmup=args.warmup)
            used = cpu.get("stop", 0) - cpu.get("start", 0)
            ceiling = report(f"bare twisted.web fixed JSON ({args.farmers} farmers, closed loop)", stats, seconds,
                             {"server CPU": f"{used:.1f} s in the {seconds:.1f} s window ({used / seconds:.0%} of one "
                                            "core)",
                              "server CPU per request": f"{per_request_us(used, stats.requests):.0f} µs",
                              "load generator": f"{args.processes} processes ({args.client} client)"})
            ceiling |= {"node_cpu_s": used, "requests": stats.requests}
        db = farmers.mysql_url() if args.db == "mysql" else f"sqlite:///{tmp}/data/downstream.db"
        data_dir = os.path.join(tmp, "data")
        print(f"database: {farmers.engine_version(db)}")
        farmers.prepare_v0(db, data_dir, args.contracts, args.farmers, args.interval, args.challenge_batch)
        with Spawned.daemon(Path(tmp) / "daemon", farmers.daemon_args("v0", args, db, data_dir)) as daemon:
            v0 = farmers.run("v0", args, daemon, daemon.url)
    print("== v0 against the ceiling (same farmers, same load generator, same run)")
    for line in comparison(v0, ceiling, args.farmers):
        print("   " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
