"""The dashboard's HTML: pure functions from the data of ``dashboard/data.py`` to a page.

Every value that did not come from this module is escaped (``esc``): addresses and locations come
from farmers and GeoIP databases. Pages hold no inline script or style (the Content-Security-Policy
forbids them): the stylesheet and the refresh script are static files of this package. Without
JavaScript a page is complete; with it the page reloads itself every ``refresh`` seconds. No token,
node secret or IP address is ever given to these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from downstream_tx.dashboard.charts import results_chart
from downstream_tx.dashboard.data import FarmerDetail, FarmerList, Overview

STATIC = "/dashboard/static"
DASHBOARD = "/dashboard"
#: sortable columns of the farmer table: (sort key of the status API, heading)
COLUMNS = (("id", "Farmer"), ("address", "Address"), ("uptime", "Uptime"), ("heartbeats", "Heartbeats"),
           ("contracts", "Online contracts"), ("size", "Size"), ("online", "Online"))


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    parts = []
    for unit, width in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= width:
            parts.append(f"{s // width} {unit}")
            s %= width
    return " ".join(parts[:2])


def time_text(t: float | None) -> str:
    return "—" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def location_text(location: Any) -> str:
    if not isinstance(location, dict):
        return "unknown"
    parts = [location.get(k) for k in ("city", "state", "country")]
    return ", ".join(str(p) for p in parts if p) or "unknown"


def page(title: str, body: str, refresh: int = 30) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f'<link rel="stylesheet" href="{STATIC}/dashboard.css">'
        f'<link rel="icon" href="{STATIC}/favicon.svg" type="image/svg+xml">'
        f'<script src="{STATIC}/refresh.js" defer></script>'
        f'</head><body data-refresh="{int(refresh)}">'
        f'<header><a class="home" href="{DASHBOARD}">downstream-tx</a> <span>status dashboard</span></header>'
        f"<main>{body}</main>"
        '<footer>Numbers from the node\'s database; the page refreshes itself when JavaScript is on. '
        f'JSON: <a href="/api/downstream/v1/status/list">status API</a>.</footer>'
        "</body></html>\n"
    )


def _stat(stat_id: str, label: str, value: Any, shown: str | None = None) -> str:
    return (f'<div class="stat"><dt>{esc(label)}</dt>'
            f'<dd id="{esc(stat_id)}" data-value="{esc(value)}">{esc(value if shown is None else shown)}</dd></div>')


def _table(table_id: str, caption: str, headings: Sequence[str], rows: Iterable[str], empty: str) -> str:
    rows = list(rows)
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headings)
    body = "".join(rows) if rows else f'<tr><td colspan="{len(headings)}">{esc(empty)}</td></tr>'
    return (f'<table id="{esc(table_id)}"><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _hour_label(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:00")


def _day_label(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%m-%d")


def _results_table(table_id: str, caption: str, buckets, label) -> str:
    rows = (f'<tr><th scope="row">{esc(label(b.start))}</th><td>{b.passes}</td><td>{b.misses}</td>'
            f"<td>{b.fails}</td></tr>" for b in buckets)
    return _table(table_id, caption, ("Period (UTC)", "Passes", "Misses", "Fails"), rows, "no results")


def overview_page(o: Overview, farmers: FarmerList, refresh: int = 30) -> str:
    lag = "—" if o.timer_lag is None else duration_text(o.timer_lag)
    summary = (
        '<section aria-labelledby="h-summary"><h2 id="h-summary">Summary</h2><dl class="stats">'
        + _stat("farmers-online", "Farmers online now", o.farmers_online)
        + _stat("farmers-active", "Farmers with active contracts", o.farmers_active)
        + _stat("farmers-total", "Farmers (tokens)", o.farmers_total)
        + _stat("contracts-active", "Active contracts", o.contracts.get("active", 0))
        + _stat("contracts-ended", "Ended contracts", o.contracts.get("ended", 0))
        + _stat("contracts-failed", "Failed contracts", o.contracts.get("failed", 0))
        + _stat("challenges-due", "Challenges outstanding", o.due)
        + _stat("challenges-overdue", "Contracts overdue", o.overdue)
        + _stat("timer-lag", "Timer lag (since its last pass)",
                "" if o.timer_lag is None else f"{o.timer_lag:.1f}", lag)
        + _stat("node-version", "Node version", o.version)
        + _stat("node-uptime", "Node uptime", f"{o.uptime:.0f}", duration_text(o.uptime))
        + "</dl></section>"
    )
    charts = (
        '<section aria-labelledby="h-results"><h2 id="h-results">Challenge results</h2>'
        '<p class="legend"><span class="key pass"></span> passes <span class="key miss"></span> misses '
        '<span class="key fail"></span> fails</p>'
        + results_chart("chart-hours", "Passes, misses and fails per hour, last 24 hours", o.hourly, _hour_label,
                        every=3)
        + results_chart("chart-days", "Passes, misses and fails per day, last 30 days", o.daily, _day_label,
                        every=5)
        + '<details><summary>Numbers</summary>'
        + _results_table("results-hours", "Per hour, last 24 hours (UTC)", o.hourly, _hour_label)
        + _results_table("results-days", "Per day, last 30 days (UTC)", o.daily, _day_label)
        + "</details></section>"
    )
    pool = _table("pool", "Seeded chunks ready to hand out", ("Chunk size", "Ready", "Target"),
                  (f'<tr><th scope="row" data-value="{s}">{esc(size_text(s))}</th><td>{ready}</td>'
                   f"<td>{target}</td></tr>" for s, ready, target in o.pool), "no seeded pool")
    under = _table("under-replicated",
                   f"Stored files below their redundancy target: {o.under_replicated}",
                   ("File", "Size", "Replicas", "Target"),
                   (f'<tr><td class="hash">{esc(f.file_hash)}</td><td>{esc(size_text(f.size))}</td>'
                    f"<td>{f.replicas}</td><td>{f.redundancy}</td></tr>" for f in o.under_rows),
                   "every stored file has its replicas")
    countries = _table("countries", "Farmers per country (GeoIP)", ("Country", "Farmers"),
                       (f'<tr><th scope="row">{esc(c)}</th><td>{n}</td></tr>' for c, n in o.countries),
                       "no location known")
    return page("downstream-tx dashboard",
                '<h1>Node status</h1>' + summary + charts
                + f'<section aria-labelledby="h-storage"><h2 id="h-storage">Storage</h2>{pool}{under}</section>'
                + farmer_list(farmers)
                + f'<section aria-labelledby="h-where"><h2 id="h-where">Where farmers are</h2>{countries}</section>',
                refresh)


def list_url(farmers: FarmerList, **changes: Any) -> str:
    params = {"sort": farmers.sort, "order": "desc" if farmers.descending else "asc", "page": farmers.page,
              "limit": farmers.limit, "q": farmers.search, "online": "1" if farmers.online else ""}
    params.update(changes)
    query = {k: v for k, v in params.items()
             if v not in ("", None) and not (k == "page" and v == 0) and not (k == "order" and v == "asc")
             and not (k == "sort" and v == "id") and not (k == "limit" and v == farmers.limit == 25)}
    return DASHBOARD + ("?" + urlencode(query) if query else "") + "#farmers-section"


def farmer_list(farmers: FarmerList) -> str:
    heads = []
    for key, title in COLUMNS:
        if key == farmers.sort:
            order = "descending" if farmers.descending else "ascending"
            link = list_url(farmers, sort=key, order="asc" if farmers.descending else "desc", page=0)
            heads.append(f'<th scope="col" aria-sort="{order}"><a href="{esc(link)}" data-sort="{key}">'
                         f'{esc(title)} <span aria-hidden="true">{"▼" if farmers.descending else "▲"}</span></a></th>')
        else:
            link = list_url(farmers, sort=key, order="asc", page=0)
            heads.append(f'<th scope="col"><a href="{esc(link)}" data-sort="{key}">{esc(title)}</a></th>')
    heads.append('<th scope="col">Location</th><th scope="col">Last due</th>')
    rows = []
    for f in farmers.farmers:
        rows.append(
            f'<tr data-farmer-id="{esc(f["id"])}">'
            f'<td class="c-id hash"><a href="/farmers/{esc(f["id"])}">{esc(f["id"])}</a></td>'
            f'<td class="c-address hash">{esc(f["address"])}</td>'
            f'<td class="c-uptime" data-value="{esc(f["uptime"])}">{esc(f["uptime"])} %</td>'
            f'<td class="c-heartbeats" data-value="{esc(f["heartbeats"])}">{esc(f["heartbeats"])}</td>'
            f'<td class="c-contracts" data-value="{esc(f["contracts"])}">{esc(f["contracts"])}</td>'
            f'<td class="c-size" data-value="{esc(f["size"])}">{esc(size_text(int(f["size"])))}</td>'
            f'<td class="c-online" data-value="{"1" if f["online"] else "0"}">{"yes" if f["online"] else "no"}</td>'
            f'<td class="c-location">{esc(location_text(f["location"]))}</td>'
            f'<td class="c-last-due">{esc(f["last_due"] or "—")}</td></tr>'
        )
    if not rows:
        rows.append(f'<tr><td colspan="{len(COLUMNS) + 2}">no farmers</td></tr>')
    pager = []
    if farmers.page > 0:
        pager.append(f'<a rel="prev" id="page-prev" href="{esc(list_url(farmers, page=farmers.page - 1))}">'
                     "Previous page</a>")
    pager.append(f'<span id="page-number">Page {farmers.page + 1}</span>')
    if farmers.has_next:
        pager.append(f'<a rel="next" id="page-next" href="{esc(list_url(farmers, page=farmers.page + 1))}">'
                     "Next page</a>")
    checked = " checked" if farmers.online else ""
    form = (
        f'<form id="farmer-search" method="get" action="{DASHBOARD}#farmers-section" role="search">'
        f'<input type="hidden" name="sort" value="{esc(farmers.sort)}">'
        f'<input type="hidden" name="order" value="{"desc" if farmers.descending else "asc"}">'
        f'<label for="q">Address contains</label> <input id="q" name="q" type="search" maxlength="64" '
        f'value="{esc(farmers.search)}"> '
        f'<label><input type="checkbox" name="online" value="1"{checked}> online only</label> '
        '<button type="submit">Search</button></form>'
    )
    return (
        '<section id="farmers-section" aria-labelledby="h-farmers"><h2 id="h-farmers">Farmers</h2>' + form
        + '<div class="scroll"><table id="farmers"><caption>Farmers (one per token), '
        f'{farmers.limit} per page</caption><thead><tr>{"".join(heads)}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>'
        f'<nav class="pager" aria-label="Farmer pages">{" ".join(pager)}</nav></section>'
    )


def farmer_page(d: FarmerDetail, refresh: int = 30) -> str:
    f, r = d.farmer, d.results
    facts = (
        '<dl class="stats">'
        + _stat("farmer-address", "Address", f["address"])
        + _stat("farmer-location", "Location", location_text(f["location"]))
        + _stat("farmer-uptime", "Uptime", f["uptime"], f"{f['uptime']} %")
        + _stat("farmer-heartbeats", "Heartbeats", f["heartbeats"])
        + _stat("farmer-contracts", "Contracts (all)", f["contracts"])
        + _stat("farmer-size", "Size (all contracts)", f["size"], size_text(int(f["size"])))
        + _stat("farmer-online", "Online", "yes" if f["online"] else "no")
        + _stat("farmer-last-due", "Last due (last seen)", f["last_due"] or "—")
        + _stat("farmer-active", "Active contracts", r.get("active", 0))
        + _stat("farmer-ended", "Ended contracts", r.get("ended", 0))
        + _stat("farmer-failed", "Failed contracts", r.get("failed", 0))
        + _stat("farmer-passes", "Passes", r.get("passes", 0))
        + _stat("farmer-misses", "Misses", r.get("misses", 0))
        + _stat("farmer-fails", "Fails", r.get("fails", 0))
        + "</dl>"
    )
    risky = _table(
        "at-risk", "Active contracts closest to failing (longest run of misses and fails, then the nearest due time)",
        ("Contract", "File", "Protocol", "Size", "Passes", "Misses", "Fails", "Run", "Due", "Answered"),
        (f'<tr><td>{c.id}</td><td class="hash">{esc(c.file_hash[:16])}…</td><td>v{c.protocol}</td>'
         f"<td>{esc(size_text(c.size))}</td><td>{c.passes}</td><td>{c.misses}</td><td>{c.fails}</td>"
         f"<td>{c.run}</td><td>{esc(time_text(c.deadline))}</td><td>{'yes' if c.answered else 'no'}</td></tr>"
         for c in d.at_risk),
        "no active contracts",
    )
    return page(f"Farmer {f['id']} — downstream-tx",
                f'<p><a href="{DASHBOARD}">← Dashboard</a></p><h1>Farmer <span class="hash" id="farmer-id">'
                f'{esc(f["id"])}</span></h1>'
                f'<section aria-labelledby="h-standing"><h2 id="h-standing">Standing</h2>{facts}</section>'
                f'<section aria-labelledby="h-risk"><h2 id="h-risk">Contracts</h2>{risky}</section>',
                refresh)
