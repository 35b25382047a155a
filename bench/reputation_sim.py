"""Reputation simulator (issue 24, docs/operations.md "Reputation"): populations of farmers for 30
simulated days under the node's own rule functions and its default settings — no HTTP, no
database: domain/online.py (``should_record``, ``was_active``, ``count_windows``, ``counted_for``,
``decay``, ``offline_change``) and the audit score of db/reputation.py (``coefficients``, ``score``),
with the thresholds of ``rules_of(default configuration)``.

The model, per farmer: it holds ``--contracts`` v0 contracts of one ``--interval`` (each window
issues a challenge per contract, due at the window's end); while online it asks the node for its
due challenges every ``--poll`` seconds and answers them (that request is what ``last_seen``
records, through ``should_record``). At each deadline an unanswered challenge is judged as the
node's timer pass does: the farmer was active in the window (``was_active``) — containment, up to
``containment_retries`` re-asks, then a counted miss (an audit failure); not active — an offline
miss (no audit failure). ``max_failures`` consecutive misses or fails end a contract: its file is
repaired elsewhere and the farmer gets a new contract at its next request while it may (not
disqualified, not suspended, not contained). The online score counts online windows; an offline
suspension follows ``offline_change``. A window's results are applied to the audit score as one
tally (successes first, as the node's closed form does per transaction).

Populations: honest farmers with weekly outages of up to 24 h in all (1 to 4 pieces, minutes to a
day), flaky networks (5 % of answers arrive late but within late_grace — a pass — and 5 % are lost:
the farmer asked, so containment, then usually a pass), cheaters that lost 1 %, 5 %, 10 %, 50 % of
their data (a lost chunk's challenge is answered wrongly: a fail; a lost chunk's contract that
ends is replaced by one the cheater loses too, so it keeps its share lost), and farmers that go silent for
good after the first day. Printed per population: farmers, share disqualified, days until
disqualification (median, max), share ever suspended for being offline, and for the silent ones the
hours from going silent until suspended and until every file it held was repaired.

Usage:
  python bench/reputation_sim.py [--honest 10000] [--others 1000] [--days 30] [--seed 1]
  python bench/reputation_sim.py --quick   # a few farmers per population (the test suite)
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from downstream_tx.config import load_config  # noqa: E402
from downstream_tx.core.reputation import rules_of  # noqa: E402
from downstream_tx.domain import online  # noqa: E402
from downstream_tx.domain.rules import initial_alpha  # noqa: E402
from downstream_tx.domain.scores import coefficients, score  # noqa: E402

DAY, HOUR, WEEK = 86400.0, 3600.0, 7 * 86400.0


@dataclass
class Kind:
    name: str
    #: (start, end) outages over the run, sorted; an ``end`` of math.inf: silent for good
    outages: callable
    lost: float = 0.0  # share of its chunks a cheater lost
    late: float = 0.0  # share of answers that arrive late (within late_grace: a pass)
    dropped: float = 0.0  # share of answers lost on the way (the farmer asked: contained)


@dataclass
class Farmer:
    kind: Kind
    outages: list[tuple[float, float]]
    #: contracts by state (lost, run, contained) → how many
    contracts: Counter = field(default_factory=Counter)
    audit: tuple[float, float] = (0.0, 0.0)
    up: tuple[float, float] = (0.0, 0.0)  # the online score's alpha, beta
    counted: int | None = None
    status: str = online.OK
    last_seen: float | None = None
    dq_at: float | None = None
    offline_at: float | None = None
    repaired_at: float | None = None
    ever_offline: bool = False
    pending_lost: int = 0


def weekly_outages(rng: random.Random, days: float, most: float = 24 * HOUR) -> list[tuple[float, float]]:
    """Each week: up to ``most`` seconds offline in all, in 1 to 4 pieces at random times (a piece
    from minutes to a day)."""
    out = []
    for week in range(math.ceil(days / 7)):
        total = rng.uniform(5 * 60, most)
        pieces = rng.randint(1, 4)
        cuts = sorted(rng.uniform(0, total) for _ in range(pieces - 1))
        lengths = [b - a for a, b in zip([0.0, *cuts], [*cuts, total])]
        for length in lengths:
            start = week * WEEK + rng.uniform(0, WEEK - length)
            out.append((start, start + length))
    return merge(out)


def merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def last_request(outages: list[tuple[float, float]], start: float, end: float, poll: float,
                 phase: float) -> float | None:
    """The farmer's last request in ``[start, end)``: its polls every ``poll`` seconds (from
    ``phase``) that fall outside an outage; None when it made none."""
    t = start + (phase - start) % poll
    last = None
    while t < end:
        hit = next(((a, b) for a, b in outages if a <= t < b), None)
        if hit is None:
            last = t
            t += poll
        else:
            t = hit[1] + (phase - hit[1]) % poll
    return last


def simulate(farmer: Farmer, rules, args, rng: random.Random) -> None:
    o = rules.online
    interval, n = float(args.interval), args.contracts
    lam, steady = rules.lam, initial_alpha(rules.lam)
    farmer.audit = (steady, 0.0)
    farmer.up = (initial_alpha(o.lam), 0.0)
    phase = rng.uniform(0, args.poll)
    kind = farmer.kind
    lost = math.floor(kind.lost * n + rng.random())  # its share of the chunks it holds (rounded at random)
    farmer.contracts = Counter({(True, 0, 0): lost, (False, 0, 0): n - lost})
    farmer.last_seen = 0.0
    farmer.counted = online.window_of(0.0, o) - 1
    relevant = [(a, b) for a, b in farmer.outages]
    for k in range(int(args.days * DAY / interval)):
        start, deadline = k * interval, (k + 1) * interval
        window_outages = [(a, b) for a, b in relevant if a < deadline and b > start]
        seen = last_request(window_outages, start, deadline, args.poll, phase)
        if seen is not None and online.should_record(farmer.last_seen, seen, o):
            farmer.last_seen = seen
        # --old: the rule before issue 24, every unanswered challenge judged as if the farmer was there
        active = args.old or online.was_active(farmer.last_seen, deadline, interval, o)
        passes = fails = 0
        after: Counter = Counter()
        ended = ended_lost = 0
        for (is_lost, run, contained), count in farmer.contracts.items():
            if seen is not None:  # it asked in the window: it answers every challenge
                if is_lost:
                    answered_right, unanswered = 0, 0
                    fails += count
                    run += 1
                else:
                    dropped = sum(rng.random() < kind.dropped for _ in range(count)) if kind.dropped else 0
                    answered_right, unanswered = count - dropped, dropped
                    passes += answered_right
                if not is_lost:
                    if answered_right:
                        after[(False, 0, 0)] += answered_right
                    if unanswered:  # the farmer asked: judged active
                        if contained < rules.containment_retries:
                            after[(False, run, contained + 1)] += unanswered
                        else:
                            fails += unanswered  # a counted miss: an audit failure
                            if run + 1 >= args.max_failures:
                                ended += unanswered
                            else:
                                after[(False, run + 1, 0)] += unanswered
                    continue
                if run >= args.max_failures:
                    ended += count
                    ended_lost += count
                else:
                    after[(True, run, 0)] += count
                continue
            # no request in the window
            if active and contained < rules.containment_retries:
                after[(is_lost, run, contained + 1)] += count  # contained (it had asked just before)
            elif active:
                fails += count  # a counted miss
                if run + 1 >= args.max_failures:
                    ended += count
                    ended_lost += count if is_lost else 0
                else:
                    after[(is_lost, run + 1, 0)] += count
            elif run + 1 >= args.max_failures:  # offline misses: the contract ends, no audit failure
                ended += count
                ended_lost += count if is_lost else 0
            else:
                after[(is_lost, run + 1, 0)] += count
        farmer.contracts = +after
        if passes or fails:
            scale, a_add, b_add = coefficients(passes, fails, lam)
            farmer.audit = (farmer.audit[0] * scale + a_add, farmer.audit[1] * scale + b_add)
            if score(*farmer.audit) < rules.dq_threshold:
                farmer.dq_at = deadline
                return
        held = sum(farmer.contracts.values())
        if held == 0 and farmer.repaired_at is None and farmer.kind.name.startswith("silent"):
            farmer.repaired_at = deadline
        # the online windows pass (the reputation job), at the window's end
        w = online.counted_for(farmer.status, online.count_windows(farmer.counted, farmer.last_seen, deadline, o))
        farmer.counted = w.counted
        farmer.up = online.decay(*farmer.up, w.successes, w.failures, o.lam)
        change = online.offline_change(farmer.status, online.score(*farmer.up), farmer.last_seen, deadline, o)
        if change is not None:
            farmer.status = change
            if change == online.OFFLINE:
                farmer.ever_offline = True
                if farmer.offline_at is None:
                    farmer.offline_at = deadline
        # new contracts for the ended ones, at its next request, while it may get any
        contained = any(c for (_, _, c) in farmer.contracts)
        farmer.pending_lost += ended_lost
        if seen is not None and farmer.status == online.OK and not contained and held < n:
            new = n - held
            # a cheater keeps losing its share: what replaces a lost chunk is lost too
            new_lost = min(new, farmer.pending_lost) + (
                sum(rng.random() < kind.lost for _ in range(new - min(new, farmer.pending_lost))) if kind.lost else 0)
            farmer.pending_lost = 0
            farmer.contracts[(True, 0, 0)] += new_lost
            farmer.contracts[(False, 0, 0)] += new - new_lost
            farmer.contracts = +farmer.contracts


def populations(rng: random.Random, args) -> list[tuple[Kind, int]]:
    days = args.days
    honest = Kind("honest, outages up to 24 h/week", lambda: weekly_outages(rng, days))
    flaky = Kind("flaky network (5% late, 5% lost)", lambda: weekly_outages(rng, days, 4 * HOUR), late=0.05,
                 dropped=0.05)
    silent = Kind("silent for good after day 1", lambda: [(DAY, math.inf)])
    out = [(honest, args.honest), (flaky, args.others)]
    for share in (0.01, 0.05, 0.10, 0.50):
        out.append((Kind(f"cheater, lost {share:.0%}", lambda: weekly_outages(rng, days, 2 * HOUR), lost=share),
                    args.others))
    out.append((silent, args.others))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--honest", type=int, default=10_000)
    p.add_argument("--others", type=int, default=1_000)
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--contracts", type=int, default=20, help="contracts each farmer holds")
    p.add_argument("--interval", type=float, default=3600.0, help="seconds per challenge window")
    p.add_argument("--poll", type=float, default=600.0, help="seconds between a farmer's requests")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a few farmers per population")
    p.add_argument("--old", action="store_true",
                   help="judge every unanswered challenge as if the farmer was active (the rule before issue 24)")
    args = p.parse_args(argv)
    if args.quick:
        args.honest, args.others = 20, 5
    config = load_config(None, environ={}, overrides={})
    rules = rules_of(config)
    args.max_failures = config.max_failures
    rng = random.Random(args.seed)
    began = time.process_time()
    print(f"{args.days:g} days; {args.contracts} contracts of {args.interval:g} s per farmer, a request every "
          f"{args.poll:g} s while online; default settings: dq_threshold {rules.dq_threshold:g}, λ {rules.lam:g}, "
          f"containment_retries {rules.containment_retries}, max_failures {args.max_failures}, online_window "
          f"{rules.online.window:g} s, online λ {rules.online.lam:g}, offline_threshold {rules.online.threshold:g}, "
          f"offline_grace {rules.online.grace:g} s")
    print()
    print("| population | farmers | disqualified | days to DQ (median, max) | ever suspended offline | "
          "silent: hours to suspended, to repaired (max) |")
    print("|---|---|---|---|---|---|")
    for kind, count in populations(rng, args):
        farmers = [Farmer(kind, kind.outages()) for _ in range(count)]
        for f in farmers:
            simulate(f, rules, args, rng)
        dq = [f.dq_at / DAY for f in farmers if f.dq_at is not None]
        days = f"{statistics.median(dq):.1f}, {max(dq):.1f}" if dq else "-"
        suspended = sum(f.ever_offline for f in farmers)
        silent = "-"
        if kind.name.startswith("silent"):
            to_suspended = [(f.offline_at - DAY) / HOUR for f in farmers if f.offline_at is not None]
            to_repaired = [(f.repaired_at - DAY) / HOUR for f in farmers if f.repaired_at is not None]
            silent = "never"
            if to_suspended and to_repaired:
                silent = (f"{max(to_suspended):.0f} h ({len(to_suspended)}/{count}), "
                          f"{max(to_repaired):.0f} h ({len(to_repaired)}/{count})")
        print(f"| {kind.name} | {count} | {len(dq) / count:.1%} ({len(dq)}) | {days} | {suspended / count:.1%} | "
              f"{silent} |")
    print()
    print(f"simulated in {time.process_time() - began:.1f} CPU s")


if __name__ == "__main__":
    main()
