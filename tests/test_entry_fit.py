"""The append's quick test for entries the event log cannot keep (a text longer than its column, or holding NUL) agrees
with the full one, which says why: ``_maybe_unfit(entry)`` is true exactly when ``_unfit(entry)`` has a reason. The
quick test runs on every entry; were it ever false where ``_unfit`` has a reason, such an entry would reach the
database and make the whole batch fail on PostgreSQL (tests/test_fuzz_ingest.py has the end-to-end cases)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tracker.domain.chain import CANONICAL_COLUMNS
from tracker.domain.log import NewEntry
from tracker.store.event_log import _ENTRY_WIDTHS, _maybe_unfit, _unfit

# Around each column's width (64, 128, 255, ...), with NUL and other characters mixed in.
_LENGTHS = st.sampled_from([0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 254, 255, 256, 600])


@st.composite
def _texts(draw: st.DrawFn) -> str:
    length = draw(_LENGTHS)
    text = "x" * length
    if length and draw(st.booleans()):
        at = draw(st.integers(0, length - 1))
        text = text[:at] + draw(st.sampled_from(["\x00", "é", "\U0001f600", "\\"])) + text[at + 1 :]
    return text


_OPTIONAL = st.none() | _texts()


@given(
    account=_texts(),
    channel=_texts(),
    event=_texts(),
    payload=_texts(),
    dedup_key=_texts(),
    market=_OPTIONAL,
    order_id=_OPTIONAL,
    trade_id=_OPTIONAL,
    position_id=_OPTIONAL,
    event_id=_OPTIONAL,
    pre_event_id=_OPTIONAL,
    connection_id=_OPTIONAL,
)
def test_quick_test_agrees_with_the_reason(**texts: str | None) -> None:
    entry = NewEntry(source="ws", received_at=datetime(2026, 1, 1, tzinfo=UTC), **texts)  # type: ignore[arg-type]
    assert _maybe_unfit(entry) == (_unfit(entry) is not None)


def test_every_text_column_is_tested() -> None:
    """The fields tested are every text field of ``NewEntry`` the event log stores (``source`` included: its check
    constraint limits it further, but the width is tested like any other)."""
    tested = {name for name, _ in _ENTRY_WIDTHS}
    assert tested == set(CANONICAL_COLUMNS) - {"seq", "exchange_ts_us", "received_at"}  # every stored text
