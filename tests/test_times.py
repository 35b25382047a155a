"""downstream_tx/times: the one ISO 8601 format of the admin, the status API and the dashboard."""

from __future__ import annotations


def test_iso_utc():
    from downstream_tx.times import iso_utc

    assert iso_utc(None) is None
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
    assert iso_utc(1_700_000_000.9) == "2023-11-14T22:13:20Z"
