from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.bitstamp.ledger_channels import MAIN, is_trade_account_id, ledger_channel, split_ledger_channel


def test_main_account_keeps_the_bare_endpoint() -> None:
    assert ledger_channel("user_transactions/", MAIN) == "user_transactions/"
    assert split_ledger_channel("user_transactions/") == ("0", "user_transactions/")


def test_sub_account_channel() -> None:
    channel = ledger_channel("account_balances/", "1234")
    assert channel == "subaccount/1234/account_balances/"
    assert split_ledger_channel(channel) == ("1234", "account_balances/")


@pytest.mark.parametrize("bad", ["", "-1", "01", "abc", "1 2", "1" * 20])
def test_bad_ids_are_refused(bad: str) -> None:
    assert not is_trade_account_id(bad)
    with pytest.raises(ValueError):
        ledger_channel("user_transactions/", bad)


@given(st.integers(min_value=0, max_value=10**18), st.sampled_from(["user_transactions/", "withdrawal-requests/"]))
def test_round_trip(tai: int, endpoint: str) -> None:
    assert split_ledger_channel(ledger_channel(endpoint, str(tai))) == (str(tai), endpoint)
