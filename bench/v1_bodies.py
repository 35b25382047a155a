#!/usr/bin/env python3
"""CPU per proof of reading one large v1 ``/answer`` body (500 proofs of a 16 KiB chunk, ~350 KB,
over the inline size): the streaming parser alone, then ``stream_items`` (orjson when
``fast_items`` can vouch for the body), rounds alternating. ``--freeze``: ``gc.freeze()`` first, as
the daemon does once it is ready.

    python bench/v1_bodies.py [--proofs 500] [--rounds 7] [--freeze]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import orjson

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from downstream_tx.heartbeat import Merkle, RandomIO, encode_seeded  # noqa: E402
from downstream_tx.http import bodies  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proofs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--freeze", action="store_true")
    args = parser.parse_args()
    key, seed, size = os.urandom(32), os.urandom(16).hex(), 16384
    tag, state = encode_seeded(key, seed, size, n=64, check_fraction=0.01, timestamp=0.0)
    challenge = Merkle(0.01, key).gen_challenge(state)
    proof = Merkle(0.01, b"").prove(RandomIO(seed, size), challenge, tag).to_dict()
    raw = orjson.dumps({"proofs": [{"file_hash": 100000 + i, "proof": proof} for i in range(args.proofs)]})
    assert bodies.fast_items(raw, "proofs") == bodies._items_before_error(raw, "proofs")
    if args.freeze:
        gc.freeze()
    sides = {"streamed": bodies._items_before_error, "stream_items": bodies.stream_items}
    results: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, parse in sides.items():
            start = time.process_time()
            for _ in range(10):
                parse(raw, "proofs")
            results[name].append((time.process_time() - start) / 10 / args.proofs * 1e6)
    print(f"body {len(raw)} bytes, {args.proofs} proofs, load {os.getloadavg()[0]:.2f}, freeze {args.freeze}")
    for name, values in results.items():
        print(f"  {name:13s} median {statistics.median(values):5.1f} µs per proof (min {min(values):.1f})")


if __name__ == "__main__":
    main()
