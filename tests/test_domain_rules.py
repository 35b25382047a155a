"""The reputation settings (domain/rules.py): one default, the configuration's, and frozen. No
database, no reactor."""

from __future__ import annotations

import dataclasses

import pytest

from downstream_tx.domain.rules import (
    DISQUALIFIED,
    INITIAL_ALPHA,
    LAMBDA,
    OFFLINE,
    OK,
    SUSPENDED,
    WEIGHT,
    Rules,
)


def test_the_defaults_are_the_documented_ones():
    """docs/operations.md, "Reputation" (tests/test_reputation.py checks they are the configuration's)."""
    assert dataclasses.asdict(Rules()) == {
        "dq_threshold": 0.96, "suspension_threshold": 0.6, "suspension_grace": 604800.0, "containment_retries": 3,
        "vetting_audits": 100, "vetting_share": 0.05, "lam": 0.999, "unknown_lam": 0.98, "vetting_window": 1000.0,
        "vetting_min_age": 0.0, "online": {"window": 3600.0, "lam": 0.97, "threshold": 0.5, "grace": 14400.0,
                                           "seen_every": 60.0}}
    assert (LAMBDA, WEIGHT, INITIAL_ALPHA) == (0.999, 1.0, 1000.0)
    assert (OK, SUSPENDED, DISQUALIFIED, OFFLINE) == ("ok", "suspended", "disqualified", "offline")


def test_the_rules_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Rules().dq_threshold = 0.5  # type: ignore[misc]
