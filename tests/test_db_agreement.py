"""The set-based SQL of the stores agrees with the domain's rules (issue 22): where a store writes a
rule's decision as one statement for speed — a farmer's results as one linear UPDATE, the vetting
share as one guarded UPDATE, the current challenge window of every due contract in the v0 pass, a
suspension's grace in the reputation job — the values it ends with are those the pure function
(domain/) gives, on random inputs, on SQLite and MariaDB."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from downstream_tx.db import reputation
from downstream_tx.db.contracts import _window
from downstream_tx.domain import scores, standing, vetting
from downstream_tx.domain.rules import DISQUALIFIED, OK, SUSPENDED, Rules
from downstream_tx.domain.scores import SCORES, Scores, Tally
from downstream_tx.domain.standing import StandingChange
from downstream_tx.domain.windows import current_window
from support import make_address, make_config, open_test_db, run

AGREE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ADDRESS = make_address(7)
VETTED = make_address(8)
COLUMNS = ", ".join(f"{name}_{part}" for name in SCORES for part in ("alpha", "beta"))


@pytest.fixture
def db(tmp_path, db_url, clock):
    database = open_test_db(make_config(tmp_path, db_url), clock)
    yield database
    database.close()


pair = st.tuples(st.floats(0, 2000), st.floats(0, 2000))
counts = st.integers(0, 50)


@AGREE
@given(status=st.sampled_from([OK, SUSPENDED, DISQUALIFIED]), before=st.tuples(pair, pair, pair),
       tally=st.builds(Tally, counts, counts, counts, counts, counts),
       dq=st.floats(0, 1), st_=st.floats(0, 1), lam=st.sampled_from([0.999, 0.99, 0.5, 1.0]))
def test_recorded_results_are_the_domains_scores_and_standing(db, status, before, tally, dq, st_, lam):
    rules = Rules(dq_threshold=dq, suspension_threshold=st_, lam=lam, unknown_lam=lam)
    now = 1000.0

    def body(txn):
        txn.execute("DELETE FROM reputation WHERE address = ?", (ADDRESS,))
        txn.execute(f"INSERT INTO reputation (address, status, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (ADDRESS, status, *(x for p in before for x in p)))
        reputation.record_txn(txn, rules, now, {ADDRESS: tally})
        row = txn.execute(f"SELECT status, status_reason, pending_end, {COLUMNS}, passes, fails, misses, retries, "
                          "errors FROM reputation WHERE address = ?", (ADDRESS,)).fetchone()
        return row, list(txn.notes)

    row, notes = run(db.run("agree", body))
    after = scores.apply(Scores(*before), tally, lam)
    change = standing.decide(status, after, tally, rules)
    got = [float(x) for x in row[3:9]]
    want = [x for name in SCORES for x in getattr(after, name)]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-9)
    assert [int(x) for x in row[9:]] == [tally.passes, tally.fails, tally.misses, tally.retries, tally.errors]
    if change is None:
        assert (row[0], row[1], int(row[2])) == (status, None, 0)
        assert not notes
    else:
        assert (row[0], row[1], int(row[2])) == (change.status, change.reason, int(change.status == DISQUALIFIED))
        assert notes == [StandingChange(ADDRESS, status, change.status, change.reason)]


@AGREE
@given(total=st.one_of(st.integers(0, 20_000).map(float), st.floats(0, 20_000)),
       unvetted=st.floats(0, 2_000), share=st.floats(0, 1), preferred=st.booleans(), anyone=st.booleans())
def test_the_guarded_share_update_is_the_domains_share(db, total, unvetted, share, preferred, anyone):
    rules = Rules(vetting_share=share, vetting_audits=5)

    def body(txn):
        txn.execute("DELETE FROM reputation WHERE address = ?", (VETTED,))
        reputation.ensure_txn(txn, [VETTED])
        txn.execute("UPDATE reputation SET passes = ? WHERE address = ?", (5 if anyone else 4, VETTED))
        txn.execute("UPDATE vetting SET total = ?, unvetted = ? WHERE protocol = 0", (total, unvetted))
        took = reputation.take_share_txn(txn, rules, 0, preferred)
        return took, txn.execute("SELECT total, unvetted FROM vetting WHERE protocol = 0").fetchone()

    took, (new_total, new_unvetted) = run(db.run("agree", body))
    how = vetting.share(preferred, anyone)
    expected = not how.guarded or vetting.within_share(total, unvetted, rules)
    assert took is expected
    if expected and how.counted:
        assert (float(new_total), float(new_unvetted)) == pytest.approx(
            vetting.counted(total, unvetted, bool(how.unvetted), rules))
    else:
        assert (float(new_total), float(new_unvetted)) == pytest.approx((total, unvetted))


@AGREE
@given(now=st.floats(0, 4e9), start=st.floats(0, 4e9), interval=st.integers(1, 86400 * 30),
       seq=st.integers(0, 2**31 - 2))
def test_the_window_the_pass_computes_in_sql_is_the_domains(db, now, start, interval, seq):
    def body(txn):
        sql = (f"SELECT {_window(txn.engine_name)} FROM (SELECT ? AS seq, ? AS start, ? AS interval_s) AS t")
        return txn.scalar(sql, (now, seq, start, interval))

    assert int(run(db.run("agree", body))) == current_window(now, start, interval, seq)


@AGREE
@given(since=st.floats(0, 1e6), now=st.floats(0, 2e6), grace=st.floats(0, 1e6), status=st.sampled_from([OK, SUSPENDED]))
def test_the_reputation_job_disqualifies_as_the_grace_says(db, since, now, grace, status):
    rules = Rules(suspension_grace=grace)

    def body(txn):
        txn.execute("DELETE FROM reputation WHERE address = ?", (ADDRESS,))
        txn.execute("INSERT INTO reputation (address, status, status_since) VALUES (?, ?, ?)",
                    (ADDRESS, status, since))
        return reputation.sweep_txn(txn, rules, now).expired

    expired = run(db.run("agree", body))
    assert (expired == [ADDRESS]) is standing.grace_expired(status, since, now, rules)
