"""Protocol v1 timers: keep the seeded chunk pool full, summarise uptime. (Expired v1 contracts are
ended by the contract timer, ``jobs/challenges.py``, which owns the downtime rule.)"""

from __future__ import annotations

from typing import Any

from downstream_tx.config import Config
from downstream_tx.jobs.periodic import PeriodicJob

#: seconds between uptime summaries (the bound on the summary's error, see db/status.py)
UPTIME_PERIOD = 30.0


def v1_jobs(node: Any, config: Config, clock: Any) -> list[PeriodicJob]:
    v1 = node.v1
    return [
        PeriodicJob("seeded_pool", v1.refill_pool, config.tick, clock),
        PeriodicJob("uptime", v1.update_uptime, max(config.tick, min(UPTIME_PERIOD, config.seeded_interval)), clock),
    ]
