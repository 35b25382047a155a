"""Build a realistic downstream-tx node to look at: a few hundred farmers that have farmed for a month.

It makes a new data dir (SQLite database and chunk store) and plays the month through the node's own
services on a simulated clock: stored files are added, farmers with valid SJCX addresses and public
IP addresses (their countries from the GeoIP data; the node keeps only hashes of the addresses) join
over the month, take v0 contracts (and some v1 chunks), and answer their challenges the way farmers
do — most of them steadily, some with outages (containment, misses, failed contracts), some with a
broken disk (wrong answers: disqualified), a few with a broken client (malformed answers:
suspended), some gone for good, some new (not vetted yet). The contract timer, the reputation job
and the uptime summary run as the daemon runs them, and each hour's passes, misses and fails go to
the dashboard's history as the stats job writes them. Nothing is made up afterwards: every figure the
dashboard shows is what the node computed.

    python contrib/demo/populate.py DATA_DIR [--farmers 300] [--days 30] [--seed 2026]
    twistd -n downstream --config DATA_DIR/demo.toml   # then http://127.0.0.1:5000/dashboard

The README's picture (docs/dashboard.png) is a node built by this script with its defaults
(tests/test_dashboard_browser.py takes it with DTX_UPDATE_DOCS_SCREENSHOT=1). The default month
takes a few minutes on a small machine; ``--farmers 40 --days 3`` takes seconds.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import coincurve  # noqa: E402
import orjson  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from downstream_tx.bitcoin import address_from_pubkey  # noqa: E402
from downstream_tx.config import load_config  # noqa: E402
from downstream_tx.db.history import HOUR, HourRow  # noqa: E402
from downstream_tx.errors import NodeError  # noqa: E402
from downstream_tx.heartbeat import Challenge, Merkle, RandomIO, Tag  # noqa: E402
from downstream_tx.jobs.uptime import UptimeSummary  # noqa: E402
from downstream_tx.runtime import (  # noqa: E402
    Observers,
    build_services,
    contract_timer,
    open_database,
    thread_runner,
)
from downstream_tx.v0.hashes import parse_response  # noqa: E402
from downstream_tx.v1.wire import challenge_entries  # noqa: E402

INTERVAL = 2 * HOUR  # v0 files: a challenge every two hours
STEP = HOUR  # the simulation's step: farmers look at their due challenges once an hour
CHUNK = 16 * 1024

#: (kind, share of the farmers)
KINDS = (("steady", 0.58), ("flaky", 0.12), ("broken", 0.06), ("sloppy", 0.03), ("gone", 0.06),
         ("newcomer", 0.15))


@dataclass
class Farmer:
    kind: str
    address: str
    ip: str
    joins: float  # when it asks for its token
    wants: int  # contracts it tries to hold
    leaves: float | None = None  # gone for good from then
    v1: bool = False
    token: str = ""
    outage_until: float = 0.0
    v1_chunks: dict = field(default_factory=dict)  # contract id -> chunk (seed, size, tag)


def address(rng: random.Random) -> str:
    key = coincurve.PrivateKey(rng.randbytes(32))
    return address_from_pubkey(key.public_key.format(compressed=True))


def public_ip(rng: random.Random) -> str:
    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        if ip.is_global and not ip.is_multicast:
            return str(ip)


def make_farmers(rng: random.Random, count: int, v1_count: int, start: float, end: float) -> list[Farmer]:
    farmers = []
    kinds = [k for k, share in KINDS for _ in range(round(share * count))]
    kinds += ["steady"] * (count - len(kinds))
    rng.shuffle(kinds)
    for kind in kinds[:count]:
        joins = end - rng.uniform(0, 2 * 86400) if kind == "newcomer" else start + rng.uniform(0, (end - start) * 0.4)
        f = Farmer(kind, address(rng), public_ip(rng), joins, rng.choice((1, 2, 3, 4, 6)))
        if kind == "gone":
            f.leaves = end - rng.uniform(3600, 10 * 86400)
        farmers.append(f)
    for _ in range(v1_count):
        farmers.append(Farmer("steady", address(rng), public_ip(rng), end - rng.uniform(3600, 6 * 86400),
                              rng.choice((1, 2)), v1=True))
    return sorted(farmers, key=lambda f: f.joins)


class History:
    """The node's challenge results per hour, as the stats job counts them."""

    def __init__(self, clock: task.Clock):
        self.clock = clock
        self.hours: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])

    def count(self, result: str, n: int, protocol: int = 0) -> None:
        column = {"pass": 0, "late_pass": 0, "miss": 1, "fail": 2}.get(result)
        if column is not None and n:
            self.hours[int(self.clock.seconds() // HOUR)][column] += n

    def rows(self) -> list[HourRow]:
        return [HourRow(hour, *counts) for hour, counts in sorted(self.hours.items())]


def online(f: Farmer, now: float, rng: random.Random) -> bool:
    if now < f.joins or (f.leaves is not None and now >= f.leaves):
        return False
    if now < f.outage_until:
        return False
    chance, longest = {"flaky": (0.03, 10), "steady": (0.002, 3)}.get(f.kind, (0.004, 4))
    if rng.random() < chance:
        f.outage_until = now + rng.randint(1, longest) * HOUR
        return False
    return True


async def farm_v0(node, f: Farmer, rng: random.Random, data: dict[str, bytes], end: float) -> None:
    import hashlib
    import hmac

    now = node.clock.seconds()
    _, due = await node.v0.due(f.token)
    for item in due:
        file_hash = item["file_hash"]
        right = hmac.new(item["challenge"], data[file_hash], hashlib.sha256).hexdigest()
        wrong = f.kind == "broken" and rng.random() < 0.12
        try:
            await node.v0.answer(f.token, file_hash, parse_response("0" * 64 if wrong else right))
        except NodeError:
            pass
    if f.kind == "sloppy" and now > end - 14 * 86400:
        for _ in range(2):  # a broken client: answers that are not even hex
            try:
                await node.v0.answer(f.token, due[0]["file_hash"] if due else "0" * 64, parse_response("not-an-answer"))
            except NodeError:
                pass
    held, _ = await node.v0.due(f.token)
    for _ in range(f.wants - len(held)):
        try:
            await node.v0.get_chunk(f.token)
        except NodeError:  # nothing needs another farmer now, vetting share, standing
            break


async def farm_v1(node, f: Farmer) -> None:
    held = sum(c["size"] for c in f.v1_chunks.values())
    if held < f.wants * CHUNK:
        for c in orjson.loads(orjson.dumps(await node.v1.chunks(f.token, f.ip, f.wants * CHUNK - held))):
            f.v1_chunks[c["file_hash"]] = c
    if not f.v1_chunks:
        return
    proofs = []
    for entry in orjson.loads(orjson.dumps(challenge_entries(await node.v1.challenges(f.token, None)))):
        chunk = f.v1_chunks.get(entry["file_hash"])
        if chunk is None or "challenge" not in entry:
            f.v1_chunks.pop(entry["file_hash"], None)
            continue
        if not entry["answered"]:
            proof = Merkle(node.config.seeded_check_fraction, b"").prove(
                RandomIO(chunk["seed"], chunk["size"]), Challenge.from_dict(entry["challenge"]),
                Tag.from_dict(chunk["tag"]))
            proofs.append({"file_hash": entry["file_hash"], "proof": proof.to_dict()})
    if proofs:
        await node.v1.answer(f.token, f.ip, proofs)


async def populate(reactor, data_dir: str, farmers: int, days: int, seed: int, v1_count: int) -> None:
    rng = random.Random(seed)
    end = float(int(time.time()))
    start = end - days * 86400
    clock = task.Clock()
    clock.advance(start)
    # the operator's choices, written to DATA_DIR/demo.toml for the daemon that serves the node: a node
    # that vets a farmer after 30 passed audits and does not limit the share of new contracts going to
    # farmers not vetted yet (vetting_share 1: a young network that needs every farmer; with the
    # default 5 % a farmer asking while the vetted ones are full waits), small v1 chunks
    settings = {"data_dir": os.path.abspath(data_dir), "seeded_pool": f"{CHUNK}:{max(8, v1_count)}",
                "seeded_challenges": 40, "seeded_interval": STEP, "max_tokens_per_ip": 0, "token_rate": 0,
                "vetting_audits": 30, "vetting_share": 1.0}
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(data_dir, "demo.toml"), "w", encoding="utf-8") as f:
        f.write("# written by contrib/demo/populate.py: twistd -n downstream --config <this file>\n")
        f.writelines(f"{k} = {v!r}\n".replace("'", '"') for k, v in settings.items())
    config = load_config(None, environ={}, overrides=settings)
    db = await open_database(config, reactor)
    history = History(clock)
    node = await build_services(db, config, clock, thread_runner(reactor),
                                observers=Observers(results=(history.count,)))
    timer = contract_timer(node)
    uptime = UptimeSummary(node.stores.status, clock)
    data: dict[str, bytes] = {}

    async def add_files(count: int) -> None:
        """The operator adds data: ``count`` stored files (random bytes, redundancy 3 to 5)."""
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(count):
                path = Path(tmp) / f"chunk-{n}"
                path.write_bytes(rng.randbytes(CHUNK))
                file_hash = await node.files.add(str(path), rng.choice((3, 3, 4, 5)), INTERVAL)
                with open(node.chunks.path_for(file_hash), "rb") as stored:
                    data[file_hash] = stored.read()

    await add_files(max(20, farmers // 4))
    people = make_farmers(rng, farmers, v1_count, start, end)
    steps = int((end - start) // STEP)
    for step in range(steps):
        clock.advance(STEP)
        now = clock.seconds()
        for f in people:
            if not f.token and now >= f.joins:
                f.token = (await node.v1.new_token(f.address, f.ip))["token"] if f.v1 \
                    else await node.v0.create_token(f.address, f.ip)
        await timer()
        await node.reputation.sweep()
        if v1_count:
            await node.pool.refill()
        for f in people:
            if f.token and online(f, now, rng):
                await (farm_v1(node, f) if f.v1 else farm_v0(node, f, rng, data, end))
        await uptime()
        if rng.random() < max(2, farmers // 40) / 24:  # the operator adds data now and then
            await add_files(1)
        if step % 24 == 0:
            print(f"day {step // 24 + 1} of {days}: {sum(1 for f in people if f.token)} farmers", file=sys.stderr)
    await node.stores.history.record("demo-populate".ljust(16, "0")[:16], history.rows())
    db.close()
    kinds = defaultdict(int)
    for f in people:
        kinds["v1" if f.v1 else f.kind] += 1
    print(f"{data_dir}: {len(people)} farmers ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
          f"{len(data)} stored files, {days} days ending {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(end))}; "
          f"serve it with: twistd -n downstream --config {os.path.join(data_dir, 'demo.toml')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", help="a new data dir (must not hold a database)")
    p.add_argument("--farmers", type=int, default=300, help="v0 farmers (default 300)")
    p.add_argument("--v1-farmers", type=int, default=30, help="v1 farmers (default 30)")
    p.add_argument("--days", type=int, default=30, help="days of farming (default 30)")
    p.add_argument("--seed", type=int, default=2026, help="random seed (the same node for the same seed)")
    args = p.parse_args(argv)
    if os.path.exists(os.path.join(args.data_dir, "downstream.db")):
        p.error(f"{args.data_dir} holds a database already")
    task.react(lambda reactor: defer.ensureDeferred(
        populate(reactor, args.data_dir, args.farmers, args.days, args.seed, args.v1_farmers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
