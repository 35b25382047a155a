"""The reputation settings (domain/rules.py): one default, the configuration's, and frozen. No
database, no reactor."""

from __future__ import annotations

import dataclasses

import pytest

from downstream_tx.domain.rules import (
    DISQUALIFIED,
    INITIAL_ALPHA,
    LAMBDA,
    OK,
    SUSPENDED,
    VETTING_WINDOW,
    WEIGHT,
    Rules,
)


def test_the_defaults_are_the_documented_ones():
    """docs/operations.md, "Reputation" (tests/test_reputation.py checks they are the configuration's)."""
    assert dataclasses.asdict(Rules()) == {
        "dq_threshold": 0.96, "suspension_threshold": 0.6, "suspension_grace": 604800.0, "containment_retries": 3,
        "vetting_audits": 100, "vetting_share": 0.05, "lam": 0.999}
    assert (LAMBDA, WEIGHT, INITIAL_ALPHA, VETTING_WINDOW) == (0.999, 1.0, 1000.0, 10_000.0)
    assert (OK, SUSPENDED, DISQUALIFIED) == ("ok", "suspended", "disqualified")


def test_the_rules_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Rules().dq_threshold = 0.5  # type: ignore[misc]
