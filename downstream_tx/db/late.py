"""Late v0 answers, persisted: what a verdict of :func:`downstream_tx.domain.verdicts.judge` writes
to the contract and to the farmer's reputation (docs/protocol-v0.md, "Late answers").

When the timer turns a contract's window while its challenge is outstanding, the challenge moves to
``prev_challenge_id`` (with its deadline, and ``prev_missed`` = 1 when the timer counted a miss), so
that an answer that arrived in time is still judged against it. Every write is guarded on the
challenge it judged, so a retried transaction changes nothing twice.
"""

from __future__ import annotations

from downstream_tx.db import counters, reputation
from downstream_tx.db.database import Txn
from downstream_tx.domain.rules import Rules
from downstream_tx.domain.verdicts import CURRENT, PASS, AnswerRow, Verdict, effect, run_after


def prev_sets(missed: str = "prev_missed") -> str:
    """What the v0 timer keeps of a window it turns (its issuing UPDATE puts these first, so that
    they read the old challenge, answer flag and deadline): the challenge if it was still
    outstanding, else nothing. ``missed``: the ``prev_missed`` kept with an outstanding challenge —
    ``1`` when the pass counts its miss in the same UPDATE, ``0`` when it forgives it; otherwise it is
    cleared when nothing is kept."""
    return ("prev_challenge_id = CASE WHEN challenge_id IS NOT NULL AND answered = 0 THEN challenge_id END, "
            "prev_deadline = deadline, "
            f"prev_missed = CASE WHEN challenge_id IS NOT NULL AND answered = 0 THEN {missed} ELSE 0 END")


#: an answer to the current challenge stores the contract *answered ahead* (db/contracts.py,
#: ``AHEAD``): its deadline moves to the end of the next window, whose challenge is taken when the
#: farmer reads it or answers; the timer visits the contract only if that window ends unanswered
AHEAD_DEADLINE = "deadline = start + (seq + 2) * interval_s"


def record_txn(txn: Txn, row: AnswerRow, verdict: Verdict) -> None:
    """Write ``verdict`` (a pass or a fail) on the contract, with the run of consecutive misses and
    fails after it (:func:`~downstream_tx.domain.verdicts.run_after`)."""
    late = int(verdict.late)
    run = run_after(row, verdict)
    if verdict.which == CURRENT:
        if verdict.status == PASS:
            changed = txn.execute("UPDATE contracts SET answered = 1, passes = passes + 1, "
                                  "late_passes = late_passes + ?, run = ?, contained = 0, "
                                  f"{AHEAD_DEADLINE} WHERE id = ? AND answered = 0 AND challenge_id = ?",
                                  (late, run, row.id, row.challenge_id)).rowcount
        else:
            changed = txn.execute("UPDATE contracts SET answered = 1, fails = fails + 1, run = ?, contained = 0, "
                                  f"{AHEAD_DEADLINE} WHERE id = ? AND answered = 0 AND challenge_id = ?",
                                  (run, row.id, row.challenge_id)).rowcount
        txn.count({counters.unanswered(0): -changed})  # (the row is an active v0 contract)
        return
    # the previous challenge: the timer counted a miss for it (prev_missed) and moved on
    missed = int(row.prev_missed)
    passed = int(verdict.status == PASS)
    txn.execute("UPDATE contracts SET passes = passes + ?, fails = fails + ?, late_passes = late_passes + ?, "
                "misses = misses - ?, run = ?, prev_challenge_id = NULL WHERE id = ? AND prev_challenge_id = ?",
                (passed, 1 - passed, late, missed, run, row.id, row.prev_challenge_id))


def reputation_txn(txn: Txn, rules: Rules, now: float, token_id: int, row: AnswerRow, verdict: Verdict) -> None:
    """Record ``verdict`` (written by :func:`record_txn`) in the farmer's reputation, in the same
    transaction, as :func:`~downstream_tx.domain.verdicts.effect` decides."""
    decided = effect(row, verdict)
    if decided is None:
        return
    if decided.leaves_containment:  # the challenge asked again is answered: out of containment
        address = txn.scalar("SELECT address FROM tokens WHERE id = ?", (token_id,))
        reputation.note_left_txn(txn, rules, str(address), 0, [(row.id, verdict.status)])
    if decided.tally:
        reputation.record_token_txn(txn, rules, now, token_id, decided.tally)
    if decided.fails or decided.misses:
        reputation.move_counts_token_txn(txn, token_id, fails=decided.fails, misses=decided.misses)
