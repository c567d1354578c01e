from __future__ import annotations

import pytest

from tracker.bitstamp.channels import Channel, channels_for, is_valid_market, parse_channel, private_channel


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("private-my_trades_btcusd-perp-314159", Channel("my_trades", "btcusd-perp", "314159", True)),
        ("private-my_orders_btcusd-1234", Channel("my_orders", "btcusd", "1234", True)),
        ("private-my_settlements-314159", Channel("my_settlements", None, "314159", True)),
        ("private-my_liquidations-314159", Channel("my_liquidations", None, "314159", True)),
        ("private-my_token_settlements-1", Channel("my_token_settlements", None, "1", True)),
        ("private-live_order_trades_ethusdt-4416057", Channel("live_order_trades", "ethusdt", "4416057", True)),
        ("live_trades_btcusd", Channel("live_trades", "btcusd", None, False)),
        ("order_book_btcusd-perp", Channel("order_book", "btcusd-perp", None, False)),
        ("detail_order_book_btcusd", Channel("detail_order_book", "btcusd", None, False)),
        ("announcements", Channel("announcements", None, None, False)),
    ],
)
def test_parse_channel(text: str, expected: Channel) -> None:
    assert parse_channel(text) == expected
    assert str(parse_channel(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "private-my_trades_btcusd",  # no user id
        "private-my_trades_btcusd-",
        "private-my_trades-abc",
        "order_book_BTCUSD-PERP",
        "order_book_BTC/USD",
        "orderbook",
        "private-_btcusd-1",
        "live_trades_",
    ],
)
def test_parse_channel_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_channel(text)


def test_private_channel() -> None:
    assert private_channel("my_trades", "314159", "btcusd-perp") == "private-my_trades_btcusd-perp-314159"
    assert private_channel("my_settlements", "314159") == "private-my_settlements-314159"
    with pytest.raises(ValueError):
        private_channel("my_trades", "314159")
    with pytest.raises(ValueError):
        private_channel("my_settlements", "314159", "btcusd")
    with pytest.raises(ValueError):
        private_channel("my_trades", "314159", "BTCUSD")


def test_channels_for() -> None:
    assert channels_for(["btcusd", "btcusd-perp", "btcusd"], "7") == [
        "private-my_orders_btcusd-7",
        "private-my_trades_btcusd-7",
        "private-live_trades_btcusd-7",
        "private-my_orders_btcusd-perp-7",
        "private-my_trades_btcusd-perp-7",
        "private-live_trades_btcusd-perp-7",
        "private-my_settlements-7",
        "private-my_liquidations-7",
    ]
    extras = channels_for(["btcusd"], "7", extras=True)
    assert "private-live_order_trades_btcusd-7" in extras
    assert "private-my_token_settlements-7" in extras
    for name in extras:
        assert parse_channel(name).user_id == "7"


def test_market_validation() -> None:
    assert is_valid_market("btcusd-perp")
    assert not is_valid_market("BTCUSD")
    assert not is_valid_market("btc/usd")
    assert not is_valid_market("btcusd-")
