"""The v1 refresh + answer cycle in process: node CPU per verified proof without HTTP or a load generator.

One token takes CONTRACTS seeded chunks, then each round waits for the challenge interval (not
counted), asks ``V1Farming.challenges`` for all of them, proves every challenge (not counted) and
hands the proofs to ``V1Farming.answer``; the process's CPU around those two calls is what is
counted (the node's own services, stores and database transactions, on the real connection pool).
Where the CPU goes: py-spy on this process (``py-spy record -o out.txt -f raw -- python
bench/v1_cycle.py``), or on the daemon under ``bench/farmers.py`` (docs/profiles/).

  python bench/v1_cycle.py [--contracts 500] [--rounds 6] [--db sqlite|mysql]
  (mysql: $DOWNSTREAM_TEST_MYSQL_URL's server, database $DOWNSTREAM_BENCH_DB, dropped and re-created)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

ADDRESS = "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contracts", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=6, help="counted cycles (after one uncounted)")
    ap.add_argument("--challenges", type=int, default=64, help="challenges encoded per seeded chunk")
    ap.add_argument("--db", choices=["sqlite", "mysql"], default="sqlite")
    ap.add_argument("--interval", type=int, default=2, help="challenge interval, s")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.contracts, args.rounds, args.challenges = 5, 2, 8

    from twisted.internet import defer, task

    counted = {"refresh": 0.0, "answer": 0.0, "proofs": 0}

    async def call(name: str, d, proofs: int):
        started = time.process_time()
        try:
            return await d
        finally:
            counted[name] += time.process_time() - started

    async def measure(reactor, tmp: str) -> None:
        db = f"sqlite:///{tmp}/data/downstream.db"
        if args.db == "mysql":
            from farmers import mysql_url

            db = mysql_url()
        counted["proofs"] = await cycle(reactor, db, tmp, args.contracts, args.rounds, args.challenges,
                                        args.interval, call)

    with tempfile.TemporaryDirectory(prefix="dtx-bench-") as tmp:
        Path(tmp, "data").mkdir()
        try:
            task.react(lambda reactor: defer.ensureDeferred(measure(reactor, tmp)))
        except SystemExit as e:
            if e.code:
                raise
    n = counted["proofs"]
    print(f"v1 cycle in process, {args.db}, {args.contracts} contracts, {args.rounds} rounds: {n} verified proofs")
    print(f"   node CPU per verified proof: refresh {counted['refresh'] / n * 1e6:.1f} µs + answer "
          f"{counted['answer'] / n * 1e6:.1f} µs = {(counted['refresh'] + counted['answer']) / n * 1e6:.1f} µs")
    return 0


async def cycle(reactor, db: str, tmp: str, contracts: int, rounds: int, challenges: int, interval: int,
                call, overrides: dict | None = None) -> int:
    """One token takes ``contracts`` seeded chunks on the node's services over database ``db``
    (data directory ``tmp``/data), then ``rounds`` counted refresh + answer cycles (after one
    uncounted). ``call(name, deferred, proofs)`` awaits each counted service call (``refresh`` or
    ``answer``, for ``proofs`` proofs) and measures it. Returns the verified proofs counted."""
    from twisted.internet import task

    from downstream_tx.config import load_config
    from downstream_tx.heartbeat import Challenge, Merkle, RandomIO, Tag
    from downstream_tx.runtime import open_services
    from downstream_tx.v1.reports import ProofOutcome
    from downstream_tx.v1.wire import challenge_entries

    async def rendered(challenges):  # the report as the route renders it (counted, as the route's work)
        return challenge_entries(await challenges)

    config = load_config(environ={}, overrides={
        "db": db, "data_dir": f"{tmp}/data", "max_tokens_per_ip": 0, "max_size_per_address": 1 << 40,
        "max_chunks_per_request": 0, "seeded_interval": interval, "seeded_challenges": challenges,
        "seeded_pool": f"2048:{contracts}", **(overrides or {})})
    services = await open_services(config, reactor)
    counted = 0
    try:
        await services.pool.refill()
        v1 = services.v1
        token = (await v1.new_token(ADDRESS, "127.0.0.1"))["token"]
        chunks = orjson.loads(orjson.dumps(await v1.chunks(token, "127.0.0.1", 2048 * contracts)))
        if len(chunks) != contracts:
            raise SystemExit(f"{len(chunks)} seeded chunks of {contracts} given")
        byid = {c["file_hash"]: (RandomIO(c["seed"], c["size"]), Tag.from_dict(c["tag"])) for c in chunks}
        farmer = Merkle(config.seeded_check_fraction, b"")
        entries = chunks

        async def uncounted(name, d, proofs):
            return await d

        for r in range(rounds + 1):
            measured = call if r else uncounted  # the first round (first answers only) is not counted
            if r:
                await task.deferLater(reactor, interval + 0.05, lambda: None)
                entries = orjson.loads(orjson.dumps(
                    await measured("refresh", rendered(v1.challenges(token, None)), len(chunks))))
            late = [e for e in entries if "challenge" not in e]
            if late:
                raise SystemExit(f"round {r}: {len(late)} contracts without a challenge (the machine proved them "
                                 f"in over the interval, {interval} s?): {late[:2]}")
            proofs = [{"file_hash": e["file_hash"], "proof": farmer.prove(
                byid[e["file_hash"]][0], Challenge.from_dict(e["challenge"]), byid[e["file_hash"]][1]).to_dict()}
                for e in entries]
            report = await measured("answer", v1.answer(token, "127.0.0.1", orjson.loads(orjson.dumps(proofs))),
                                    len(proofs))
            ok = report.count(ProofOutcome.OK)
            if ok != len(proofs):
                raise SystemExit(f"round {r}: {len(proofs) - ok} proofs not ok: {report.entries[:3]}")
            if r:
                counted += ok
    finally:
        services.db.close()
    return counted


if __name__ == "__main__":
    raise SystemExit(main())
