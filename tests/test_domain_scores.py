"""The score arithmetic (domain/scores.py): beta reputations with forgetting, against the worked
example of docs/operations.md, "Reputation", and the closed form a store applies in one UPDATE. No
database, no reactor."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from downstream_tx.domain.rules import INITIAL_ALPHA, LAMBDA
from downstream_tx.domain.scores import (
    COUNTS,
    SCORES,
    Scores,
    Tally,
    apply,
    below,
    changes,
    coefficients,
    dimensions,
    score,
    update,
)

# --- the math -----------------------------------------------------------------------------------

#: worked example (also in docs/operations.md, "Reputation"): λ = 0.999, weight 1, a new farmer at
#: α = 1000, β = 0; a miss here is a counted miss (after containment), a failure of the audit score
WORKED_EXAMPLE = [
    # result, alpha,       beta,     score
    ("pass", 1000.000000, 0.000000, 1.000000),
    ("fail", 999.000000, 1.000000, 0.999000),
    ("fail", 998.001000, 1.999000, 0.998001),
    ("pass", 998.002999, 1.997001, 0.998003),
    ("miss", 997.004996, 2.995004, 0.997005),
    ("pass", 997.007991, 2.992009, 0.997008),
    ("pass", 997.010983, 2.989017, 0.997011),
]


def test_the_worked_example_table():
    alpha, beta = INITIAL_ALPHA, 0.0
    for result, want_alpha, want_beta, want_score in WORKED_EXAMPLE:
        alpha, beta = update(alpha, beta, result == "pass")
        assert (round(alpha, 6), round(beta, 6), round(score(alpha, beta), 6)) == (want_alpha, want_beta, want_score)


def test_a_new_farmer_is_disqualified_after_41_failures_in_a_row_at_the_default_threshold():
    alpha, beta, n = INITIAL_ALPHA, 0.0, 0
    while score(alpha, beta) >= 0.96:
        alpha, beta = update(alpha, beta, False)
        n += 1
    assert n == 41  # λ^41 < 0.96 <= λ^40


@pytest.mark.parametrize(("k", "m"), [(0, 0), (1, 0), (0, 1), (3, 2), (100, 7), (0, 50)])
def test_the_closed_form_is_successes_then_failures_one_at_a_time(k, m):
    alpha, beta = 997.5, 2.5
    for success in [True] * k + [False] * m:
        alpha, beta = update(alpha, beta, success)
    scale, a_add, b_add = coefficients(k, m)
    assert 997.5 * scale + a_add == pytest.approx(alpha, abs=1e-9)
    assert 2.5 * scale + b_add == pytest.approx(beta, abs=1e-9)


@given(k=st.integers(0, 60), m=st.integers(0, 60), alpha=st.floats(0, 2000), beta=st.floats(0, 2000),
       lam=st.sampled_from([LAMBDA, 0.99, 0.9, 1.0]))
def test_the_closed_form_agrees_with_one_result_at_a_time(k, m, alpha, beta, lam):
    a, b = alpha, beta
    for success in [True] * k + [False] * m:
        a, b = update(a, b, success, lam)
    scale, a_add, b_add = coefficients(k, m, lam)
    assert alpha * scale + a_add == pytest.approx(a, rel=1e-9, abs=1e-9)
    assert beta * scale + b_add == pytest.approx(b, rel=1e-9, abs=1e-9)


def test_a_forgetting_factor_of_one_counts_plainly():
    assert coefficients(3, 2, 1.0) == (1.0, 3.0, 2.0)
    assert update(5.0, 1.0, True, 1.0) == (6.0, 1.0)
    assert update(5.0, 1.0, False, 1.0, weight=2.0) == (5.0, 3.0)


def test_a_score_without_any_result_is_one():
    assert score(0.0, 0.0) == 1.0
    assert score(1.0, 0.0) == 1.0
    assert score(1.0, 3.0) == 0.25
    assert score(0.0, 0.5) == 0.0  # a small sum is a score all the same


@given(alpha=st.floats(0, 1e6), beta=st.floats(0, 1e6), threshold=st.floats(0, 1))
def test_below_is_the_score_under_the_threshold(alpha, beta, threshold):
    # a subnormal sum (below ~1e-308) loses the product's precision: not a sum the node ever holds
    assume(alpha + beta == 0 or alpha + beta > 1e-300)
    if alpha + beta > 0:
        expected = alpha / (alpha + beta) < threshold
        # without the division: only a hair's difference at the boundary
        if abs(alpha / (alpha + beta) - threshold) > 1e-12:
            assert below(alpha, beta, threshold) == expected
    else:
        assert not below(alpha, beta, threshold)


def test_the_edges_of_below():
    assert not below(96.0, 4.0, 0.96)  # exactly at the threshold: not below
    assert below(95.0, 5.0, 0.96)
    assert not below(1.0, 0.0, 1.0)


def test_each_result_moves_its_scores():
    t = Tally(passes=2, fails=3, misses=5, retries=7, errors=11)
    # the online score is not a tally's: it counts online windows (domain/online.py)
    assert dimensions(t) == {"audit": (2, 8), "unknown": (5, 11)}
    assert dimensions(Tally()) == {"audit": (0, 0), "unknown": (0, 0)}
    assert dimensions(Tally(retries=1)) == {"audit": (0, 0), "unknown": (0, 0)}


def test_a_tally_is_true_when_it_holds_any_result():
    assert not Tally()
    for column in COUNTS:
        assert Tally(**{column: 1})


def test_changes_leave_out_the_scores_without_results():
    assert changes(Tally()) == {}
    assert changes(Tally(retries=1)) == {}
    assert list(changes(Tally(errors=1))) == ["unknown"]
    assert changes(Tally(passes=1, misses=1)) == {"audit": coefficients(1, 1), "unknown": coefficients(1, 0)}
    # the unknown score's own factor
    assert changes(Tally(passes=1, errors=2), 0.999, 0.98) == {"audit": coefficients(1, 0, 0.999),
                                                               "unknown": coefficients(1, 2, 0.98)}


def test_apply_changes_only_the_scores_with_results():
    before = Scores(audit=(990.0, 10.0), online=(900.0, 100.0), unknown=(500.0, 500.0))
    assert apply(before, Tally(retries=1)) == before  # containment's re-asks move no score
    after = apply(before, Tally(errors=1), LAMBDA, 0.5)
    assert after.audit == before.audit and after.online == before.online
    assert after.unknown == pytest.approx((250.0, 251.0))
    assert apply(before, Tally(passes=1), 0.5) == Scores(audit=(496.0, 5.0), online=(900.0, 100.0),
                                                         unknown=(251.0, 250.0))


def test_scores_are_frozen():
    with pytest.raises(AttributeError):
        Scores().audit = (1.0, 0.0)  # type: ignore[misc]


def test_a_new_farmers_scores():
    assert Scores() == Scores(audit=(INITIAL_ALPHA, 0.0), online=(INITIAL_ALPHA, 0.0), unknown=(INITIAL_ALPHA, 0.0))
    assert SCORES == ("audit", "online", "unknown")
    assert COUNTS == ("passes", "fails", "misses", "retries", "errors")


def test_the_closed_form_is_cached():
    """The stores ask for it per farmer and transaction, with few distinct tallies."""
    assert coefficients.cache_info().maxsize == 4096
