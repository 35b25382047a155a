"""Periodic work, each job a :class:`~downstream_tx.jobs.periodic.PeriodicJob` on an injected clock
that receives what it needs as arguments."""
