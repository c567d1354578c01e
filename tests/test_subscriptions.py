"""The pure subscribe state machine: acks, channel-less errors tied to the oldest outstanding subscribe, timeouts."""

from __future__ import annotations

import json

import pytest

from tracker.bitstamp.subscriptions import HEARTBEAT_FRAME, SubscriptionBook, subscribe_frame


def test_in_flight_limit_and_ack_order() -> None:
    book = SubscriptionBook(["a", "b", "c"], max_in_flight=2)
    assert book.next_to_send(0.0) == "a"
    assert book.next_to_send(0.0) == "b"
    assert book.next_to_send(0.0) is None
    assert book.on_ack("b")
    assert book.next_to_send(0.1) == "c"
    assert not book.on_ack("zzz")
    assert book.on_ack("a") and book.on_ack("c")
    assert book.done and book.acked == ["b", "a", "c"]
    assert not book.on_ack("a")  # a duplicate ack is harmless


def test_error_goes_to_oldest_outstanding_and_retry_requeues() -> None:
    book = SubscriptionBook(["a", "b"], max_in_flight=2)
    book.next_to_send(0.0)
    book.next_to_send(0.0)
    failure = book.on_error(4009, "Connection is unauthorized.")
    assert failure is not None and failure.channel == "a" and failure.unauthorized
    assert book.on_error(None, "Bad subscription string.").channel == "b"  # type: ignore[union-attr]
    assert book.on_error(None, "x") is None
    book.retry("a")
    assert book.next_to_send(1.0) == "a"
    assert not book.done


def test_ack_timeout() -> None:
    book = SubscriptionBook(["a", "b"], max_in_flight=2, ack_timeout=5.0)
    book.next_to_send(0.0)
    book.next_to_send(1.0)
    assert book.next_deadline() == 5.0
    assert book.expire(4.9) == []
    [failure] = book.expire(5.0)
    assert failure.channel == "a" and failure.code is None and "5 s" in failure.reason
    assert book.next_deadline() == 6.0
    assert [f.channel for f in book.expire(100.0)] == ["b"]
    assert book.next_deadline() is None


def test_duplicate_channels_collapse() -> None:
    book = SubscriptionBook(["a", "a", "b"], max_in_flight=8)
    assert [book.next_to_send(0.0), book.next_to_send(0.0), book.next_to_send(0.0)] == ["a", "b", None]


@pytest.mark.parametrize("channel", ["private-my_trades_btcusd-perp-314159", "private-my_liquidations-314159"])
def test_frames_are_one_channel_and_small(channel: str) -> None:
    frame = subscribe_frame(channel, "t" * 32)
    assert json.loads(frame) == {"event": "bts:subscribe", "data": {"channel": channel, "auth": "t" * 32}}
    assert len(frame.encode()) < 512
    assert json.loads(HEARTBEAT_FRAME) == {"event": "bts:heartbeat"}


def test_max_in_flight_validated() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        SubscriptionBook([], max_in_flight=0)
