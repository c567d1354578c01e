"""Gap detection and REST cursors (pure): what may have been missed, and how to walk a paged endpoint safely.

Three independent pieces, all incremental folds or pure functions over plain values:

- ``ChainTracker``: the ``pre_event_id`` chain of each ``private-my_orders_<market>`` stream. Its scope on private
  channels is undocumented (docs/bitstamp.md §2.1): per market or per (market, order_source). Like the projection, a
  break is reported only when ``pre_event_id`` matches neither the last ``event_id`` of the (market, source) stream
  nor the last one of the market-wide stream, which is right under either reading.
- ``CoverageTracker``: from the connection lifecycle (``subscribed``, ``closed``, ``stalled``,
  ``reconnect_requested``) the windows in which a channel was not live, or live but not trusted (a stall, or a
  server-requested reconnect until the replacement is subscribed). Every such window is a *potential* gap.
- ``advance``: one step of an inclusive-cursor walk (``user_transactions/`` ``since_id``, ``account_order_data/``
  ``since_id``): drops the repeated first row (and anything not newer than the cursor), moves the cursor, and says when
  to stop. A page that brings nothing new stops the walk, so a server repeating a page cannot loop us forever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Generic, TypeVar

from tracker.domain import tracker_events as te

ALL_SOURCES: Final = "*"
EVENT_ID_LENGTH: Final = 36
K = TypeVar("K", bound=Hashable)

# --- the pre_event_id chain -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """``pre_event_id`` of an event did not name the last event seen on its stream: events in between were missed."""

    account: str
    market: str
    order_source: str
    expected: str  # the last event_id seen on the stream (per source, else market-wide)
    pre_event_id: str
    event_id: str
    seq: int | None = None


@dataclass
class ChainTracker:
    """Follows the chain per (account, market, order_source) and per (account, market). The first event of a stream
    after start-up is never a break (the start-up window is a gap of its own); nor is the first event of an order
    source on a market (under the per-source reading it starts its own chain)."""

    last: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def observe(
        self,
        account: str,
        market: str,
        order_source: str | None,
        event_id: str,
        pre_event_id: str | None,
        seq: int | None = None,
    ) -> ChainBreak | None:
        source_key = (account, market, order_source or "")
        market_key = (account, market, ALL_SOURCES)
        by_source = self.last.get(source_key)
        by_market = self.last.get(market_key)
        if event_id in (by_source, by_market):
            return None  # the same frame again (a duplicate) is not a break
        # The first event of a (market, source) stream may start a chain of its own: not judged.
        broken = pre_event_id is not None and by_source is not None and pre_event_id not in (by_source, by_market)
        self.last[source_key] = event_id
        self.last[market_key] = event_id
        if not broken or pre_event_id is None:
            return None
        return ChainBreak(
            account, market, order_source or "", by_source or by_market or "", pre_event_id, event_id, seq
        )


def chain_breaks(
    events: Iterable[tuple[str, str, str | None, str, str | None]],
) -> list[ChainBreak]:
    """Every break in ``(account, market, order_source, event_id, pre_event_id)`` items, in order."""
    tracker = ChainTracker()
    found = []
    for account, market, source, event_id, pre in events:
        brk = tracker.observe(account, market, source, event_id, pre)
        if brk is not None:
            found.append(brk)
    return found


# --- coverage windows -----------------------------------------------------------------------------------------------

GapReason = str  # "start-up" | "closed" | "stalled" | "reconnect"


@dataclass(frozen=True, slots=True)
class Window:
    """A time window in which ``channels`` were not (trustworthily) live. ``start`` None: since the beginning."""

    start: datetime | None
    end: datetime
    reason: GapReason
    channels: tuple[str, ...]
    detail: str = ""

    def as_data(self) -> dict[str, Any]:
        return {
            "start": None if self.start is None else self.start.isoformat(),
            "end": self.end.isoformat(),
            "reason": self.reason,
            "channels": list(self.channels),
            "detail": self.detail,
        }


@dataclass
class _Suspect:
    since: datetime | None
    reason: GapReason
    detail: str


@dataclass
class CoverageTracker:
    """Incremental fold over lifecycle entries → closed ``Window``s.

    - ``subscribed(conn, channels)``: those channels are live on ``conn``; an open window on any of them closes.
    - ``stalled(conn)`` / ``reconnect_requested(conn)``: the connection is no longer trusted; its channels are suspect
      from ``since`` (the last frame heard on it for a stall, when known) until another connection subscribes them.
    - ``closed(conn)``: its channels not live on another connection open a window.
    - ``start_up(channels, since)``: a process start: every channel is suspect since the last entry of the previous run.
    """

    conn_channels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    live: dict[str, set[str]] = field(default_factory=dict)  # channel -> trusted live connections
    suspect: dict[str, _Suspect] = field(default_factory=dict)

    def start_up(self, channels: Iterable[str], since: datetime | None, detail: str = "") -> None:
        for channel in channels:
            if not self.live.get(channel):
                self.suspect.setdefault(channel, _Suspect(since, "start-up", detail))

    def subscribed(self, conn: str, channels: Sequence[str], at: datetime) -> list[Window]:
        self.conn_channels[conn] = tuple(channels)
        closing: dict[tuple[datetime | None, str, str], list[str]] = {}
        for channel in channels:
            self.live.setdefault(channel, set()).add(conn)
            sus = self.suspect.pop(channel, None)
            if sus is not None:
                closing.setdefault((sus.since, sus.reason, sus.detail), []).append(channel)
        return [
            Window(since, at, reason, tuple(sorted(chs)), detail)
            for (since, reason, detail), chs in sorted(closing.items(), key=lambda kv: (kv[0][0] is not None, kv[0]))
        ]

    def _distrust(self, conn: str, since: datetime, reason: GapReason, detail: str, *, only_if_alone: bool) -> None:
        for channel in self.conn_channels.get(conn, ()):
            conns = self.live.get(channel)
            if conns is not None:
                conns.discard(conn)
            if only_if_alone and conns:
                continue
            if channel not in self.suspect:
                self.suspect[channel] = _Suspect(since, reason, detail)

    def stalled(self, conn: str, since: datetime, detail: str = "") -> None:
        self._distrust(conn, since, "stalled", detail, only_if_alone=False)

    def reconnect_requested(self, conn: str, at: datetime) -> None:
        self._distrust(conn, at, "reconnect", "requested by the server", only_if_alone=False)

    def closed(self, conn: str, at: datetime, detail: str = "") -> None:
        self._distrust(conn, at, "closed", detail, only_if_alone=True)
        self.conn_channels.pop(conn, None)

    def open_windows(self, now: datetime) -> list[Window]:
        """Windows still open at ``now`` (channels not live again yet)."""
        grouped: dict[tuple[datetime | None, str, str], list[str]] = {}
        for channel, sus in self.suspect.items():
            grouped.setdefault((sus.since, sus.reason, sus.detail), []).append(channel)
        return [
            Window(since, now, reason, tuple(sorted(chs)), detail) for (since, reason, detail), chs in grouped.items()
        ]


def uncovered_windows(
    lifecycle: Iterable[tuple[str, str, Sequence[str], datetime]],
    *,
    start_up: tuple[Sequence[str], datetime | None] | None = None,
) -> list[Window]:
    """Closed windows of ``(kind, connection_id, channels, at)`` lifecycle items (channels used on ``subscribed``)."""
    cov = CoverageTracker()
    if start_up is not None:
        cov.start_up(start_up[0], start_up[1])
    out: list[Window] = []
    for kind, conn, channels, at in lifecycle:
        if kind == "subscribed":
            out.extend(cov.subscribed(conn, channels, at))
        elif kind == "stalled":
            cov.stalled(conn, at)
        elif kind == "reconnect_requested":
            cov.reconnect_requested(conn, at)
        elif kind == "closed":
            cov.closed(conn, at)
    return out


# --- inclusive cursors ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step(Generic[K]):
    """One page of a walk, judged. ``fresh``: indices of rows newer than the cursor (first occurrence only)."""

    fresh: tuple[int, ...]
    cursor: K | None
    done: bool
    stuck: bool  # the page brought nothing new although it was not empty (a repeated page)


def advance(
    cursor: K | None,
    keys: Sequence[K],
    *,
    limit: int,
    order: Callable[[K], Any] = lambda k: k,
    seen: set[K] | None = None,
) -> Step[K]:
    """Judge one page of an inclusive ``since`` walk (rows sorted ascending by ``order``).

    Rows whose key equals the cursor or sorts before it are the inclusive repeat (or a server misstep) and are
    dropped, as are keys in ``seen`` (updated in place) and repeats within the page. The next cursor is the greatest
    key of the page; the walk is done when the page was short (``< limit``) or brought nothing new, so a server that
    answers the same page again ends the walk instead of looping.
    """
    fresh: list[int] = []
    best = cursor
    for i, key in enumerate(keys):
        if cursor is not None and (key == cursor or order(key) < order(cursor)):
            continue
        if seen is not None:
            if key in seen:
                continue
            seen.add(key)
        elif any(keys[j] == key for j in fresh):
            continue
        fresh.append(i)
        if best is None or order(key) > order(best):
            best = key
    stuck = bool(keys) and not fresh
    done = len(keys) < limit or not fresh or best == cursor
    return Step(tuple(fresh), best, done, stuck)


def forget_passed(seen: set[K], cursor: K | None, *, order: Callable[[K], Any] = lambda k: k) -> None:
    """Drop from a walk's ``seen`` (in place) the keys sorting before ``cursor``: ``advance`` drops those rows by
    their order alone, so ``seen`` stays bounded by a page instead of growing with the walk. The cursor's own key is
    kept (a walk may use it to recognise the inclusive repeat of the cursor row)."""
    if cursor is None:
        return
    bound = order(cursor)
    passed = [key for key in seen if order(key) < bound]
    seen.difference_update(passed)


def event_id_order(event_id: str) -> tuple[int, str]:
    """Sort key for MarketEventIDs: well-formed ids (36 chars, hex time first) by text, malformed ones first."""
    return (1 if len(event_id) == EVENT_ID_LENGTH else 0, event_id)


def event_id_at(us: int) -> str:
    """The smallest MarketEventID at unix microsecond ``us`` (its leading 16 hex digits are the time in µs):
    a ``since_id`` for "from this moment" (used for the first walk, which otherwise defaults to the last 24 h)."""
    h = f"{max(us, 0):016x}{0:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- the watch: signals folded into windows and breaks ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderChainSignal:
    """An order-stream event's place in its ``pre_event_id`` chain (read from a logged my_orders frame)."""

    account: str
    market: str
    order_source: str | None
    event_id: str
    pre_event_id: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class LifecycleSignal:
    """A connection lifecycle entry tracker logged (``subscribed``, ``stalled``, ``reconnect_requested``,
    ``closed``), with the fields of its data the coverage needs."""

    event: str
    connection_id: str
    received_at: datetime
    channels: tuple[str, ...] = ()
    silent_for_s: float | None = None
    reason: str = ""


GapSignal = OrderChainSignal | LifecycleSignal


MARKET_WIDE_AFTER: Final = 3  # breaks in a row with the connection up, in one market: its chain is market-wide
RECENT_EVENT_IDS: Final = 1024  # event ids remembered per market: a pre_event_id among them is no break


@dataclass
class _Recent:
    """The last ``RECENT_EVENT_IDS`` event ids of a market (bounded: a deque for the order, a set to look up)."""

    order: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_EVENT_IDS))
    ids: set[str] = field(default_factory=set)

    def add(self, event_id: str) -> None:
        if event_id in self.ids:
            return
        if len(self.order) == self.order.maxlen:
            self.ids.discard(self.order[0])
        self.order.append(event_id)
        self.ids.add(event_id)


@dataclass
class GapWatch:
    """Folds the log's signals into windows not live and chain breaks (pure state; the backfill task feeds it the
    signals ``tracker.bitstamp.signals.gap_signal`` reads from the log, and takes what accumulated).

    **A market-wide chain is learned, not assumed.** The public ``live_orders`` chain runs over every user's events
    (docs/bitstamp.md §2.1); if the private one does too, our stream's ``pre_event_id`` names events we never see and
    nearly every event looks like a break. A break between two events with no lifecycle change in between (the
    connection never dropped, stalled or was replaced) cannot be a transport loss; after ``MARKET_WIDE_AFTER`` of
    them in a row in a market, its chain is taken as market-wide (``market_wide``, reported once through
    ``take_learned``) and its breaks are no longer reported: the connection windows cover that stream, as for every
    other channel.

    *In a row*: an event that links to the one before (or any event that is no break) starts the count again. A
    market-wide chain breaks on nearly every event of a busy market, while frames withheld with the connection up
    (the server pausing delivery, then going on) break a per-account chain once and then link again. Counting breaks
    in total, three such pauses in a run taught a per-account chain to be market-wide, and the fills withheld by
    every later pause stayed missing until the next full walk (the periodic reconciliation): found by the soak with
    a fault every ~3 s.

    *A pre_event_id already seen is no break.* While two connections deliver the same streams (make-before-break:
    the old one drains its queue while the new one is subscribed), their frames interleave in the log: an older event
    after a newer one, then a newer one again. Each names an event that was logged, only not the last one, so nothing
    is missing between them; judged against the last event alone they were three quiet breaks in a row, the market
    was learned market-wide and the breaks of every later loss in it were ignored (fills lost until the next full
    walk; found by the soak with reconciliation off). Such an event is treated as linked."""

    account: str
    coverage: CoverageTracker = field(default_factory=CoverageTracker)
    chain: ChainTracker = field(default_factory=ChainTracker)
    windows: list[Window] = field(default_factory=list)
    breaks: list[ChainBreak] = field(default_factory=list)
    reconnects: int = 0
    market_wide: set[str] = field(default_factory=set)
    lifecycle_changes: int = 0
    _lifecycle_at: dict[str, int] = field(default_factory=dict)  # market -> lifecycle_changes at its last event
    _connected_breaks: dict[str, int] = field(default_factory=dict)
    _recent: dict[str, _Recent] = field(default_factory=dict)  # market -> its recently logged event ids
    _learned: list[str] = field(default_factory=list)

    def feed(self, signal: GapSignal) -> None:
        if isinstance(signal, OrderChainSignal):
            self._order_event(signal)
            return
        self.lifecycle_changes += 1
        conn = signal.connection_id
        if signal.event == te.SUBSCRIBED:
            self.windows.extend(self.coverage.subscribed(conn, list(signal.channels), signal.received_at))
            self.reconnects += 1
        elif signal.event == te.STALLED:
            since = signal.received_at
            if signal.silent_for_s is not None:
                since -= timedelta(seconds=signal.silent_for_s)
            self.coverage.stalled(conn, since, "no frame after a heartbeat")
        elif signal.event == te.RECONNECT_REQUESTED:
            self.coverage.reconnect_requested(conn, signal.received_at)
        elif signal.event == te.CLOSED:
            self.coverage.closed(conn, signal.received_at, signal.reason)

    def _order_event(self, signal: OrderChainSignal) -> None:
        market = signal.market
        quiet = self._lifecycle_at.get(market) == self.lifecycle_changes  # nothing happened to the connections
        self._lifecycle_at[market] = self.lifecycle_changes
        brk = self.chain.observe(
            signal.account, market, signal.order_source, signal.event_id, signal.pre_event_id, signal.seq
        )
        recent = self._recent.setdefault(market, _Recent())
        if brk is not None and brk.pre_event_id in recent.ids:
            brk = None  # it follows an event that was logged, only not last: frames of two connections interleaved
        recent.add(signal.event_id)
        if brk is None:
            self._connected_breaks.pop(market, None)  # linked (or a duplicate, or a stream's first): not in a row
            return
        if market in self.market_wide:
            return
        if quiet:
            self._connected_breaks[market] = self._connected_breaks.get(market, 0) + 1
            if self._connected_breaks[market] >= MARKET_WIDE_AFTER:
                self.market_wide.add(market)
                self._learned.append(market)
        self.breaks.append(brk)

    def take_learned(self) -> list[str]:
        """Markets newly judged to have a market-wide chain (each reported once)."""
        out, self._learned = self._learned, []
        return out

    def take(self) -> tuple[list[Window], list[ChainBreak], int]:
        """What accumulated since the last ``take``: (windows, breaks, subscriptions seen)."""
        out = (self.windows, self.breaks, self.reconnects)
        self.windows, self.breaks, self.reconnects = [], [], 0
        return out
