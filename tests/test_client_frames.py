"""The frames the tracker sends (docs/bitstamp.md §1.2), against the repository's samples."""

from __future__ import annotations

import json

import pytest
from bitstamp_samples import load

from tracker.bitstamp.subscriptions import HEARTBEAT_FRAME, subscribe_frame, unsubscribe_frame

SENT = {json.dumps(w["message"], sort_keys=True) for w in load("ws_client_requests.json")}


def _known(frame: str) -> bool:
    return json.dumps(json.loads(frame), sort_keys=True) in SENT


def test_frames_match_the_samples() -> None:
    assert _known(HEARTBEAT_FRAME)
    assert _known(subscribe_frame("live_trades_btcusd", None))
    assert _known(subscribe_frame("private-my_orders_btcusd-314159", "Zq3tV8wLpR0aN5yBc7dHk2sXf9GmJ4uE"))
    assert _known(unsubscribe_frame("private-my_orders_btcusd-314159"))


@pytest.mark.parametrize("channel", ["live_trades_btcusd", "private-my_trades_btcusd-perp-314159", 'odd"\\name'])
def test_unsubscribe_frame(channel: str) -> None:
    frame = unsubscribe_frame(channel)
    assert json.loads(frame) == {"event": "bts:unsubscribe", "data": {"channel": channel}}
    assert " " not in frame.replace(channel, "")  # compact: client frames must stay under 512 bytes (§1.2)


def test_longest_private_frames_fit_the_size_cap() -> None:
    channel = "private-my_token_settlements-" + "9" * 20
    assert len(subscribe_frame(channel, "x" * 64).encode()) < 512
    assert len(unsubscribe_frame(channel).encode()) < 512
