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

from downstream_tx.core.reputation import standing_sentence, standing_word, threshold_note
from downstream_tx.dashboard.charts import results_chart
from downstream_tx.dashboard.data import DEFAULT_LIMIT, Farmer, FarmerDetail, FarmerList, NodePanel, Overview
from downstream_tx.times import iso_utc

STATIC = "/dashboard/static"
DASHBOARD = "/dashboard"
#: the farmer table's columns: (sort key, or None for a column that does not sort; heading)
COLUMNS = (("id", "Farmer"), ("address", "Address"), ("standing", "Standing"), ("audit", "Audit score"),
           ("uptime", "Uptime"), (None, "Passes"), (None, "Fails"), (None, "Misses"),
           ("contracts", "Online contracts"), ("size", "Size"), ("online", "Online"), (None, "Last seen (UTC)"))


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
    """The one time format of the pages: ISO 8601 UTC, as downstream-admin and the status API."""
    return iso_utc(t) or "—"


def location_text(location: Any) -> str:
    if not isinstance(location, dict):
        return "unknown"
    parts = [location.get(k) for k in ("city", "state", "country")]
    return ", ".join(str(p) for p in parts if p) or "unknown"


def node_panel(n: NodePanel) -> str:
    """Who runs the node's jobs, how fresh their lease is, how fast the database answers, and which
    process made this page when: what an operator of several processes or machines asks first."""
    if n.leader is None:
        leader, age = "nobody (no instance holds the jobs lease: the jobs are not running)", "—"
    else:
        leader = n.leader + (" (this process)" if n.leading else "")
        age = f"{n.lease_age:.1f} s ago"
    return (
        '<section aria-labelledby="h-node"><h2 id="h-node">Node</h2><dl class="stats node">'
        + _stat("node-leader", "Runs the periodic jobs (jobs lease)", n.leader or "", leader)
        + _stat("node-lease-age", "Lease last renewed", "" if n.lease_age is None else f"{n.lease_age:.3f}", age,
                note=f"it expires {n.lease_ttl:g} s after its last renewal")
        + _stat("node-generation", "Lease generation", "" if n.generation is None else n.generation)
        + _stat("node-db-ms", "Database answer (SELECT 1)", f"{n.db_ms:.1f}", f"{n.db_ms:.1f} ms")
        + _stat("node-instance", "This page made by", n.instance)
        + _stat("node-generated", "Made at", f"{n.now:.0f}", time_text(n.now))
        + "</dl></section>"
    )


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


def _stat(stat_id: str, label: str, value: Any, shown: str | None = None, note: str | None = None) -> str:
    """A figure: its label, its value (``data-value``: the raw one), and a line of ``note`` under it."""
    small = f'<span class="note">{esc(note)}</span>' if note else ""
    return (f'<div class="stat"><dt>{esc(label)}</dt>'
            f'<dd id="{esc(stat_id)}" data-value="{esc(value)}">{esc(value if shown is None else shown)}{small}</dd>'
            "</div>")


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


def overview_page(o: Overview, farmers: FarmerList, node: NodePanel, refresh: int = 30) -> str:
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
        '<div class="charts"><figure><figcaption id="h-chart-hours">Per hour, last 24 hours (UTC)</figcaption>'
        + results_chart("chart-hours", "Passes, misses and fails per hour, last 24 hours", o.hourly, _hour_label,
                        every=3)
        + '</figure><figure><figcaption id="h-chart-days">Per day, last 30 days (UTC)</figcaption>'
        + results_chart("chart-days", "Passes, misses and fails per day, last 30 days", o.daily, _day_label,
                        every=5)
        + "</figure></div>"
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
                '<h1>Node status</h1>' + summary + node_panel(node) + charts
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
             and not (k == "sort" and v == "id") and not (k == "limit" and v == farmers.limit == DEFAULT_LIMIT)}
    return DASHBOARD + ("?" + urlencode(query) if query else "") + "#farmers-section"


def _cell(css: str, value: Any, shown: Any = None, title: str | None = None) -> str:
    hint = f' title="{esc(title)}"' if title else ""
    return f'<td class="{css}" data-value="{esc(value)}"{hint}>{esc(value if shown is None else shown)}</td>'


def farmer_row(farmer: Farmer) -> str:
    """One farmer of the list: the status API's numbers, its activity as downstream-admin shows it,
    its address's standing."""
    f, a, rep = farmer.status, farmer.activity, farmer.standing
    word = standing_word(rep)
    return (
        f'<tr data-farmer-id="{esc(f["id"])}">'
        f'<td class="c-id hash"><a href="/farmers/{esc(f["id"])}">{esc(f["id"])}</a></td>'
        f'<td class="c-address hash">{esc(f["address"])}</td>'
        f'<td class="c-standing" data-value="{esc(word)}"><span class="standing s-{esc(word)}">{esc(word)}</span></td>'
        + _cell("c-audit", f"{rep['audit_score']:.6f}", f"{rep['audit_score']:.4f}")
        + _cell("c-uptime", f["uptime"], f"{f['uptime']} %")
        + _cell("c-passes", a.passes if a else 0)
        + _cell("c-fails", a.fails if a else 0)
        + _cell("c-misses", a.misses if a else 0)
        + _cell("c-contracts", f["contracts"])
        + _cell("c-size", f["size"], size_text(int(f["size"])))
        + _cell("c-online", "1" if f["online"] else "0", "yes" if f["online"] else "no")
        + _cell("c-last-seen", f"{a.last_seen:.0f}" if a else "", time_text(a.last_seen if a else None))
        + "</tr>"
    )


def farmer_list(farmers: FarmerList) -> str:
    heads = []
    for key, title in COLUMNS:
        if key is None:
            heads.append(f'<th scope="col">{esc(title)}</th>')
        elif key == farmers.sort:
            order = "descending" if farmers.descending else "ascending"
            link = list_url(farmers, sort=key, order="asc" if farmers.descending else "desc", page=0)
            heads.append(f'<th scope="col" aria-sort="{order}"><a href="{esc(link)}" data-sort="{key}">'
                         f'{esc(title)} <span aria-hidden="true">{"▼" if farmers.descending else "▲"}</span></a></th>')
        else:
            link = list_url(farmers, sort=key, order="asc", page=0)
            heads.append(f'<th scope="col"><a href="{esc(link)}" data-sort="{key}">{esc(title)}</a></th>')
    rows = [farmer_row(f) for f in farmers.farmers]
    if not rows:
        rows.append(f'<tr><td colspan="{len(COLUMNS)}">no farmers</td></tr>')
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


def farmer_page(d: FarmerDetail, node: NodePanel, refresh: int = 30) -> str:
    f, r, rep, a = d.farmer, d.results, d.standing, d.activity
    audits = rep["audits"]
    audit = threshold_note(rep["audit_score"], d.rules.dq_threshold, "dq_threshold")
    unknown = threshold_note(rep["unknown_score"], d.rules.suspension_threshold, "suspension_threshold")
    standing = (
        '<dl class="stats">'
        + _stat("farmer-standing", "Standing", standing_word(rep), note=standing_sentence(rep, d.rules))
        + _stat("farmer-audit-score", "Audit score", f"{rep['audit_score']:.6f}", note=audit)
        + _stat("farmer-online-score", "Online score", f"{rep['online_score']:.6f}")
        + _stat("farmer-unknown-score", "Unknown-error score", f"{rep['unknown_score']:.6f}", note=unknown)
        + _stat("farmer-contained", "Contracts in containment", rep["contained"])
        + _stat("farmer-vetted", "Vetted", "yes" if rep["vetted"] else "no",
                note=f"{audits['passes']} passes" if rep["vetted"]
                else f"{audits['passes']} of {d.rules.vetting_audits} passes")
        + _stat("farmer-audits", "Results of its address (all tokens)", audits["passes"], f"{audits['passes']} passes",
                note=f"{audits['fails']} fails, {audits['misses']} misses, {audits['retries']} asked again, "
                     f"{audits['errors']} errors")
        + "</dl>"
    )
    facts = (
        '<dl class="stats">'
        + _stat("farmer-address", "Address", f["address"])
        + _stat("farmer-location", "Location", location_text(f["location"]))
        + _stat("farmer-protocol", "Protocol", (a.protocol if a else "") or "—")
        + _stat("farmer-last-seen", "Last seen (UTC)", f"{a.last_seen:.0f}" if a else "",
                time_text(a.last_seen if a else None))
        + _stat("farmer-online", "Online", "yes" if f["online"] else "no")
        + _stat("farmer-uptime", "Uptime", f["uptime"], f"{f['uptime']} %")
        + _stat("farmer-heartbeats", "Heartbeats (v1 proofs)", f["heartbeats"])
        + _stat("farmer-contracts", "Contracts (all)", f["contracts"])
        + _stat("farmer-size", "Size (all contracts)", f["size"], size_text(int(f["size"])))
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
        ("Contract", "File", "Protocol", "Size", "Passes", "Misses", "Fails", "Run", "Due (UTC)", "Answered"),
        (f'<tr><td>{c.id}</td><td class="hash">{esc(c.file_hash[:16])}…</td><td>v{c.protocol}</td>'
         f"<td>{esc(size_text(c.size))}</td><td>{c.passes}</td><td>{c.misses}</td><td>{c.fails}</td>"
         f"<td>{c.run}</td><td>{esc(time_text(c.deadline))}</td><td>{'yes' if c.answered else 'no'}</td></tr>"
         for c in d.at_risk),
        "no active contracts",
    )
    return page(f"Farmer {f['id']} — downstream-tx",
                f'<p><a href="{DASHBOARD}">← Dashboard</a></p><h1>Farmer <span class="hash" id="farmer-id">'
                f'{esc(f["id"])}</span></h1>'
                f'<section aria-labelledby="h-standing"><h2 id="h-standing">Standing</h2>{standing}</section>'
                f'<section aria-labelledby="h-activity"><h2 id="h-activity">Activity</h2>{facts}</section>'
                f'<section aria-labelledby="h-risk"><h2 id="h-risk">Contracts</h2>{risky}</section>'
                + node_panel(node),
                refresh)
