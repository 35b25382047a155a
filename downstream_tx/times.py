"""The one way times are shown to people: ISO 8601, UTC, to the second (``2026-11-30T21:50:07Z``) —
in ``downstream-admin``'s tables, the status API's ``last_due`` and the dashboard alike."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(t: float | None) -> str | None:
    """``2026-11-30T21:50:07Z``, or None for no time."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
