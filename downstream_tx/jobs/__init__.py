"""Periodic work, each job a :class:`~downstream_tx.jobs.periodic.PeriodicJob` on an injected clock."""

from __future__ import annotations

from typing import Any

from downstream_tx.config import Config
from downstream_tx.jobs.challenges import challenge_job
from downstream_tx.jobs.periodic import PeriodicJob
from downstream_tx.jobs.v1 import v1_jobs


def build_jobs(node: Any, config: Config, clock: Any) -> list[PeriodicJob]:
    """Every periodic job of the daemon; the caller starts them as child services."""
    return [challenge_job(node, config, clock), *v1_jobs(node, config, clock)]
