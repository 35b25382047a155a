"""v1 farmers spread over several daemon instances on a MariaDB Galera cluster.

Each instance runs on its own Galera node (its URL lists every node, its own first); the farmers of
load-generator worker k go to instance k mod N. "proofs/s" counts real Merkle verifies the nodes
reported "ok" (bench/farmers.py, v1). CPU figures: the daemons' (all instances) and the mariadbd
processes' (all nodes), each per proof, measured over the same window; the load generator runs on
the same cores.

Usage (a cluster from contrib/galera/cluster.sh, docs/operations.md "MariaDB Galera"):
  contrib/galera/cluster.sh start /tmp/dtx-galera
  python bench/galera_instances.py --cluster /tmp/dtx-galera [--instances 3] [--farmers 30 --contracts 300]
  contrib/galera/cluster.sh stop /tmp/dtx-galera
  python bench/galera_instances.py --mysql mysql://user:pw@127.0.0.1:3306/x [--instances 1]   # one server
The database dtx_gal_bench (--database) is dropped and re-created on the cluster (or the server).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import farmers  # noqa: E402
from loadgen import Spawned, machine, proc_cpu, report, run_load  # noqa: E402

DATABASE = "dtx_gal_bench"


async def v1_farmer(client, urls: str, index: int, params: dict, ready: Any) -> None:
    """bench/farmers.py's v1 farmer on instance ``index`` mod N (``urls``: separated by spaces)."""
    choices = urls.split()
    await farmers.v1_farmer(client, choices[index % len(choices)], index, params, ready)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--cluster", help="the directory of a cluster started by contrib/galera/cluster.sh")
    where.add_argument("--mysql", metavar="URL", help="instead, one MySQL/MariaDB server (a user that may create "
                       "--database; the database name of URL is ignored), for comparison")
    ap.add_argument("--database", default=DATABASE, help="the database to drop and re-create")
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--farmers", type=int, default=30)
    ap.add_argument("--contracts", type=int, default=300)
    ap.add_argument("--processes", type=int, default=3, help="load generator worker processes")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--interval", type=int, help="v1 seeded_interval; default as bench/farmers.py: one second per "
                    f"{farmers.V1_PROOFS_PER_INTERVAL} contracts")
    ap.add_argument("--tick", type=float, default=0.2)
    ap.add_argument("--challenges", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=16384)
    ap.add_argument("--chunk-batch", type=int, default=50, help="chunks per /chunk request (as bench/farmers.py)")
    ap.add_argument("--pool-size", type=int, default=5)
    ap.add_argument("--setup-timeout", type=float, default=300.0)
    ap.add_argument("--chunk-attempts", type=int, default=5,
                    help="/chunk requests a farmer makes for its contracts before it starts cycling")
    # each instance is one process (bench/farmers.py's daemon_args reads ``workers``)
    ap.set_defaults(workers=1)
    ap.add_argument("--keep-logs", metavar="DIR", help="copy each daemon's log to DIR/daemonN.log")
    args = ap.parse_args(argv)
    args.client, args.idle, args.challenge_batch = "raw", 0.2, 100
    if args.interval is None:
        args.interval = max(1, round(args.farmers * args.contracts / farmers.V1_PROOFS_PER_INTERVAL))

    if args.cluster:
        cluster = json.loads((Path(args.cluster) / "cluster.json").read_text())
        nodes = [{"host": "127.0.0.1", "port": n["port"], "pid": n["pid"]} for n in cluster["nodes"]]
        user, password = cluster["user"], cluster["password"]
    else:
        from downstream_tx.db.url import parse_db_url

        server = parse_db_url(args.mysql)
        nodes = [{"host": server.host, "port": server.port, "pid": None}]
        user, password = server.user, server.password
    import pymysql

    conn = pymysql.connect(host=nodes[0]["host"], port=nodes[0]["port"], user=user, password=password)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{args.database}`")
        cur.execute(f"CREATE DATABASE `{args.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        cur.execute("SELECT VERSION()")
        version = cur.fetchone()[0]
    conn.close()

    def url(first: int) -> str:
        order = [nodes[(first + k) % len(nodes)] for k in range(len(nodes))]
        return f"mysql://{user}:{password}@" + ",".join(f"{n['host']}:{n['port']}" for n in order) + f"/{args.database}"

    print(f"machine: {machine()}; the load generator, {args.instances} daemon(s) and {len(nodes)} Galera nodes "
          "share these cores")
    kind = f"Galera cluster of {len(nodes)} nodes" if args.cluster else "one server (not measured: shared)"
    print(f"database: MariaDB {version}, {kind}")
    with tempfile.TemporaryDirectory(prefix="dtx-bench-galera-") as tmp, ExitStack() as stack:
        total = args.farmers * args.contracts
        took = farmers.prepare_v1(url(0), f"{tmp}/prep", total, args.chunk_size, args.challenges,
                                  max(1, args.processes))
        print(f"setup: {total} seeded chunks of {args.chunk_size} B, {args.challenges} challenges each, "
              f"encoded and pooled in {took:.1f} s; challenge interval {args.interval} s")
        daemons = []
        for i in range(args.instances):
            daemon_args = farmers.daemon_args("v1", args, url(i % len(nodes)), f"{tmp}/data{i}")
            daemons.append(stack.enter_context(Spawned.daemon(Path(tmp) / f"daemon{i}", daemon_args)))
        mariadbd = [n["pid"] for n in nodes if n["pid"]]
        cpu: dict[str, tuple[float, float]] = {}

        def on_measure(what: str) -> None:
            cpu[what] = (sum(d.cpu() for d in daemons), sum(proc_cpu(p) for p in mariadbd))

        params = {"client": args.client, "contracts": args.contracts, "idle": args.idle,
                  "chunk_attempts": args.chunk_attempts, "max_chunk_size": args.chunk_size,
                  "chunk_batch": args.chunk_batch, "_on_measure": on_measure}
        urls = " ".join(d.url for d in daemons)
        stats, seconds, info = run_load("galera_instances:v1_farmer", urls, args.farmers, args.processes, params,
                                        args.duration, setup_timeout=args.setup_timeout, warmup=args.warmup)
        node_cpu = cpu["stop"][0] - cpu["start"][0]
        db_cpu = cpu["stop"][1] - cpu["start"][1]
        proofs = stats.counts.get("proofs", 0)
        extra = {"farmers ready": f"{info['ready']}/{args.farmers} after {info['setup_s']:.1f} s",
                 "load generator": f"{args.processes} processes, {args.farmers} farmers, {args.contracts} "
                                   f"contracts each, spread over {args.instances} instance(s)",
                 "daemons CPU": f"{node_cpu:.1f} s in the {seconds:.1f} s window ({node_cpu / seconds:.0%} of one "
                                "core, all instances)",
                 "mariadbd CPU": f"{db_cpu:.1f} s ({db_cpu / seconds:.0%} of one core, all nodes)" if mariadbd
                 else "not measured (a server not started here)"}
        if proofs and node_cpu > 0:
            extra["daemon CPU per proof"] = f"{node_cpu / proofs * 1000:.2f} ms ({proofs / node_cpu:.0f} proofs per " \
                                            "daemon CPU-second)"
            if mariadbd:
                extra["mariadbd CPU per proof"] = f"{db_cpu / proofs * 1000:.2f} ms"
        if args.keep_logs:
            for i, d in enumerate(daemons):
                (Path(args.keep_logs) / f"daemon{i}.log").write_text(d.log())
        report(f"v1 farmers, {args.instances} instance(s) on {kind}", stats, seconds, extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
