"""The dashboard's pure parts: number formats, the SVG chart, escaping; GeoIP address handling."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from downstream_tx import geoip
from downstream_tx.dashboard import charts, render
from downstream_tx.dashboard.data import Bucket, FarmerList, buckets
from downstream_tx.db.history import HourRow


def test_formats():
    assert render.size_text(0) == "0 B" and render.size_text(16384) == "16.0 KiB"
    assert render.size_text(3 << 30) == "3.0 GiB"
    assert render.duration_text(None) == "never" and render.duration_text(2.25) == "2.2 s"
    assert render.duration_text(42) == "42 s" and render.duration_text(3 * 86400 + 7200 + 60) == "3 d 2 h"
    assert render.location_text(None) == "unknown"
    assert render.location_text({"country": "United Kingdom", "city": "London", "state": None}) == \
        "London, United Kingdom"
    assert render.esc("<a href='x'>&\"") == "&lt;a href=&#x27;x&#x27;&gt;&amp;&quot;"


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 10**9))
def test_the_y_axis_counts_in_whole_numbers(peak):
    """Whole counts get whole ticks (never 1.25 or 3.75): a whole step of 1, 2, 2.5 or 5 × 10^k, the
    top the first multiple of it at or above the peak, two to five ticks."""
    top, step = charts.whole_axis(peak)
    assert isinstance(top, int) and isinstance(step, int) and step >= 1
    assert top >= max(peak, 1) and top % step == 0 and top - step < max(peak, 1)
    assert 1 <= top // step <= 4
    assert str(step).rstrip("0") in ("1", "2", "25", "5")


def test_chart_scales_and_labels():
    assert [charts.whole_axis(v) for v in (0, 1, 3, 5, 7, 10, 100, 523)] == [
        (1, 1), (1, 1), (3, 1), (6, 2), (8, 2), (10, 5), (100, 25), (600, 200)]
    svg = charts.results_chart("c", "t", [Bucket(0, passes=5)], str)
    assert [int(v) for v in re.findall(r'text-anchor="end">(\d+)</text>', svg)] == [0, 2, 4, 6]
    assert re.findall(r'text-anchor="end">([^<]*[.][^<]*)</text>', svg) == []  # no fractional tick
    rows = [Bucket(3600 * i, passes=i, misses=1 if i == 2 else 0, fails=0) for i in range(4)]
    svg = charts.results_chart("c", "A <title>", rows, lambda t: f"h{int(t // 3600)}", every=2)
    assert svg.startswith('<svg id="c"') and svg.count('<g class="bar"') == 4
    assert "A &lt;title&gt;" in svg and "<title>h2: 2 passes, 1 misses, 0 fails</title>" in svg
    assert svg.count('class="miss"') == 1 and svg.count('class="pass"') == 3  # an empty bar draws nothing
    assert ">h0</text>" in svg and ">h1</text>" not in svg and ">h2</text>" in svg
    assert " style=" not in svg


def test_buckets_fill_gaps_and_group_days():
    rows = [HourRow(100, 1, 0, 0), HourRow(102, 2, 1, 0), HourRow(130, 5, 0, 1), HourRow(99, 9, 9, 9)]
    hours = buckets(rows, 100, 3, 1)
    assert [(b.start, b.passes, b.misses) for b in hours] == [(360000, 1, 0), (363600, 0, 0), (367200, 2, 1)]
    days = buckets(rows, 96, 2, 24)
    assert [(b.passes, b.misses, b.fails) for b in days] == [(12, 10, 9), (5, 0, 1)]  # hour 99 is in the first day too


def test_list_links_keep_the_query():
    farmers = FarmerList([], sort="uptime", descending=True, page=2, limit=10, search="1a&b", online=True)
    url = render.list_url(farmers, page=3)
    assert url == "/dashboard?sort=uptime&order=desc&page=3&limit=10&q=1a%26b&online=1#farmers-section"
    assert render.list_url(FarmerList([])) == "/dashboard#farmers-section"


def test_only_global_addresses_are_looked_up():
    assert geoip.plain_ip("::ffff:81.2.69.142") == "81.2.69.142" and geoip.plain_ip("nope") is None
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "::1", "fe80::1", "", None, "not an ip"):
        assert not geoip.is_global(ip)
    locator = geoip.Locator()
    assert locator.locate("127.0.0.1") is None and not locator.loaded  # never loads for local farmers
    assert locator.locate("::ffff:81.2.69.142") == geoip.Location("United Kingdom")
    assert locator.locate("2001:4860:4860::8888").country == "United States"
    assert geoip.location_from_json(None) is None and geoip.location_from_json("[1]") is None
    assert geoip.location_from_json(geoip.Location("X").to_json())["country"] == "X"
