"""Heartbeat micro-benchmarks.

Usage: python bench/heartbeat.py [--quick] [--size 32M] [--chal-size 4M] [--count 100]

1. v0 hash challenges: batch precompute of COUNT HMAC answers over a CHAL-SIZE file in one
   read pass, against raw hashlib.sha256 over the same bytes x COUNT.
2. Merkle encode (check_fraction 0.01, n=256) of a seeded RandomIO chunk of SIZE bytes,
   against raw AES-CTR keystream + sha256 over the same window bytes.
3. Merkle verify throughput for an n=256 tag.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from downstream_tx.heartbeat import (  # noqa: E402
    Merkle,
    RandomIO,
    batch_answers,
    derive_seeds,
    keyed_prf,
    next_seed,
)
from downstream_tx.heartbeat.randomio import randomio_key  # noqa: E402

MIB = 1024 * 1024


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_hash_challenges(size: int, count: int, repeat: int) -> None:
    seeds = derive_seeds(b"bench-secret", os.urandom(32), count)
    with tempfile.TemporaryDirectory() as tmp:
        path = RandomIO("bench-chal").genfile(size, os.path.join(tmp, "chunk"))
        data = Path(path).read_bytes()
        t_batch = best_of(repeat, lambda: batch_answers(seeds, path))

        def raw() -> None:
            for _ in range(count):
                h = hashlib.sha256()
                for off in range(0, size, MIB):
                    h.update(data[off : off + MIB])
                h.digest()

        t_raw = best_of(repeat, raw)
    work = size * count
    eff, base = work / t_batch / 1e6, work / t_raw / 1e6
    print(f"[1] hash challenges: {count} answers over {size / MIB:.2f} MiB file, one pass")
    print(f"    batch precompute  {t_batch * 1e3:9.1f} ms   effective {eff:9.1f} MB/s of HMAC work")
    print(f"    raw sha256 x{count:<4d} {t_raw * 1e3:9.1f} ms   {base:9.1f} MB/s")
    print(f"    ratio batch/raw   {eff / base:9.3f}")


def bench_encode(size: int, n: int, repeat: int) -> None:
    key, root = b"K" * 32, b"R" * 32
    merkle = Merkle(0.01, key)
    chunk_seed = "70aacdc6a2f7ef0e7c1effde27299eda"
    chunksz = min(int(0.01 * size), size)
    # the same windows encode() reads, so the baseline does identical byte work
    windows, s = [], next_seed(key, root)
    for _ in range(n):
        windows.append(keyed_prf(s, size - chunksz + 1, 0))
        s = next_seed(key, s)
    aes_key = randomio_key(chunk_seed)

    def raw() -> None:
        for off in windows:
            block, skip = divmod(off, 16)
            enc = Cipher(algorithms.AES(aes_key), modes.CTR((block + 1).to_bytes(16, "big")))
            hashlib.sha256(enc.encryptor().update(bytes(skip + chunksz))[skip:]).digest()

    def encode() -> None:
        merkle.encode(RandomIO(chunk_seed, size), n=n, seed=root, filesz=size, timestamp=0.0)

    t_enc = best_of(repeat, encode)
    t_raw = best_of(repeat, raw)
    work = n * chunksz
    eff, base = work / t_enc / 1e6, work / t_raw / 1e6
    print(f"[2] Merkle encode: RandomIO chunk {size / MIB:.2f} MiB, check_fraction 0.01, n={n}"
          f" (window {chunksz} B, {work / MIB:.2f} MiB hashed)")
    print(f"    encode            {t_enc * 1e3:9.1f} ms   {eff:9.1f} MB/s hashed   "
          f"{1 / t_enc:8.2f} encodes/s")
    print(f"    raw AES-CTR+sha256 {t_raw * 1e3:8.1f} ms   {base:9.1f} MB/s")
    print(f"    ratio encode/raw  {eff / base:9.3f}")


def bench_verify(n: int, rounds: int) -> None:
    merkle = Merkle(0.01, b"K" * 32)
    data = RandomIO("bench-verify", 64 * 1024)
    tag, state = merkle.encode(data, n=n, seed=b"R" * 32, filesz=64 * 1024, timestamp=0.0)
    cases = []
    for _ in range(n):
        challenge = merkle.gen_challenge(state)
        snapshot = type(state)(**state.__dict__)
        cases.append((merkle.prove(data, challenge, tag), challenge, snapshot))
    ok = 0
    times = []
    for _ in range(rounds):  # each round timed alone: the best is the figure a busy machine disturbs least
        t0 = time.perf_counter()
        for proof, challenge, st in cases:
            ok += merkle.verify(proof, challenge, st)
        times.append(time.perf_counter() - t0)
    assert ok == rounds * n
    elapsed = sum(times)
    best, median = min(times) / n, sorted(times)[len(times) // 2] / n
    print(f"[3] Merkle verify: n={n} tag (order {tag.tree.order}), {rounds} rounds of {n} verifies")
    print(f"    {rounds * n / elapsed:12.0f} verifies/s   ({elapsed / (rounds * n) * 1e6:.1f} us each; "
          f"best round {best * 1e6:.1f} us, median {median * 1e6:.1f} us)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (for the test suite)")
    ap.add_argument("--size", type=parse_size, help="Merkle RandomIO chunk size (default 32M)")
    ap.add_argument("--chal-size", type=parse_size, help="hash-challenge file size (default 4M)")
    ap.add_argument("--count", type=int, default=100, help="hash challenges per batch")
    ap.add_argument("--n", type=int, default=256, help="Merkle challenges per tag")
    args = ap.parse_args(argv)
    if args.quick:
        size, chal_size, repeat, rounds = args.size or MIB, args.chal_size or 256 * 1024, 1, 2
    else:
        size, chal_size, repeat, rounds = args.size or 32 * MIB, args.chal_size or 4 * MIB, 3, 20
    print(f"python {sys.version.split()[0]}, {'quick' if args.quick else 'full'} run")
    bench_hash_challenges(chal_size, args.count, repeat)
    bench_encode(size, args.n, repeat)
    bench_verify(args.n, rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
