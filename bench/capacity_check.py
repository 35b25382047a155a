"""The capacity model's check, growth told from noise: bench/capacity.py's probe run on two kept
databases of different sizes, alternating (small, big, small, big, …), each run started only when
the machine is quiet, then per operation the median (and spread) of each size and the ratio of the
medians against the model's criterion (docs/capacity.md, "The check at 10M contracts").

Each run is a process of its own: ``bench/capacity.py --mysql URL --fill N --keep --save
OUT/N-i.json`` (its output in ``OUT/N-i.log``), with the probe's options after ``--``. A run starts
when ``/proc/loadavg``'s 1-minute figure is below ``--max-load`` (checked every 15 s; after
``--max-wait`` seconds it starts anyway and is marked loaded); the load at its start is saved in its
JSON (``load_start``, next to capacity.py's ``load`` at its end). The databases must have been
filled first (``capacity.py --fill N --keep --fill-only``); nothing is dropped.

Usage:
  python bench/capacity_check.py --db 1000000=mysql://root:@127.0.0.1:3306/dtx_bench_cap1m \\
      --db 10000000=mysql://root:@127.0.0.1:3306/dtx_bench_cap10m --runs 3 --out check/ \\
      -- --contracts 100 --repairs 30
  python bench/capacity_check.py --summary check/      # the table again, from the saved runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the criterion of issue 25: per-operation costs and size at the big size within 25% of predicted
CRITERION = 0.25
#: the per-operation figures summarised (capacity.py's ``per_op`` keys)
FIGURES = (("node_ms", "node CPU ms"), ("db_ms", "database CPU ms"), ("rows", "rows changed"),
           ("rows_read", "rows read"), ("wall_ms", "wall ms"), ("pool_reads", "pool reads (global)"),
           ("server_ms", "server process CPU ms (global)"),
           ("db_per_node", "database CPU / node CPU of the same run (the node's code is the same at both sizes: "
            "the machine's speed cancels)"))
#: figures shown, not held to the criterion (wall time; counters of the whole server)
UNJUDGED = ("wall_ms", "pool_reads", "server_ms")


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_quiet(max_load: float, max_wait: float, poll: float = 15.0, now=time.monotonic, sleep=time.sleep,
               load=load1) -> tuple[float, bool]:
    """Waits until the 1-minute load is below ``max_load`` (at most ``max_wait`` s): (the load then,
    whether it was quiet)."""
    deadline = now() + max_wait
    while True:
        current = load()
        if current < max_load:
            return current, True
        if now() >= deadline:
            return current, False
        print(f"   load {current:.2f} >= {max_load}: waiting", flush=True)
        sleep(poll)


def run_all(dbs: list[tuple[int, str]], runs: int, out: Path, probe: list[str], max_load: float,
            max_wait: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i in range(runs):
        for n, url in dbs:
            name = f"{n}-{i}"
            if (out / f"{name}.json").exists():
                print(f"{name}: saved before, skipped")
                continue
            load, quiet = wait_quiet(max_load, max_wait)
            started = time.strftime("%H:%M:%S", time.gmtime())
            print(f"{name}: {started} UTC, load {load:.2f}" + ("" if quiet else " (LOADED: waited too long)"),
                  flush=True)
            cmd = [sys.executable, str(HERE / "capacity.py"), "--mysql", url, "--fill", str(n), "--keep",
                   "--save", str(out / f"{name}.json"), *probe]
            with open(out / f"{name}.log", "w") as log:
                done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode:
                raise SystemExit(f"{name} failed ({done.returncode}): see {out / f'{name}.log'}")
            saved = json.loads((out / f"{name}.json").read_text())
            saved.update(load_start=load, quiet=quiet, started=started, size=n)
            (out / f"{name}.json").write_text(json.dumps(saved, indent=1))
            print(f"   done, load at its end {saved['load']}", flush=True)


def load_runs(out: Path) -> dict[int, list[dict]]:
    """size -> its saved runs, in run order (each with its number, ``run``)."""
    runs: dict[int, list[tuple[int, dict]]] = {}
    for f in out.glob("*-*.json"):
        n, i = f.stem.rsplit("-", 1)
        runs.setdefault(int(n), []).append((int(i), {**json.loads(f.read_text()), "run": int(i)}))
    return {n: [r for _, r in sorted(v, key=lambda kv: kv[0])] for n, v in sorted(runs.items())}


def figure(per_op: dict, key: str) -> float:
    if key == "db_per_node":
        return per_op["db_ms"] / per_op["node_ms"] if per_op.get("node_ms") else 0.0
    return per_op.get(key, 0.0)


def summary(runs: dict[int, list[dict]]) -> dict:
    """Per operation and figure: each size's median, least and most, the ratio of the biggest
    size's median to the smallest's, and the median of the run-by-run ratios (run i of the big size
    against run i of the small one: neighbours in time, so a slow spell of the machine counts in
    both); the database size measured against predicted (the small size's bytes per row times the
    big size's rows, as capacity.py --compare)."""
    small, big = min(runs), max(runs)
    ops = [op for op in runs[small][0]["per_op"] if all(op in r["per_op"] for rs in runs.values() for r in rs)]
    out: dict = {"sizes": {n: len(rs) for n, rs in runs.items()},
                 "loads": {n: [r.get("load_start") for r in rs] for n, rs in runs.items()}, "ops": {}}
    for op in ops:
        figures = {}
        for key, _ in FIGURES:
            per_size = {}
            for n, rs in runs.items():
                values = [figure(r["per_op"][op], key) for r in rs]
                per_size[n] = (statistics.median(values), min(values), max(values))
            ratio = per_size[big][0] / per_size[small][0] if per_size[small][0] else None
            smalls = {r["run"]: figure(r["per_op"][op], key) for r in runs[small]}
            pairs = [figure(r["per_op"][op], key) / smalls[r["run"]] for r in runs[big] if smalls.get(r["run"])]
            figures[key] = {"per_size": per_size, "ratio": ratio,
                            "paired": statistics.median(pairs) if pairs else None}
        out["ops"][op] = figures
    last_small, last_big = runs[small][-1], runs[big][-1]
    predicted = measured = 0.0
    tables = {}
    for t, (rows, length, _) in last_big.get("sizes", {}).items():
        per_row = last_small.get("per_row", {}).get(t)
        if per_row and rows:
            predicted += per_row * rows
            measured += length
            tables[t] = length / (per_row * rows)
    out["size"] = {"ratio": measured / predicted if predicted else None, "tables": tables, "bytes": measured}
    return out


def print_summary(s: dict) -> None:
    small, big = min(s["sizes"]), max(s["sizes"])
    print(f"== {big:,} against {small:,} contracts: median (least-most) of {s['sizes'][big]} and "
          f"{s['sizes'][small]} runs; ratio = median / median, * outside {CRITERION:.0%}; paired = the median "
          "of run i's ratios")
    for n, loads in s["loads"].items():
        print(f"   load at start, {n:,}: " + ", ".join("?" if x is None else f"{x:.2f}" for x in loads))
    for key, label in FIGURES:
        print(f"-- {label}")
        for op, figures in s["ops"].items():
            f = figures[key]
            cells = "   ".join(f"{m:9.3f} ({lo:.3f}-{hi:.3f})"
                               for m, lo, hi in (f["per_size"][small], f["per_size"][big]))
            ratio, paired = f["ratio"], f["paired"]
            judged = ratio is not None and key not in UNJUDGED
            mark = " *" if judged and abs(ratio - 1) > CRITERION else ""
            print(f"   {op:26} {cells}   {'-' if ratio is None else f'{ratio:.2f}'}{mark:2}   paired "
                  + ("-" if paired is None else f"{paired:.2f}"))
    size = s["size"]
    if size["ratio"] is not None:
        print(f"-- database size at {big:,}: measured / predicted {size['ratio']:.2f} ("
              + ", ".join(f"{t} {r:.2f}" for t, r in sorted(size["tables"].items()) if t in (
                  "contracts", "files", "challenges", "tokens")) + ")")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    probe = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", action="append", default=[], help="N=URL: a database filled with N contracts")
    ap.add_argument("--runs", type=int, default=3, help="runs of each size")
    ap.add_argument("--out", help="directory of the saved runs")
    ap.add_argument("--max-load", type=float, default=1.5, help="a run starts when the 1-minute load is below this")
    ap.add_argument("--max-wait", type=float, default=1800.0, help="s; then a run starts anyway (marked loaded)")
    ap.add_argument("--summary", help="print the summary of the runs saved in this directory, run nothing")
    args = ap.parse_args(argv)
    if args.summary:
        out = Path(args.summary)
    else:
        if len(args.db) != 2 or not args.out:
            raise SystemExit("needs two --db N=URL and --out DIR")
        dbs = [(int(n), url) for n, url in (d.split("=", 1) for d in args.db)]
        out = Path(args.out)
        run_all(sorted(dbs), args.runs, out, probe, args.max_load, args.max_wait)
    runs = load_runs(out)
    if len(runs) != 2:
        raise SystemExit(f"needs the runs of two sizes in {out}, found {sorted(runs)}")
    print_summary(summary(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
