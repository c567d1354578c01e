"""Status queries for ``tracker status``: what the database says about the tracker, whether ``run`` is running or not.

Everything here is read from the log and the projection store only, in one read transaction:

- per channel, the last entry received on it and when (``source = 'ws'`` frames);
- per connection, its state from the newest lifecycle entry (``connected``, ``subscribed``, ``subscribe_failed``,
  ``ws_error``, ``reconnect_requested``, ``stalled``, ``closed``). A connection that never logged ``closed`` (the
  process was killed) but whose every channel was subscribed again by a newer connection is shown as superseded;
- projection lag: the log head minus the projector's checkpoint;
- gaps: each ``gap_detected`` (its ``data.gap_id``) is closed when a later ``backfill_completed`` lists that id in
  ``data.gap_ids``; the rest are open;
- unresolved discrepancies (``v_discrepancies``) and the quarantine (count by kind, the newest few);
- per trade account of the ledger capture (``0`` = main, else a sub-account): its ledger rows, the last row id and
  when it was received, its balance snapshots and the newest one's time; the ledger walks the newest reconciliation
  found unavailable or failing are under "degraded". (A walk that finds nothing logs nothing: "last row" is when the
  ledger last moved, not when it was last walked.)

A database only knows what was logged: if ``run`` was killed, the last state stays as it was. Ages help judge that.
What is not logged but asked of the database's locks: who writes now. SQLite: which process holds the file's writer
lock; PostgreSQL: per account, which process holds its writer lease and which wait for it as standbys.

And what a running process says of itself, trusted while its lock says it runs: the accounts it has given up as down
(``[[accounts]]``), each with the reason it logged, since when and its next try (``accounts_down.py``, which says why
that is not in the log), and those it tracks again after a spell down; the tasks beside ingest it started again after
a bug, with how often and the last error (``task_failures.py``). On SQLite the rows the pid that holds the
file's lock wrote since it took it; on PostgreSQL those of processes holding their own lock, except a "down" for an
account whose lease another process holds (it is tracked there). A down account also holds no lease on PostgreSQL:
no writer, whatever the log says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from tracker.bitstamp.ledger_channels import split_ledger_channel
from tracker.bitstamp.ledger_entries import REST_BALANCES, REST_LEDGER_ROW
from tracker.domain import tracker_events as te
from tracker.store.accounts_down import AccountDown, read_down
from tracker.store.engine import sqlite_path
from tracker.store.lease import Writer, file_lock_taken_at, file_writer, lease_writers
from tracker.store.process_rows import held, live_processes
from tracker.store.projection_schema import CHECKPOINT_NAME, VIEWS, projector_checkpoint
from tracker.store.schema import event_log, quarantine
from tracker.store.space import Space, read_space
from tracker.store.task_failures import TaskFailure, read_failures

LIFECYCLE: tuple[str, ...] = (
    te.CONNECTED,
    te.SUBSCRIBED,
    te.SUBSCRIBE_FAILED,
    te.WS_ERROR,
    te.RECONNECT_REQUESTED,
    te.STALLED,
    te.CLOSED,
)
STATE_OF_EVENT: dict[str, str] = {
    te.CONNECTED: "subscribing",
    te.SUBSCRIBED: "subscribed",
    te.SUBSCRIBE_FAILED: "subscribing (a subscribe failed)",
    te.WS_ERROR: "error (bts:error)",
    te.RECONNECT_REQUESTED: "replacing (the server requested a reconnect)",
    te.STALLED: "stalled",
    te.CLOSED: "closed",
}
LATEST_SHOWN = 5


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    channel: str
    entries: int
    last_seq: int | None
    last_event: str | None
    last_at: datetime | None
    connection: str | None  # the live connection subscribed to it, if any
    state: str  # subscribed, stalled, ..., or "not subscribed"
    account: str = ""  # the Bitstamp account (user id) whose channel it is


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    connection_id: str
    state: str
    since: datetime  # the newest lifecycle entry's time
    seq: int
    channels: int
    reason: str | None = None  # closed: why
    account: str = ""  # the Bitstamp account (user id) it ran for


@dataclass(frozen=True, slots=True)
class GapStatus:
    gap_id: str
    seq: int
    detected_at: datetime
    market: str | None
    trigger: str | None
    closed: bool


@dataclass(frozen=True, slots=True)
class QuarantineStatus:
    id: int
    kind: str
    reason: str
    channel: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Degraded:
    """Something the run goes on without: a walk failing or unavailable, a channel refused, a chain learned."""

    kind: str  # walk_failing | endpoint_unavailable | channel_refused | chain_market_wide
    what: str  # the walk key, the channel, the market
    detail: str
    seq: int
    at: datetime


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    """One trade account of the ledger capture, as the log shows it."""

    trade_account_id: str
    rows: int
    last_row_id: str | None
    last_row_at: datetime | None  # received
    snapshots: int
    last_snapshot_at: datetime | None
    account: str = ""  # the Bitstamp account (user id) it belongs to: a log can hold several (run_accounts)


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """One Bitstamp account of the log, at a glance: a log can hold several (``tracker run`` with ``[[accounts]]``)."""

    account: str
    live_connections: int
    channels: int  # its channels with an entry or a subscription
    subscribed: int  # of which a live connection is subscribed to
    entries: int  # its websocket entries
    last_at: datetime | None  # the newest one's receive time
    writer: Writer | None = None  # PostgreSQL: who holds its writer lease now (SQLite: ``Status.writer``)
    down: AccountDown | None = None  # a running ``tracker run`` has given it up as down: why, since when


@dataclass
class Status:
    head: int
    head_at: datetime | None
    checkpoint: int | None  # None: the projector never ran
    checkpoint_at: datetime | None
    channels: list[ChannelStatus] = field(default_factory=list)
    connections: list[ConnectionStatus] = field(default_factory=list)  # live (not closed, not superseded)
    closed_connections: int = 0
    last_closed: ConnectionStatus | None = None
    gaps_open: list[GapStatus] = field(default_factory=list)
    gaps_closed: int = 0
    discrepancies_open: int = 0
    discrepancies: list[dict[str, Any]] = field(default_factory=list)  # the newest unresolved ones
    quarantine_by_kind: dict[str, int] = field(default_factory=dict)
    quarantine_latest: list[QuarantineStatus] = field(default_factory=list)
    degraded: list[Degraded] = field(default_factory=list)  # what the run works without, and why
    backfill_progress: dict[str, Any] | None = None  # a long backfill under way: its newest progress entry
    ledger: list[LedgerStatus] = field(default_factory=list)  # per account and trade account, "0" first
    accounts: list[AccountStatus] = field(default_factory=list)  # per Bitstamp account with a channel or connection
    writer: Writer | None = None  # SQLite: who holds the file's writer lock now (PostgreSQL: per account)
    # The accounts a running ``tracker run`` has given up as down (``[[accounts]]``), by its process and their places
    # in its file; one whose user is known is also under its ``accounts`` line.
    down: list[AccountDown] = field(default_factory=list)
    # Those it tracks again after a spell down (``back_at``): since when, and why it was down.
    tracked_again: list[AccountDown] = field(default_factory=list)
    # The tasks beside ingest a running ``tracker run`` started again after a bug: how often, the last error.
    task_failures: list[TaskFailure] = field(default_factory=list)
    # The database's size and its disk's free space (``space.py``; read after the snapshot, outside it).
    space: Space = field(default_factory=lambda: Space(None, None, None))

    @property
    def projection_lag(self) -> int | None:
        return None if self.checkpoint is None else max(self.head - self.checkpoint, 0)


def _data(payload: str) -> dict[str, Any]:
    try:
        message = json.loads(payload)
    except ValueError:
        return {}
    data = message.get("data") if isinstance(message, dict) else None
    return data if isinstance(data, dict) else {}


def _head(conn: Connection) -> tuple[int, datetime | None]:
    row = conn.execute(
        select(event_log.c.seq, event_log.c.received_at).order_by(event_log.c.seq.desc()).limit(1)
    ).first()
    return (0, None) if row is None else (int(row.seq), row.received_at)


def _checkpoint(conn: Connection) -> tuple[int | None, datetime | None]:
    query = select(projector_checkpoint.c.seq, projector_checkpoint.c.updated_at).where(
        projector_checkpoint.c.name == CHECKPOINT_NAME
    )
    row = conn.execute(query).first()
    return (None, None) if row is None else (int(row.seq), row.updated_at)


def _connections(
    conn: Connection,
) -> tuple[list[ConnectionStatus], int, ConnectionStatus | None, dict[tuple[str, str], str | None]]:
    """(live connections, how many closed, the newest closed, (account, channel) -> live connection subscribed to
    it)."""
    t = event_log.c
    lifecycle = (t.source == "tracker", t.connection_id.is_not(None), t.event.in_(LIFECYCLE))
    newest = select(func.max(t.seq)).where(*lifecycle).group_by(t.connection_id)
    rows = conn.execute(
        select(t.seq, t.connection_id, t.event, t.received_at, t.payload, t.account).where(
            t.seq.in_(newest.scalar_subquery())
        )
    ).all()
    # Which channels each connection subscribed (its newest `subscribed`), and the newest subscriber of each channel.
    # Keyed by (account, channel): accounts of one log may share a public channel's name.
    subscribed = conn.execute(
        select(t.seq, t.connection_id, t.payload, t.account)
        .where(t.source == "tracker", t.event == te.SUBSCRIBED)
        .order_by(t.seq)
    ).all()
    channels_of: dict[str, tuple[tuple[str, str], ...]] = {}
    newest_subscriber: dict[tuple[str, str], str] = {}
    for row in subscribed:
        channels = tuple(
            (str(row.account), str(c)) for c in _data(row.payload).get("channels", []) if isinstance(c, str)
        )
        channels_of[row.connection_id] = channels
        for channel in channels:
            newest_subscriber[channel] = row.connection_id
    live: list[ConnectionStatus] = []
    closed = 0
    last_closed: ConnectionStatus | None = None
    for lc in sorted(rows, key=lambda r: r.seq):
        data = _data(lc.payload)
        channels = channels_of.get(lc.connection_id, ())
        count = len(channels) or int(data.get("channels", 0) if isinstance(data.get("channels"), int) else 0)
        if lc.event == te.CLOSED:
            closed += 1
            last_closed = ConnectionStatus(
                lc.connection_id,
                "closed",
                lc.received_at,
                lc.seq,
                count,
                str(data.get("reason") or "") or None,
                str(lc.account),
            )
            continue
        if channels and not any(newest_subscriber.get(c) == lc.connection_id for c in channels):
            closed += 1  # killed without a `closed` entry; a newer connection took every channel over
            continue
        live.append(
            ConnectionStatus(
                lc.connection_id, STATE_OF_EVENT[lc.event], lc.received_at, lc.seq, count, account=str(lc.account)
            )
        )
    live_ids = {c.connection_id for c in live}
    # Every channel ever subscribed; mapped to its connection while that one is live.
    channel_conn = {ch: (cid if cid in live_ids else None) for ch, cid in newest_subscriber.items()}
    return live, closed, last_closed, channel_conn


def _channels(
    conn: Connection, channel_conn: dict[tuple[str, str], str | None], states: dict[str, str]
) -> list[ChannelStatus]:
    """Per account and channel, its entries, its newest one and the live connection on it; by channel, then
    account."""
    t = event_log.c
    per_channel = conn.execute(
        select(t.account, t.channel, func.count(), func.max(t.seq))
        .where(t.source == "ws")
        .group_by(t.account, t.channel)
    ).all()
    last_seqs = [int(seq) for _, _, _, seq in per_channel]
    last: dict[int, Any] = {}
    for start in range(0, len(last_seqs), 500):
        chunk = last_seqs[start : start + 500]
        for row in conn.execute(select(t.seq, t.event, t.received_at).where(t.seq.in_(chunk))):
            last[int(row.seq)] = row
    out: dict[tuple[str, str], ChannelStatus] = {}
    for account, channel, count, seq in per_channel:
        newest = last.get(int(seq))
        cid = channel_conn.get((str(account), channel))
        out[str(account), channel] = ChannelStatus(
            channel,
            int(count),
            int(seq),
            newest.event if newest is not None else None,
            newest.received_at if newest is not None else None,
            cid,
            states[cid] if cid else "not subscribed",
            str(account),
        )
    for (account, channel), cid in channel_conn.items():
        if (account, channel) not in out:
            state = states[cid] if cid else "not subscribed"
            out[account, channel] = ChannelStatus(channel, 0, None, None, None, cid, state, account)
    return [out[key] for key in sorted(out, key=lambda key: (key[1], len(key[0]), key[0]))]


def _gaps(conn: Connection) -> tuple[list[GapStatus], int]:
    t = event_log.c
    filled: set[str] = set()
    query = select(t.payload).where(t.source == "tracker", t.event == te.BACKFILL_COMPLETED)
    for (payload,) in conn.execute(query):
        filled.update(str(g) for g in _data(payload).get("gap_ids", []) or [])
    open_gaps: list[GapStatus] = []
    closed = 0
    query = (
        select(t.seq, t.received_at, t.market, t.payload)
        .where(t.source == "tracker", t.event == te.GAP_DETECTED)
        .order_by(t.seq)
    )
    for row in conn.execute(query):
        data = _data(row.payload)
        gap_id = str(data.get("gap_id") or f"seq {row.seq}")
        if gap_id in filled:
            closed += 1
            continue
        trigger = data.get("trigger")
        open_gaps.append(GapStatus(gap_id, int(row.seq), row.received_at, row.market, trigger and str(trigger), False))
    return open_gaps, closed


def _discrepancies(conn: Connection) -> tuple[int, list[dict[str, Any]]]:
    view = VIEWS["v_discrepancies"]
    unresolved = view.c.status == "open"
    count = int(conn.execute(select(func.count()).select_from(view).where(unresolved)).scalar_one())
    rows = conn.execute(select(view).where(unresolved).order_by(view.c.opened_seq.desc()).limit(LATEST_SHOWN))
    return count, [dict(row) for row in rows.mappings()]


def _quarantine(conn: Connection) -> tuple[dict[str, int], list[QuarantineStatus]]:
    q = quarantine.c
    by_kind = {kind: int(n) for kind, n in conn.execute(select(q.kind, func.count()).group_by(q.kind).order_by(q.kind))}
    rows = conn.execute(
        select(q.id, q.kind, q.reason, q.channel, q.received_at).order_by(q.id.desc()).limit(LATEST_SHOWN)
    )
    return by_kind, [QuarantineStatus(int(r.id), r.kind, r.reason, r.channel, r.received_at) for r in rows]


def read_status(engine: Engine) -> Status:
    """Everything ``tracker status`` shows, read in one transaction (a consistent snapshot on both backends)."""
    with engine.connect() as conn, conn.begin():
        head, head_at = _head(conn)
        checkpoint, checkpoint_at = _checkpoint(conn)
        live, closed, last_closed, channel_conn = _connections(conn)
        states = {c.connection_id: c.state for c in live}
        status = Status(
            head=head,
            head_at=head_at,
            checkpoint=checkpoint,
            checkpoint_at=checkpoint_at,
            channels=_channels(conn, channel_conn, states),
            connections=live,
            closed_connections=closed,
            last_closed=last_closed,
        )
        status.gaps_open, status.gaps_closed = _gaps(conn)
        status.discrepancies_open, status.discrepancies = _discrepancies(conn)
        status.quarantine_by_kind, status.quarantine_latest = _quarantine(conn)
        status.degraded, status.backfill_progress = _degraded(conn)
        status.ledger = _ledger(conn)
        status.degraded += _ledger_degraded(conn)
        status.accounts = accounts_of(status.channels, status.connections)
        rows = read_down(conn)
        failures = read_failures(conn)
        known = {a.account for a in status.accounts}
        down_users = {d.user for d in rows if d.user and d.back_at is None}
        status.accounts += [_never_logged(user) for user in sorted(down_users - known)]
        if conn.dialect.name == "postgresql":
            writers = lease_writers(conn, [a.account for a in status.accounts])
            status.accounts = [replace(a, writer=writers[a.account]) for a in status.accounts]
            rows = _live_on_postgresql(conn, rows, writers)
            alive = live_processes(conn, {f.process for f in failures})
            failures = [f for f in failures if f.process in alive]
    if (path := sqlite_path(engine.url)) is not None:
        status.writer = file_writer(path)
        taken_at = file_lock_taken_at(path)
        rows = [d for d in rows if _written_by_holder(d, status.writer, taken_at)]
        failures = [f for f in failures if _written_by_holder(f, status.writer, taken_at)]
    elif engine.dialect.name != "postgresql":
        rows, failures = [], []  # an in-memory database: no process to trust
    status.task_failures = failures
    status.space = read_space(engine)
    status.down = [d for d in rows if d.back_at is None]
    status.tracked_again = [d for d in rows if d.back_at is not None]
    down_of = {d.user: d for d in status.down if d.user}
    status.accounts = [
        replace(a, down=down_of.get(a.account))
        for a in status.accounts
        if a.account in down_of or a.account in known  # an account no entry names shows while it is down only
    ]
    return status


def _written_by_holder(row: AccountDown | TaskFailure, holder: Writer, taken_at: datetime | None) -> bool:
    """SQLite: ``row`` is the word of the process that holds the file's lock now: its pid, written since it took
    the lock (a dead process of the same pid wrote before)."""
    return (
        holder.pid is not None
        and row.pid == holder.pid
        and taken_at is not None
        and row.updated_at is not None
        and row.updated_at >= taken_at
    )


def _never_logged(user: str) -> AccountStatus:
    return AccountStatus(account=user, live_connections=0, channels=0, subscribed=0, entries=0, last_at=None)


def _live_on_postgresql(conn: Connection, down: list[AccountDown], writers: dict[str, Writer]) -> list[AccountDown]:
    """The rows of processes that still hold their own lock (``process_lock_name``: a killed one's is gone), but no
    "down" for an account whose writer lease some process holds: that one tracks it."""
    alive = live_processes(conn, {d.process for d in down})
    return [d for d in down if d.process in alive and not _tracked_elsewhere(d, writers)]


def _tracked_elsewhere(row: AccountDown, writers: dict[str, Writer]) -> bool:
    """A "down" row of an account whose lease a process holds (another one: this one gave it up)."""
    lease = writers.get(row.user) if row.user is not None and row.back_at is None else None
    return lease is not None and held(lease)


def accounts_of(channels: list[ChannelStatus], live: list[ConnectionStatus]) -> list[AccountStatus]:
    """Per Bitstamp account (by user id, numerically), its live connections and channels, from the rest of the
    status: the account that is not connected among several stands out."""
    names = sorted({c.account for c in channels} | {c.account for c in live}, key=lambda a: (len(a), a))
    out = []
    for name in names:
        mine = [c for c in channels if c.account == name]
        times = [c.last_at for c in mine if c.last_at is not None]
        out.append(
            AccountStatus(
                account=name,
                live_connections=sum(1 for c in live if c.account == name),
                channels=len(mine),
                subscribed=sum(1 for c in mine if c.connection is not None),
                entries=sum(c.entries for c in mine),
                last_at=max(times) if times else None,
            )
        )
    return out


def _ledger(conn: Connection) -> list[LedgerStatus]:
    """Per Bitstamp account and trade account: its ``rest_ledger_row`` and ``rest_balances`` entries (count,
    newest), by channel."""
    t = event_log.c
    per_channel = conn.execute(
        select(t.account, t.channel, t.event, func.count(), func.max(t.seq))
        .where(t.source == "rest", t.event.in_((REST_LEDGER_ROW, REST_BALANCES)))
        .group_by(t.account, t.channel, t.event)
    ).all()
    newest = {
        int(row.seq): row
        for row in conn.execute(
            select(t.seq, t.dedup_key, t.received_at).where(t.seq.in_([int(seq) for *_, seq in per_channel]))
        )
    }
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for account, channel, event, count, seq in per_channel:
        tai, _ = split_ledger_channel(channel)
        slot = found.setdefault((str(account), tai), {})
        row = newest.get(int(seq))
        slot[event] = (int(count), row)
    out: list[LedgerStatus] = []
    for account, tai in sorted(found, key=lambda x: (len(x[0]), x[0], len(x[1]), x[1])):
        rows, last_row = found[account, tai].get(REST_LEDGER_ROW, (0, None))
        snapshots, last_snapshot = found[account, tai].get(REST_BALANCES, (0, None))
        out.append(
            LedgerStatus(
                tai,
                rows,
                None if last_row is None else str(last_row.dedup_key).rsplit(":", 1)[-1],
                None if last_row is None else last_row.received_at,
                snapshots,
                None if last_snapshot is None else last_snapshot.received_at,
                account,
            )
        )
    return out


def _ledger_degraded(conn: Connection) -> list[Degraded]:
    """The ledger walks the newest ``reconciled`` entry names as unavailable (until restart) or failing."""
    newest = _latest(conn, te.RECONCILED, 1)
    if not newest:
        return []
    ledger = _data(newest[0].payload).get("ledger")
    if not isinstance(ledger, dict):
        return []
    row = newest[0]
    out = [
        Degraded("endpoint_unavailable", f"ledger {walk}", "unavailable until restart", row.seq, row.received_at)
        for walk in sorted(ledger.get("unavailable") or [])
    ]
    errors = ledger.get("errors") or {}
    out += [
        Degraded("walk_failing", f"ledger {walk}", str(why), row.seq, row.received_at)
        for walk, why in sorted(errors.items())
    ]
    return out


def _latest(conn: Connection, event: str, limit: int = 200) -> list[Any]:
    t = event_log.c
    query = (
        select(t.seq, t.received_at, t.payload, t.connection_id)
        .where(t.source == "tracker", t.event == event)
        .order_by(t.seq.desc())
        .limit(limit)
    )
    return list(conn.execute(query))


def _degraded(conn: Connection) -> tuple[list[Degraded], dict[str, Any] | None]:
    """From the newest ``backfill_completed`` (its ``skipped`` walks: unavailable until restart; its ``errors``:
    failing, retried alone), the channels refused on connections whose newest subscribe still lists them, and the
    markets whose order chain was learned as market-wide. Plus a backfill's progress when it is newer than every
    completion (a long first walk of a real account)."""
    out: list[Degraded] = []
    completed = _latest(conn, te.BACKFILL_COMPLETED, 1)
    last_completed_seq = completed[0].seq if completed else 0
    if completed:
        data = _data(completed[0].payload)
        for walk, why in sorted((data.get("skipped") or {}).items()):
            out.append(Degraded("endpoint_unavailable", walk, str(why), completed[0].seq, completed[0].received_at))
        for walk, why in sorted((data.get("errors") or {}).items()):
            out.append(Degraded("walk_failing", walk, str(why), completed[0].seq, completed[0].received_at))
    refused: dict[str, Degraded] = {}
    for row in reversed(_latest(conn, te.CHANNEL_REFUSED)):
        data = _data(row.payload)
        channel = str(data.get("channel") or "")
        detail = f"{data.get('reason') or 'refused'} ({data.get('refusals')} times); retried alone"
        refused[channel] = Degraded("channel_refused", channel, detail, row.seq, row.received_at)
    for row in _latest(conn, te.SUBSCRIBED):  # a later subscribe of a refused channel ends it
        for channel in _data(row.payload).get("channels") or []:
            if channel in refused and row.seq > refused[channel].seq:
                del refused[channel]
    out += sorted(refused.values(), key=lambda d: d.what)
    for row in reversed(_latest(conn, te.CHAIN_MARKET_WIDE, 50)):
        market = str(_data(row.payload).get("market") or "")
        out.append(Degraded("chain_market_wide", market, "order chain runs market-wide: covered by connection windows",
                            row.seq, row.received_at))  # fmt: skip
    progress = _latest(conn, te.BACKFILL_PROGRESS, 1)
    newest = progress[0] if progress and progress[0].seq > last_completed_seq else None
    return out, (None if newest is None else {**_data(newest.payload), "seq": newest.seq, "at": newest.received_at})
