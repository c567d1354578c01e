"""The audit report as one self-contained HTML document (pure: ``AuditData`` in, text out).

Everything is inline: the style sheet, the charts (SVG from ``charts.py``) and nothing else; a Content-Security-Policy
forbids every network request, so a document that tried one would say so in the browser's console (the browser test
fails on any console error). Printing: ``@media print`` keeps sections from splitting mid-table where it can and opens
nothing; the SQL blocks stay collapsed (they are for the screen; the SQL is in the file either way).

Every number shown is the text of an exact value (``cells.cell_text``); each table has its SQL in a collapsed
``<details>`` block. Elements an automated check reads carry ``data-figure`` attributes (fill count, fees per
market) and every section an ``id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from typing import Final

from tracker.audit import charts
from tracker.audit.cells import cell_text, decimal_of, moment_of
from tracker.audit.coverage import UNRECOVERABLE, Gap, failures, gaps, live_intervals
from tracker.audit.model import AuditData, Balances, Cell, Discrepancies, Integrity, Query, Table, TrackerEntry
from tracker.domain import tracker_events as te

SECTIONS: Final = (
    ("integrity", "1. Integrity"),
    ("coverage", "2. Coverage"),
    ("activity", "3. Activity"),
    ("balances", "4. Balances"),
    ("discrepancies", "5. Discrepancies"),
    ("provenance", "6. Provenance and limits"),
)
MONTHLY_AFTER_DAYS: Final = 120  # a longer period is charted per month (the table stays per day)
CSS: Final = """
body{font:14px/1.45 system-ui,sans-serif;color:#1a202c;max-width:1100px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #2b6cb0;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.4em}table{border-collapse:collapse;margin:.5em 0;font-size:12.5px}
th,td{border:1px solid #cbd5e0;padding:2px 6px;text-align:left;vertical-align:top}th{background:#edf2f7}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ok{color:#276749;font-weight:600}.bad{color:#c53030;font-weight:600}.warn{color:#b7791f;font-weight:600}
.anchor{font-family:ui-monospace,monospace;background:#f7fafc;border:1px solid #cbd5e0;padding:.3em .5em;
word-break:break-all;display:inline-block}
details{margin:.3em 0 1em}summary{cursor:pointer;color:#4a5568;font-size:12px}
pre{white-space:pre-wrap;background:#f7fafc;border:1px solid #e2e8f0;padding:.5em;font-size:11.5px}
.chart svg{width:100%;height:auto}.note{color:#4a5568;font-size:12.5px}nav a{margin-right:1em}
@media print{nav,details{display:none}section{break-inside:auto}table,figure{break-inside:avoid}
body{margin:0;max-width:none}}
"""
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _num(value: Cell) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def sql_block(query: Query, label: str = "SQL") -> str:
    params = "".join(f"\n-- :{_e(k)} = {_e(v)}" for k, v in query.params)
    return f"<details><summary>{_e(label)}</summary><pre>{_e(query.sql)}{params}</pre></details>"


def table_html(table: Table, caption: str = "", *, figures: dict[tuple[int, int], str] | None = None) -> str:
    """A table of exact cells, its count (and how many are listed when capped), and its SQL."""
    figures = figures or {}
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    body = []
    for r, row in enumerate(table.rows):
        cells = []
        for c, value in enumerate(row):
            attr = f' data-figure="{_e(figures[(r, c)])}"' if (r, c) in figures else ""
            cls = ' class="n"' if _num(value) else ""
            cells.append(f"<td{cls}{attr}>{_e(cell_text(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    count = f"{table.count} row(s)" + (f", the first {len(table.rows)} listed" if table.capped else "")
    title = f"<p><b>{_e(caption)}</b> <span class=note>({count})</span></p>" if caption else ""
    rows = "".join(body) if body else f'<tr><td colspan="{len(table.columns)}" class=note>none</td></tr>'
    return f"{title}<table><tr>{head}</tr>{rows}</table>{sql_block(table.query)}"


def _figure(svg: str, caption: str) -> str:
    return f'<figure class="chart">{svg}<figcaption class=note>{_e(caption)}</figcaption></figure>'


def _time(moment: datetime | None) -> str:
    return "" if moment is None else cell_text(moment)


def _duration(delta: timedelta | None) -> str:
    return "" if delta is None else f"{delta.total_seconds():.3f} s"


# -- 1. integrity ----------------------------------------------------------------------------------------------------


def integrity_html(result: Integrity) -> str:
    if result.problems:
        db = (
            f"<p class=bad>BROKEN: the database file is damaged ({_e(result.method)}: "
            f"{len(result.problems)} problem(s))</p>"
        )
        db += "<ul>" + "".join(f"<li>{_e(p)}</li>" for p in result.problems) + "</ul>"
    elif result.method:
        db = f"<p class=ok>{_e(result.method)}: ok</p>"
    else:
        db = f"<p class=warn>pages not checked: {_e(result.note or 'no check available')}</p>"
    if result.broken is not None:
        chain = f"<p class=bad>BROKEN: the hash chain fails at {_e(result.broken)}</p>"
    elif result.chain_rows == 0:
        chain = "<p class=ok>ok: the event log is empty</p>"
    else:
        chain = f"<p class=ok>ok: {result.chain_rows} events intact (hash chain from seq 1 to {result.head_seq})</p>"
    verdict = "ok" if result.ok else "BROKEN"
    return (
        f'<p>Result: <b class="{"ok" if result.ok else "bad"}" data-figure="verify">{verdict}</b> '
        f"(what <code>tracker verify</code> reports, run on the whole log when this report was made, in "
        f"{result.seconds:.1f} s)</p>{db}{chain}"
        "<p>Head anchor to record elsewhere (<code>tracker verify --expect-anchor SEQ:HASH</code> later proves the log "
        f'was neither rewritten nor cut short up to it):</p><p class=anchor data-figure="anchor">'
        f"{result.head_seq}:{_e(result.head_hash)}</p>"
    )


def merged_html(merged: Sequence[TrackerEntry]) -> str:
    """The logs merged into this one (``tracker db copy --merge``): their rows were renumbered and relinked here, so
    their own anchors hold on the source, which stays the original evidence."""
    if not merged:
        return ""
    rows = "".join(
        f"<tr><td>{entry.seq}</td><td>{_e(_time(entry.received_at))}</td><td>{_e(entry.data.get('account', ''))}</td>"
        f"<td>{_e(entry.data.get('first_seq'))}..{_e(entry.data.get('last_seq'))}</td>"
        f"<td>{_e(entry.data.get('entries'))}</td><td>{_e(entry.data.get('source'))}</td>"
        f"<td class=anchor>{_e(entry.data.get('source_anchor'))}</td></tr>"
        for entry in merged
    )
    return (
        "<h3>Logs merged into this one</h3><p class=note>Rows appended from another database by <code>tracker db copy"
        " --merge</code>: every column kept but <code>seq</code> and the links, which were computed again on this"
        " chain. The source's head anchor holds on the source database, which stays the original evidence.</p>"
        "<table><tr><th>seq</th><th>merged at</th><th>account</th><th>seqs of its source's rows</th>"
        f"<th>this account's entries</th><th>source</th><th>source's head anchor</th></tr>{rows}</table>"
    )


# -- 2. coverage -----------------------------------------------------------------------------------------------------


def _counts_text(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items()) if v) or "none"


def _gap_rows(found: Sequence[Gap]) -> str:
    rows = []
    for gap in found:
        filled = (
            f"seq {gap.filled_seq}, after {_duration(gap.filled_after)}"
            if gap.filled_seq is not None
            else "<span class=bad>not filled</span>"
        )
        errors = "; ".join(f"{k}: {v}" for k, v in gap.errors.items())
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{cell}</td>"
                for cell in (
                    gap.seq, _e(gap.start or "(log start)"), _e(gap.end), _e(gap.cause), len(gap.channels),
                    _e(gap.detail), filled, _e(_counts_text(gap.found)), _e(_counts_text(gap.fetched)),
                    _e(_counts_text(gap.requests)), f"<span class=bad>{_e(errors)}</span>" if errors else "",
                )
            )
            + "</tr>"
        )  # fmt: skip
    return "".join(rows)


def coverage_html(data: AuditData) -> str:
    entries = data.tracker_entries
    start = None if data.period.since is None else datetime.combine(data.period.since, datetime.min.time(), UTC)
    end = data.span.last_at or data.made_at
    if data.period.until is not None:
        end = min(end, datetime.combine(data.period.until, datetime.min.time(), UTC))
    lanes = live_intervals(entries, start, end)
    begin = start or data.span.first_at or end
    in_period = [e for e in entries if start is None or e.received_at >= start]
    found = gaps(in_period)
    unfilled = sum(1 for g in found if g.filled_seq is None)
    chart = (
        _figure(
            charts.timeline("Channels live (a break is a window not live)", lanes, begin, end),
            f"from {_time(begin)} to {_time(end)}; lanes are channels, from the log's subscribed, closed, stalled"
            " and reconnect_requested entries",
        )
        if lanes
        else "<p class=note>No subscription in the log: no channel was ever live.</p>"
    )
    failed = failures(in_period)
    failure_rows = "".join(
        f"<tr><td>{f.seq}</td><td>{_e(_time(f.received_at))}</td><td>{_e(f.event)}</td><td>{_e(f.data)}</td></tr>"
        for f in failed
    )
    lost = "".join(f"<li><b>{_e(what)}</b>: {_e(why)}</li>" for what, why in UNRECOVERABLE)
    return (
        f'<p><span data-figure="gaps">{len(found)}</span> gap(s) detected in the period, '
        f'<span data-figure="gaps-unfilled" class="{"bad" if unfilled else "ok"}">{unfilled}</span> not filled; '
        f"{sum(1 for e in in_period if e.event == te.SUBSCRIBED)} subscription(s).</p>{chart}"
        "<h3>Every gap and how it was filled</h3><p class=note>Window as logged by <code>gap_detected</code>; filling "
        "from the <code>backfill_completed</code> entry naming its gap id (REST endpoints: facts found new, rows "
        "fetched, requests; time from detection to the end of the backfill).</p>"
        "<table><tr><th>seq</th><th>from</th><th>to</th><th>cause</th><th>channels</th><th>detail</th>"
        "<th>filled by</th><th>found</th><th>fetched</th><th>requests</th><th>errors</th></tr>"
        f"{_gap_rows(found) or '<tr><td colspan=11 class=note>none</td></tr>'}</table>"
        f"{sql_block(data.tracker_query, 'SQL (the tracker-made entries; gaps and coverage are folded from them)')}"
        f"<h3>Walks that failed, endpoints refused, channels set aside</h3><table><tr><th>seq</th><th>at</th>"
        f"<th>event</th><th>data</th></tr>{failure_rows or '<tr><td colspan=4 class=note>none</td></tr>'}</table>"
        "<h3>What cannot be recovered</h3><p>A window in which these channels were not live may have lost some for "
        f"good: the REST API has no source for them, so backfill cannot fill them.</p><ul>{lost}</ul>"
    )


# -- 3. activity -----------------------------------------------------------------------------------------------------


def _daily_series(table: Table, value: str) -> tuple[list[str], dict[str, dict[str, Decimal]]]:
    """Days (or months, for a long period) and per market the exact sum of ``value``."""
    days = sorted({str(d) for d in table.column("day")})
    monthly = len(days) > MONTHLY_AFTER_DAYS
    series: dict[str, dict[str, Decimal]] = {}
    for day, market, amount in zip(table.column("day"), table.column("market"), table.column(value), strict=True):
        key = str(day)[:7] if monthly else str(day)
        per = series.setdefault(str(market), {})
        per[key] = per.get(key, Decimal(0)) + decimal_of(amount)
    labels = sorted({d[:7] for d in days}) if monthly else days
    return labels, series


def activity_html(data: AuditData) -> str:
    act = data.activity
    fill_count = sum(int(decimal_of(v)) for v in act.fills.column("fills"))
    daily_fills = sum(int(decimal_of(v)) for v in act.fees_total.column("fills"))
    agree = (
        "<span class=ok>agrees</span>"
        if fill_count == daily_fills
        else f"<span class=bad>differs: {daily_fills} in v_fees_daily</span>"
    )
    fees_col = act.fees_total.columns.index("fees")
    figures = {(r, fees_col): f"fees-{cell_text(row[0])}" for r, row in enumerate(act.fees_total.rows)}
    figures |= {(r, 1): f"fills-{cell_text(row[0])}" for r, row in enumerate(act.fees_total.rows)}
    charts_html = ""
    if act.fees_daily.rows:
        days, fees = _daily_series(act.fees_daily, "fees")
        _, fills = _daily_series(act.fees_daily, "fills")
        unit = "per month" if len(days) and len(days[0]) == 7 else "per day"
        charts_html = _figure(
            charts.daily_bars(f"Fees {unit} and market (quote currency)", days, fees, ""), "from v_fees_daily"
        ) + _figure(charts.daily_bars(f"Fills {unit} and market", days, fills, "fills"), "from v_fees_daily")
    statuses: dict[str, int] = {}
    for status, count in zip(act.orders.column("status"), act.orders.column("orders"), strict=True):
        statuses[str(status)] = statuses.get(str(status), 0) + int(decimal_of(count))
    if statuses:
        charts_html += _figure(
            charts.bars("Orders by final status", list(statuses), list(statuses.values()), "orders"),
            "from v_orders, by status as of now, orders created in the period",
        )
    return (
        f'<p>Fills in the period: <b data-figure="fill-count">{fill_count}</b> (v_fills; the daily table {agree}).</p>'
        f"{charts_html}<h3>Fees and volume per market</h3>"
        f"{table_html(act.fees_total, 'Totals per market (exact sums of v_fees_daily)', figures=figures)}"
        f"{table_html(act.fills, 'Fills per market and side (v_fills)')}"
        f"<h3>Fees per day and market</h3>{table_html(act.fees_daily, 'v_fees_daily')}"
        f"<h3>Orders by final status</h3>{table_html(act.orders, 'v_orders, created in the period')}"
        f"<h3>Self trades</h3>{table_html(act.self_trades, 'v_self_trades')}"
        f"<h3>Settlements and funding</h3>{table_html(act.settlements, 'v_settlements per kind and currency')}"
        f"<h3>Liquidations</h3>{table_html(act.liquidations, 'v_liquidations per event')}"
        f"{table_html(act.liquidation_list, 'v_liquidations')}"
        f"<h3>Positions and realised figures</h3>{table_html(act.positions, 'v_positions with a fill in the period')}"
    )


# -- 4. balances -----------------------------------------------------------------------------------------------------


def _balance_points(table: Table, time_col: str, value_col: str) -> dict[str, list[tuple[datetime, Decimal]]]:
    out: dict[str, list[tuple[datetime, Decimal]]] = {}
    cols = table.columns
    for row in table.rows:
        key = f"{cell_text(row[cols.index('trade_account_id')])} {cell_text(row[cols.index('currency')])}"
        moment = moment_of(row[cols.index(time_col)])
        if moment is not None:
            out.setdefault(key, []).append((moment, decimal_of(row[cols.index(value_col)])))
    return out


def balances_html(balances: Balances) -> str:
    if balances.series is None or balances.checks is None:
        return (
            '<p class=warn data-figure="balances">not available in this database: no ledger views '
            f"({', '.join(_e(m) for m in balances.missing)} missing)</p>"
        )
    computed = _balance_points(balances.series, "as_of", "balance")
    snapshots = _balance_points(balances.checks, "snapshot_at", "exchange_total")
    chart = (
        _figure(charts.balance_lines("Balance per sub-account and currency", computed, snapshots),
                "computed (v_ledger balance_after, last of each UTC day) and exchange snapshots (v_balance_checks)")
        if computed or snapshots
        else ""
    )  # fmt: skip
    differing = sum(1 for d in balances.checks.column("difference") if decimal_of(d) != 0)
    now = ""
    if balances.current is not None:
        figures = {
            (r, 2): f"current-balance-{row[0]}-{row[1]}" for r, row in enumerate(balances.current.rows)
        }  # the browser test reads each balance by this name
        now = table_html(balances.current, "Each balance now, computed from the ledger (v_balances)", figures=figures)
    return (
        f"{now}"
        f'<p data-figure="balances">{balances.checks.count} snapshot check(s), '
        f'<span class="{"bad" if differing else "ok"}" data-figure="balance-differences">{differing}</span> with a '
        f"difference.</p>{chart}{table_html(balances.checks, 'Every snapshot beside the computed balance')}"
        f"{table_html(balances.series, 'Computed balance at the end of each UTC day')}"
    )


# -- 5. discrepancies ------------------------------------------------------------------------------------------------


def discrepancies_html(data: AuditData) -> str:
    d = data.discrepancies
    notes = [c for c in ("note", "acknowledged_at") if c in d.rows.columns]
    extra = f" (with {', '.join(notes)})" if notes else ""
    return (
        "<p>Every status <code>v_discrepancies</code> has; the evidence of each is its log seqs (opened_seq, "
        f"resolved_seq): <code>SELECT * FROM event_log WHERE seq = N</code> shows the frame.</p>"
        f"{table_html(d.by_status, 'Per status')}{table_html(d.rows, 'Each discrepancy' + extra)}{_hints_html(d)}"
    )


def _hints_html(d: Discrepancies) -> str:
    """What the orders' own logged events say about some of the discrepancies: computed by tracker from the log (as
    ``tracker discrepancies`` shows it), not a column of the view, so said apart from the table and its SQL."""
    if not d.hints:
        return ""
    items = "".join(f"<li><code>{escape(ident)}</code>: {escape(text)}</li>" for ident, text in d.hints)
    return (
        "<p>Likely causes, read by tracker from the orders' own logged events (not in <code>v_discrepancies</code>;"
        f" <code>tracker discrepancies</code> shows them too):</p><ul>{items}</ul>"
    )


# -- 6. provenance ---------------------------------------------------------------------------------------------------


def provenance_html(data: AuditData) -> str:
    p, span = data.period, data.span
    period = f"{p.since or 'the start of the log'} to {p.until or 'the end of the log'}"
    rows = [
        ("tracker version", data.version),
        ("database", data.database),
        ("account", p.account or "every account in the database"),
        (
            "trade account",
            p.trade_account
            if p.trade_account is not None
            else "every trade account (the main account 0 and every sub-account)",
        ),
        ("period (UTC, whole days, end exclusive)", period),
        ("log entries in the period", f"{span.events} (seq {span.first_seq or '-'}..{span.last_seq or '-'})"),
        ("first and last entry in the period", f"{_time(span.first_at)} .. {_time(span.last_at)}"),
        ("made at (UTC)", _time(data.made_at)),
    ]
    made = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in data.seconds.items())
    return (
        f"<table>{made}</table>{table_html(span.by_source, 'Log entries in the period per source')}"
        "<h3>Limits of this document</h3><ul>"
        "<li>It shows what the database held when it was made; the integrity check covers the whole log, the rest "
        "the period only.</li>"
        "<li>Fees, volume and fill counts per day come from <code>v_fees_daily</code> (maintained exactly per UTC "
        "day); totals add them exactly. Fees are in each market's quote currency: totals are per market, never "
        "added across currencies.</li>"
        f"<li>Detail lists show at most their first rows (the count of all rows is given beside each); the SQL "
        "under each table lists them all.</li>"
        "<li>Orders count by their status now (their final status if closed), when created in the period.</li>"
        "<li>Coverage is what tracker logged about its own connections: a period with no tracker running has no "
        "entries and shows as not live; a channel is live from its subscription until its connection closes, "
        "stalls (from its last frame) or is asked to reconnect.</li>"
        "<li>Charts draw with floating-point coordinates; every figure in a table and label is exact.</li>"
        "<li>Times are UTC.</li></ul>"
        f"<p class=note>Time spent: {_e(timing)}.</p>"
    )


def render(data: AuditData) -> str:
    """The whole document."""
    nav = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title in SECTIONS)
    bodies = {
        "integrity": integrity_html(data.integrity) + merged_html(data.merged),
        "coverage": coverage_html(data),
        "activity": activity_html(data),
        "balances": balances_html(data.balances),
        "discrepancies": discrepancies_html(data),
        "provenance": provenance_html(data),
    }
    sections = "".join(f'<section id="{key}"><h2>{_e(title)}</h2>{bodies[key]}</section>' for key, title in SECTIONS)
    p = data.period
    scope = f"account {_e(p.account)}" if p.account else "every account"
    if p.trade_account is not None:
        scope += f", trade account {_e(p.trade_account)}"
    when = f"{p.since or 'start'} .. {p.until or 'end'}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>tracker audit: {scope}, {_e(when)}</title><style>{CSS}</style></head><body>"
        f"<h1>Audit report</h1><p class=note>{scope}; period {_e(when)} (UTC days); made "
        f"{_e(_time(data.made_at))} by tracker {_e(data.version)} from {_e(data.database)}</p>"
        f"<nav>{nav}</nav>{sections}</body></html>"
    )
