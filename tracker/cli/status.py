"""``tracker status``: the tracker's state as the database records it (works while ``tracker run`` runs, or not).

Per channel the last entry and its age, the connections' state, projection lag, open and closed gaps, unresolved
discrepancies and the quarantine; the database's size and its disk's free space (``store/space.py``); who writes,
and the accounts a running ``tracker run`` has given up as down (why, since when, next try) or tracks again after a
spell down, and the tasks beside ingest it started again after a bug.
``--format json`` for machines. Read-only: it never creates or migrates anything.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tracker.cli import add_common_flags, open_database
from tracker.config import load_settings
from tracker.domain.money import format_decimal
from tracker.logs import hide_password


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status", help="channels, connections, projection lag, gaps, discrepancies and quarantine, from the database"
    )
    add_common_flags(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.set_defaults(func=cmd_status)


def format_age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max((now - moment).total_seconds(), 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def format_until(moment: datetime, now: datetime) -> str:
    """When ``moment`` comes, from ``now``: ``in 40 s``; one already past: ``due 3 s ago``."""
    if moment <= now:
        return "due " + format_age(moment, now)
    return "in " + format_age(now, moment).removesuffix(" ago")


def describe_down(down: Any, now: datetime) -> str:
    """One account a running ``tracker run`` has given up as down, in words (the line under ``down:``)."""
    user = f"user {down.user}" if down.user else "user not known: its key never said"
    if down.retry_at is None:
        retry = "next try not drawn yet"
    elif down.retry_at <= now:
        retry = f"being tried again (since {format_age(down.retry_at, now)})"
    else:
        retry = f"next try {format_until(down.retry_at, now)}"
    failures = f"{down.failures} failure{'' if down.failures == 1 else 's'}"
    return (
        f"account {down.place} of [[accounts]] in tracker run pid {down.pid} ({user}): down since"
        f" {format_age(down.since, now)} ({failures}): {down.reason}; {retry}"
    )


def describe_back(back: Any, now: datetime) -> str:
    """One account tracked again after a spell down, in words (the line under ``tracked again:``)."""
    user = f"user {back.user}" if back.user else "user not known"
    minutes = (back.back_at - back.since).total_seconds() / 60
    return (
        f"account {back.place} of [[accounts]] in tracker run pid {back.pid} ({user}): tracked again since"
        f" {format_age(back.back_at, now)}, after {minutes:.1f} min down: {back.reason}"
    )


def describe_task_failure(failure: Any, now: datetime) -> str:
    """One task a running ``tracker run`` started again after a bug, in words (the line under ``task failures:``)."""
    whose = f"account {failure.account}" if failure.account else "the process's own"
    times = f"{failure.failures} time{'' if failure.failures == 1 else 's'}"
    since = f" since {format_age(failure.first_at, now)}" if failure.failures > 1 else ""
    if failure.restart_at <= now:
        restart = f"started again {format_age(failure.restart_at, now)}"
    else:
        restart = f"starts again {format_until(failure.restart_at, now)}"
    return (
        f"{failure.task} ({whose}) in tracker run pid {failure.pid}: failed {times}{since}, last"
        f" {format_age(failure.last_at, now)}: {failure.error}; {restart}"
    )


def _task_failure_json(failure: Any, now: datetime) -> dict[str, Any]:
    return {
        "task": failure.task,
        "account": failure.account or None,
        "pid": failure.pid,
        "failures": failure.failures,
        "first_at": _iso(failure.first_at),
        "last_at": _iso(failure.last_at),
        "error": failure.error,
        "restart_at": _iso(failure.restart_at),
        "restart_in_s": round((failure.restart_at - now).total_seconds(), 3),
    }


def _back_json(back: Any) -> dict[str, Any]:
    return {
        "place": back.place,
        "account": back.user,
        "pid": back.pid,
        "reason": back.reason,
        "down_since": _iso(back.since),
        "back_at": _iso(back.back_at),
        "failures": back.failures,
    }


def _down_json(down: Any, now: datetime) -> dict[str, Any] | None:
    if down is None:
        return None
    return {
        "place": down.place,
        "account": down.user,
        "pid": down.pid,
        "reason": down.reason,
        "since": _iso(down.since),
        "failures": down.failures,
        "retry_at": _iso(down.retry_at),
        "retry_in_s": None if down.retry_at is None else round((down.retry_at - now).total_seconds(), 3),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _short(connection_id: str | None) -> str:
    if connection_id is None:
        return "-"
    return connection_id if len(connection_id) <= 11 else connection_id[:11] + "…"


def status_json(status: Any, now: datetime) -> dict[str, Any]:
    def age(moment: datetime | None) -> float | None:
        return None if moment is None else round(max((now - moment).total_seconds(), 0.0), 3)

    return {
        "now": _iso(now),
        "log": {"head": status.head, "last_at": _iso(status.head_at), "age_s": age(status.head_at)},
        "projection": {
            "checkpoint": status.checkpoint,
            "lag": status.projection_lag,
            "updated_at": _iso(status.checkpoint_at),
        },
        "channels": [
            {
                "channel": c.channel,
                "account": c.account,
                "state": c.state,
                "connection": c.connection,
                "entries": c.entries,
                "last_seq": c.last_seq,
                "last_event": c.last_event,
                "last_at": _iso(c.last_at),
                "age_s": age(c.last_at),
            }
            for c in status.channels
        ],
        "connections": {
            "live": [
                {
                    "id": c.connection_id,
                    "account": c.account,
                    "state": c.state,
                    "channels": c.channels,
                    "since": _iso(c.since),
                    "seq": c.seq,
                }
                for c in status.connections
            ],
            "closed": status.closed_connections,
            "last_closed": None
            if status.last_closed is None
            else {
                "id": status.last_closed.connection_id,
                "reason": status.last_closed.reason,
                "at": _iso(status.last_closed.since),
            },
        },
        "degraded": [
            {"kind": d.kind, "what": d.what, "detail": d.detail, "seq": d.seq, "at": _iso(d.at)}
            for d in status.degraded
        ],
        "backfill_progress": None
        if status.backfill_progress is None
        else {k: (_iso(v) if k == "at" else v) for k, v in status.backfill_progress.items()},
        "accounts": [
            {
                "account": a.account,
                "live_connections": a.live_connections,
                "channels": a.channels,
                "subscribed": a.subscribed,
                "entries": a.entries,
                "last_at": _iso(a.last_at),
                "age_s": age(a.last_at),
                "writer": _writer_json(a.writer),
                "down": _down_json(a.down, now),
            }
            for a in status.accounts
        ],
        "writer": _writer_json(status.writer),
        "down": [_down_json(d, now) for d in status.down],
        "tracked_again": [_back_json(d) for d in status.tracked_again],
        "task_failures": [_task_failure_json(f, now) for f in status.task_failures],
        "ledger": [
            {
                "account": a.account,
                "trade_account_id": a.trade_account_id,
                "rows": a.rows,
                "last_row_id": a.last_row_id,
                "last_row_at": _iso(a.last_row_at),
                "snapshots": a.snapshots,
                "last_snapshot_at": _iso(a.last_snapshot_at),
                "last_snapshot_age_s": age(a.last_snapshot_at),
            }
            for a in status.ledger
        ],
        "gaps": {
            "open": [
                {
                    "gap_id": g.gap_id,
                    "seq": g.seq,
                    "detected_at": _iso(g.detected_at),
                    "market": g.market,
                    "trigger": g.trigger,
                }
                for g in status.gaps_open
            ],
            "open_count": len(status.gaps_open),
            "closed_count": status.gaps_closed,
        },
        "discrepancies": {
            "unresolved": status.discrepancies_open,
            "latest": [{k: _plain(v) for k, v in d.items()} for d in status.discrepancies],
        },
        "storage": {
            "database_bytes": status.space.database_bytes,
            "disk_free_bytes": status.space.disk_free_bytes,
            "disk_total_bytes": status.space.disk_total_bytes,
            "low": status.space.low,
        },
        "quarantine": {
            "by_kind": status.quarantine_by_kind,
            "total": sum(status.quarantine_by_kind.values()),
            "latest": [
                {
                    "id": q.id,
                    "kind": q.kind,
                    "reason": q.reason,
                    "channel": q.channel,
                    "received_at": _iso(q.received_at),
                }
                for q in status.quarantine_latest
            ],
        },
    }


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Decimal):
        return format_decimal(value)  # str() would print 1E-8
    return str(value)


def describe_space(space: Any) -> str | None:
    """The ``storage:`` line: the database's size and its disk's free space, and a warning when that is low (``None``:
    an in-memory database)."""
    from tracker.store.space import LOW_ADVICE, format_bytes

    if space.database_bytes is None:
        return None
    line = f"storage: database {format_bytes(space.database_bytes)}"
    if (disk := space.disk()) is None:
        return line + "; the server's disk is not visible from here: watch its free space on the server"
    line += f"; disk {disk}"
    if space.low:
        line += f"; LOW: {LOW_ADVICE}"
    return line


def describe_writer(writer: Any, lock: str) -> str:
    """Who holds a writer lock (``lock``: what it is, for the "nobody" case), in words."""
    if writer.pid is None and writer.backend_pid is None:
        text = f"none (no tracker run holds {lock})"
    elif writer.pid is None:
        text = f"backend pid {writer.backend_pid} (its session's name is hidden from this database role)"
    else:
        backend = f" (backend pid {writer.backend_pid})" if writer.backend_pid is not None else ""
        text = f"tracker run pid {writer.pid}{backend}"
    if writer.standbys:
        text += f"; standby: pid {', '.join(str(pid) for pid in writer.standbys)}"
    return text


def _writer_json(writer: Any) -> dict[str, Any] | None:
    if writer is None:
        return None
    return {"pid": writer.pid, "backend_pid": writer.backend_pid, "standbys": list(writer.standbys)}


def format_status(status: Any, now: datetime, where: str) -> str:
    lines = [f"database {where}"]
    lines.append(
        f"log: head seq {status.head}"
        + (f", last entry {format_age(status.head_at, now)}" if status.head else " (empty)")
    )
    if status.checkpoint is None:
        lines.append("projection: never ran (`tracker run` projects as it goes; `tracker rebuild` does it at once)")
    else:
        lines.append(
            f"projection: checkpoint seq {status.checkpoint}, lag {status.projection_lag} events"
            f" (updated {format_age(status.checkpoint_at, now)})"
        )
    if (storage := describe_space(status.space)) is not None:
        lines.append(storage)
    lines.append(f"connections: {len(status.connections)} live, {status.closed_connections} closed")
    for c in status.connections:
        lines.append(f"  {c.connection_id}  {c.state}, {c.channels} channels (since {format_age(c.since, now)})")
    if status.last_closed is not None:
        lc = status.last_closed
        lines.append(f"  last closed: {lc.connection_id} ({lc.reason or 'no reason'}) {format_age(lc.since, now)}")
    if not status.connections and status.head:
        lines.append("  (no live connection logged: `tracker run` is not running, or has not connected yet)")
    if status.writer is not None:
        lines.append("writer: " + describe_writer(status.writer, "the file's writer lock"))
    if status.down:
        n = len(status.down)
        lines.append(f"down: {n} account{'' if n == 1 else 's'} of [[accounts]] not tracked (tried again by the run)")
        lines += [f"  {describe_down(d, now)}" for d in status.down]
    if status.tracked_again:
        lines.append("tracked again (after a spell down in this run):")
        lines += [f"  {describe_back(d, now)}" for d in status.tracked_again]
    if status.task_failures:
        n = len(status.task_failures)
        lines.append(
            f"task failures: {n} task{'' if n == 1 else 's'} beside ingest started again after a bug in this run"
            " (ingest goes on; the run's log has the traceback)"
        )
        lines += [f"  {describe_task_failure(f, now)}" for f in status.task_failures]
    several = len(status.accounts) > 1  # then per account at a glance, and each channel line names its account
    if several:
        lines.append(f"accounts: {len(status.accounts)} in this log")
        for a in status.accounts:
            last = f"last entry {format_age(a.last_at, now)}" if a.last_at is not None else "no entry yet"
            live = f"{a.live_connections} live connection{'' if a.live_connections == 1 else 's'}"
            writer = f"; writer: {describe_writer(a.writer, 'its writer lease')}" if a.writer is not None else ""
            down = f"; DOWN since {format_age(a.down.since, now)} (see down:)" if a.down is not None else ""
            lines.append(
                f"  {a.account}  {live}, {a.subscribed} of {a.channels} channels subscribed, {last}{writer}{down}"
            )
    elif status.accounts and status.accounts[0].writer is not None:
        a = status.accounts[0]
        lines.append(f"writer (account {a.account}): {describe_writer(a.writer, 'its writer lease')}")
    lines.append(f"channels: {len(status.channels)}")
    if status.channels:
        names = [f"{c.account} {c.channel}" if several else c.channel for c in status.channels]
        width = max(len(name) for name in names)
        heading = "account channel" if several else "channel"
        lines.append(f"  {heading:<{width}}  {'state':<14} {'connection':<12}  {'entries':>7}  last entry")
        for name, c in zip(names, status.channels, strict=True):
            last = f"{c.last_event} (seq {c.last_seq}) {format_age(c.last_at, now)}" if c.last_seq else "no entry yet"
            lines.append(f"  {name:<{width}}  {c.state:<14} {_short(c.connection):<12}  {c.entries:>7}  {last}")
    lines.append(f"gaps: {len(status.gaps_open)} open, {status.gaps_closed} closed (filled by backfill)")
    for g in status.gaps_open:
        detail = ", ".join(x for x in (g.market, g.trigger) if x)
        lines.append(
            f"  open: {g.gap_id} at seq {g.seq}, {format_age(g.detected_at, now)}{f' ({detail})' if detail else ''}"
        )
    if status.backfill_progress is not None:
        p = status.backfill_progress
        lines.append(
            f"backfill under way ({p.get('reason')}): {p.get('fetched', 0):,} facts fetched, {p.get('new', 0):,} new,"
            f" walking {p.get('walking')} ({format_age(p['at'], now)})"
        )
    several = len({a.account for a in status.ledger}) > 1  # then each ledger line names its Bitstamp account too
    if status.ledger:
        lines.append(f"ledger (per {'account / ' if several else ''}trade account; 0 = main):")
    for a in status.ledger:
        last_row = f"last row {a.last_row_id} {format_age(a.last_row_at, now)}" if a.rows else "no row yet"
        snapshot = f"last {format_age(a.last_snapshot_at, now)}" if a.snapshots else "none yet"
        name = f"{a.account} / {a.trade_account_id}" if several else a.trade_account_id
        lines.append(f"  {name}: {a.rows} rows, {last_row}; balance snapshots {a.snapshots}, {snapshot}")
    lines.append(f"degraded: {len(status.degraded) or 'nothing'}")
    for d in status.degraded:
        lines.append(f"  {d.kind.replace('_', ' ')}: {d.what}: {d.detail} (seq {d.seq}, {format_age(d.at, now)})")
    lines.append(f"discrepancies: {status.discrepancies_open} unresolved (`tracker discrepancies` lists them)")
    for d in status.discrepancies:
        lines.append(f"  {d.get('kind')} on {d.get('entity')}: {d.get('detail')} (since seq {d.get('opened_seq')})")
    total = sum(status.quarantine_by_kind.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in status.quarantine_by_kind.items())
    lines.append(f"quarantine: {total} frame{'' if total == 1 else 's'}" + (f" ({kinds})" if kinds else ""))
    for q in status.quarantine_latest:
        reason = q.reason if len(q.reason) <= 80 else q.reason[:79] + "…"
        lines.append(f"  #{q.id} {q.kind} {format_age(q.received_at, now)} on {q.channel or '-'}: {reason}")
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    import sys

    from tracker.store.migrate import check_schema
    from tracker.store.status import read_status

    settings = load_settings(flags={"db_url": args.db_url})
    engine = open_database(settings)
    try:
        check_schema(engine)
        status = read_status(engine)
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    if args.format == "json":
        sys.stdout.write(json.dumps(status_json(status, now), indent=1) + "\n")
    else:
        sys.stdout.write(format_status(status, now, hide_password(settings.db_url)))
    return 0
