"""The fake account's movements beside trading (pure, seeded): deposits, withdrawals with their requests and on-chain
rows, staking, rewards, transfers between trade accounts, instant buys and an unknown type code.

:class:`Movements` draws from a generator of its own (seeded from the model's seed), so the trading story of a seed
(orders, fills, settlements) is what it always was; only the ids and times around it shift. It runs once per model
step: before the step's action it funds the accounts (the first step) and tops up a main balance that runs low (a
fill never takes the balance below zero); after it, it moves the open withdrawal requests and staked amounts along,
and with probability :data:`MOVEMENT_RATE` makes one new movement (about 75 in a 30 s demo at 20 frames/s, some 300
steps). Every row goes through :func:`tracker.fake.ledger.book_row`, so each trade account's balances are the sum
of its ledger.

The shapes (docs/fake.md, /tmp/spec-ledger.md; confidence in brackets):

- ``user_transactions`` types: 0 deposit, 1 withdrawal (amount negative, ``fee`` separate, in that currency), 14 one
  transfer between trade accounts as two rows with different ids, 25/26/27 staking, 32 referral reward, 35 inter
  account transfer, 36 instant buy (two currencies, a pair-rate key and a fee in the quote currency [G]), 99 a code
  the spec does not list [G]. ``type`` is written as a string or an integer, drawn per row [S: seen both ways].
- A withdrawal request moves 0 open → 1 in process (its ledger row is written: ``txid`` = that row's id [G, medium])
  → 2 finished (a crypto withdrawal gets its ``crypto-transactions/`` row and ``transaction_id`` = the on-chain hash
  [G, medium]). Cancelled (3) and failed (4) requests never reach the ledger [G]. A reversed one (11) keeps its
  withdrawal row and gets a compensating deposit-type row returning the amount; the fee is kept [G, low].
- Staked assets leave the balance (26, negative) and come back with 25; rewards (27) are credited [G: the spec's
  ``account_balances`` has no staked field].
- Crypto deposits and withdrawals happen on the main account only (``crypto-transactions/`` is main-account only);
  sub-accounts get fiat deposits and withdrawals, transfers, instant buys and the unknown code [G].
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from tracker.fake import ledger
from tracker.fake.ids import IdSource
from tracker.fake.ledger import FIAT, places
from tracker.fake.markets import Market
from tracker.fake.state import ZERO, AccountState, TradeAccount, WithdrawalRequest
from tracker.fake.wire import num, rest_datetime

SAT = Decimal("1e-8")
MOVEMENT_RATE = 0.25  # chance of one new movement per model step
OPENING = {"btc": "50", "eth": "500", "usd": "5000000", "eur": "2000000", "xrp": "1000000"}  # main account
SUB_SHARE = Decimal("0.1")  # a sub-account is funded with this share of the main account's opening balances
TOP_UP_BELOW = Decimal("0.4")  # a main balance under this share of its opening gets a deposit before the next step
UNIT = {"btc": Decimal(1), "eth": Decimal(10), "xrp": Decimal(10000), "usd": Decimal(10000), "eur": Decimal(10000)}
NETWORKS = {"btc": "bitcoin", "eth": "ethereum", "xrp": "ripple"}
# withdrawal-requests ``type``: the method or currency code of the spec's list (0 SEPA, 2 WIRE, 1 BTC, 16 ETH, 14 XRP)
REQUEST_TYPES = {"eur": 0, "usd": 2, "gbp": 2, "btc": 1, "eth": 16, "xrp": 14}
OUTCOMES = (("finished", 55), ("cancelled", 15), ("failed", 10), ("reversed", 20))
OPEN, IN_PROCESS, FINISHED, CANCELLED, FAILED, REVERSED = 0, 1, 2, 3, 4, 11
DEPOSIT, WITHDRAWAL, SUBACCOUNT_TRANSFER = "0", "1", "14"
STAKING_CREDIT, STAKING_SENT, STAKING_REWARD = "25", "26", "27"
REFERRAL_REWARD, INTER_ACCOUNT_TRANSFER, INSTANT_TRADE, UNKNOWN_TYPE = "32", "35", "36", "99"


@dataclass(slots=True)
class Stake:
    account: TradeAccount
    currency: str
    amount: Decimal
    due_step: int
    rewarded: bool = False


class Movements:
    """The movements of one account's trade accounts; :meth:`before_step` and :meth:`after_step` around each model
    step."""

    def __init__(self, state: AccountState, ids: IdSource, seed: int) -> None:
        self.state = state
        self.ids = ids
        self.rng = random.Random(seed * 7_919 + 15)
        self.step_no = 0
        self._request_id = 3_100_000 + self.rng.randint(0, 999)
        self._requests: list[tuple[TradeAccount, WithdrawalRequest]] = []  # not yet final
        self._stakes: list[Stake] = []
        self._funded = False  # continue_books: an earlier run's balances, no opening deposits
        currencies = state.currencies()
        self.crypto = [c for c in currencies if c not in FIAT]
        self.fiat = [c for c in currencies if c in FIAT]
        self.spot = [m for m in state.markets if not m.perp]
        self.deposit_addresses = {c: self._address(c) for c in self.crypto}  # the main account's, one per currency

    def continue_books(self, balances: Mapping[str, Mapping[str, Decimal]], *, request_id_after: int = 0) -> None:
        """Continue an earlier run's books (the demo on an existing database): each trade account starts from the
        balances that run left (``{trade account: {currency: balance}}``) instead of being funded afresh, and
        withdrawal request ids move past ``request_id_after``. The balances stay the sum of the whole ledger: the
        earlier rows are in the tracker's log, this run's rows add to them."""
        for tai, books in balances.items():
            account = self.state.accounts.get(tai)
            if account is None:
                continue
            for c, amount in books.items():
                if c in account.balances:
                    account.balances[c] = amount
        self._funded = True
        self._request_id = max(self._request_id, request_id_after + 1)

    # ------------------------------------------------------------------ around a step
    def before_step(self) -> None:
        self.step_no += 1
        if self.step_no == 1 and not self._funded:
            self._fund()
        main = self.state.main
        for c in self.state.currencies():
            opening = _opening(c)
            if main.balances[c] < opening * TOP_UP_BELOW:
                self._deposit(main, c, opening)

    def after_step(self) -> None:
        self._advance_requests()
        self._advance_stakes()
        if self.rng.random() >= MOVEMENT_RATE:
            return
        kinds: list[tuple[Callable[[], bool], int]] = [
            (self._crypto_deposit, 3),
            (self._fiat_deposit, 2),
            (self._crypto_withdrawal, 5),
            (self._fiat_withdrawal, 2),
            (self._stake, 2),
            (self._referral, 2),
            (self._subaccount_transfer, 2),
            (self._inter_account, 2),
            (self._instant_buy, 2),
            (self._unknown, 2),
        ]
        kind = self.rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        if not kind() and not self._fiat_deposit():
            self._crypto_deposit()

    # ------------------------------------------------------------------ helpers
    def _book(
        self,
        account: TradeAccount,
        typ: str,
        moves: dict[str, Decimal],
        *,
        fee: Decimal = ZERO,
        rate: tuple[Market, Decimal] | None = None,
    ) -> int:
        t = self.ids.tick(self.rng)
        row_id = self.ids.transaction(self.rng)
        type_value: str | int = typ if self.rng.random() < 0.5 else int(typ)
        ledger.book_row(self.state, account, row_id, t, type_value, moves, self.rng, fee=fee, rate=rate)
        return row_id

    def _amount(self, c: str, lo: int = 1, hi: int = 2000) -> Decimal:
        unit = UNIT.get(c, Decimal(100))
        return (unit * self.rng.randint(lo, hi) / 10_000).quantize(Decimal(1).scaleb(-places(c)))

    def _outflow(self, account: TradeAccount, c: str) -> Decimal:
        """An amount ``account`` can send out of ``c`` (at most a fifth of its balance), or 0."""
        cap = (max(account.balances[c], ZERO) / 5).quantize(Decimal(1).scaleb(-places(c)), ROUND_DOWN)
        return min(self._amount(c), cap)

    def _fee(self, c: str) -> Decimal:
        share = Decimal("0.0005") if c in FIAT else Decimal("0.0001")
        return (UNIT.get(c, Decimal(100)) * share).quantize(Decimal(1).scaleb(-places(c)))

    def _account(self, *, main_only: bool = False) -> TradeAccount:
        if main_only:
            return self.state.main
        return self.state.accounts[self.rng.choice(sorted(self.state.accounts))]

    def _hash(self) -> str:
        return f"{self.rng.getrandbits(256):064x}"

    def _address(self, c: str) -> str:
        if c == "eth":
            return f"0x{self.rng.getrandbits(160):040x}"
        if c == "btc":
            return "bc1q" + "".join(self.rng.choices("023456789acdefghjklmnpqrstuvwxyz", k=38))
        return f"r{self.rng.getrandbits(128):032x}"

    def _crypto_row(self, c: str, amount: Decimal, address: str, txid: str) -> dict[str, Any]:
        """A ``crypto-transactions/`` row (spec ``CryptoTransaction`` [D]): ``amount`` a JSON number, positive in both
        lists [G], ``datetime`` integer unix seconds [D: typed integer]."""
        return {
            "currency": c.upper(),
            "network": NETWORKS.get(c, c),
            "destinationAddress": address,
            "txid": txid,
            "amount": num(amount),
            "datetime": self.ids.now_us // 1_000_000,
        }

    # ------------------------------------------------------------------ funding
    def _fund(self) -> None:
        """Opening deposits on the main account, then a share of each currency transferred to every sub-account."""
        main = self.state.main
        for c in self.state.currencies():
            self._deposit(main, c, _opening(c))
        for tai in self.state.subaccounts:
            for c in self.state.currencies():
                self._transfer(main, self.state.accounts[tai], c, _opening(c) * SUB_SHARE)

    def _deposit(self, account: TradeAccount, c: str, amount: Decimal) -> None:
        if c in FIAT or account is not self.state.main:
            self._book(account, DEPOSIT, {c: amount})
            return
        self._book(account, DEPOSIT, {c: amount})
        row = self._crypto_row(c, amount, self.deposit_addresses[c], self._hash())
        self.state.crypto["deposits"].append((self.ids.now_us, row))

    def _transfer(self, source: TradeAccount, target: TradeAccount, c: str, amount: Decimal) -> None:
        """Type 14: one movement, two rows (one in each trade account's ledger), two ids."""
        self._book(source, SUBACCOUNT_TRANSFER, {c: -amount})
        self._book(target, SUBACCOUNT_TRANSFER, {c: amount})

    # ------------------------------------------------------------------ movements (False: not possible now)
    def _crypto_deposit(self) -> bool:
        if not self.crypto:
            return False
        c = self.rng.choice(self.crypto)
        self._deposit(self.state.main, c, self._amount(c))
        return True

    def _fiat_deposit(self) -> bool:
        if not self.fiat:
            return False
        c = self.rng.choice(self.fiat)
        self._deposit(self._account(), c, self._amount(c))
        return True

    def _crypto_withdrawal(self) -> bool:
        return bool(self.crypto) and self._request(self.state.main, self.rng.choice(self.crypto), crypto=True)

    def _fiat_withdrawal(self) -> bool:
        return bool(self.fiat) and self._request(self._account(), self.rng.choice(self.fiat), crypto=False)

    def _stake(self) -> bool:
        if not self.crypto:
            return False
        main, c = self.state.main, self.rng.choice(self.crypto)
        amount = self._outflow(main, c)
        if amount <= 0:
            return False
        self._book(main, STAKING_SENT, {c: -amount})
        self._stakes.append(Stake(main, c, amount, self.step_no + self.rng.randint(3, 40)))
        return True

    def _referral(self) -> bool:
        c = "usd" if "usd" in self.fiat else self.rng.choice(self.state.currencies())
        self._book(self.state.main, REFERRAL_REWARD, {c: self._amount(c, 1, 20)})
        return True

    def _subaccount_transfer(self) -> bool:
        if not self.state.subaccounts:
            return False
        main, sub = self.state.main, self.state.accounts[self.rng.choice(self.state.subaccounts)]
        source, target = (main, sub) if self.rng.random() < 0.5 else (sub, main)
        c = self.rng.choice(self.state.currencies())
        amount = self._outflow(source, c)
        if amount <= 0:
            return False
        self._transfer(source, target, c, amount)
        return True

    def _inter_account(self) -> bool:
        """Type 35: to or from another Bitstamp account (one row, in this account only)."""
        account, c = self._account(), self.rng.choice(self.state.currencies())
        amount = self._amount(c) if self.rng.random() < 0.6 else -self._outflow(account, c)
        if amount == 0:
            return False
        self._book(account, INTER_ACCOUNT_TRANSFER, {c: amount})
        return True

    def _instant_buy(self) -> bool:
        if not self.spot:
            return False
        account, m = self._account(), self.rng.choice(self.spot)
        price = (m.mid * (1 + Decimal(self.rng.randint(-50, 50)) / 10_000)).quantize(Decimal(1).scaleb(-m.price_places))
        amount = self._amount(m.base, 1, 500)
        value = (amount * price).quantize(Decimal(1).scaleb(-places(m.quote)))
        fee = (value * Decimal("0.005")).quantize(Decimal(1).scaleb(-places(m.quote)))
        if value <= 0 or value + fee > account.balances[m.quote] / 5:
            return False
        self._book(account, INSTANT_TRADE, {m.base: amount, m.quote: -value}, fee=fee, rate=(m, price))
        return True

    def _unknown(self) -> bool:
        c = self.rng.choice(self.state.currencies())
        self._book(self._account(), UNKNOWN_TYPE, {c: self._amount(c, 1, 50)})
        return True

    # ------------------------------------------------------------------ withdrawal requests
    def _request(self, account: TradeAccount, c: str, *, crypto: bool) -> bool:
        amount, fee = self._outflow(account, c), self._fee(c)
        if amount <= fee:
            return False
        outcome = self.rng.choices([o for o, _ in OUTCOMES], [w for _, w in OUTCOMES])[0]
        t = self.ids.tick(self.rng)
        self._request_id += 1 + self.rng.randint(0, 30)
        row: dict[str, Any] = {
            "id": self._request_id,
            "datetime": rest_datetime(t, micro=False),
            "type": REQUEST_TYPES.get(c, 2),
            "currency": c.upper(),
            "amount": f"{amount:f}",
            "status": OPEN,
            "txid": None,  # the ledger row's id once it is written [G: null before]
        }
        if crypto:
            row["network"] = NETWORKS.get(c, c)
            row["address"] = self._address(c)
        request = WithdrawalRequest(self._request_id, t, c, amount, fee, outcome, row, crypto=crypto)
        request.due_step = self.step_no + self.rng.randint(2, 25)
        account.withdrawal_requests.append(request)
        self._requests.append((account, request))
        return True

    def _advance_requests(self) -> None:
        still: list[tuple[TradeAccount, WithdrawalRequest]] = []
        for account, r in self._requests:
            if r.due_step <= self.step_no and not self._advance(account, r):
                continue
            still.append((account, r))
        self._requests = still

    def _advance(self, account: TradeAccount, r: WithdrawalRequest) -> bool:
        """One status move of ``r``; False once its status is final."""
        status = r.row["status"]
        r.due_step = self.step_no + self.rng.randint(2, 25)
        if status == OPEN:
            if r.outcome == "cancelled":
                r.row["status"] = CANCELLED
                return False
            if r.outcome == "failed" or account.balances[r.currency] < r.amount + r.fee:
                r.row["status"] = FAILED
                return False
            r.row["txid"] = self._book(account, WITHDRAWAL, {r.currency: -r.amount}, fee=r.fee)
            r.row["status"] = IN_PROCESS
            return True
        if status == IN_PROCESS:
            r.row["status"] = FINISHED
            if r.crypto:
                txid = self._hash()
                r.row["transaction_id"] = txid
                row = self._crypto_row(r.currency, r.amount, str(r.row["address"]), txid)
                self.state.crypto["withdrawals"].append((self.ids.now_us, row))
            return r.outcome == "reversed"
        self._book(account, DEPOSIT, {r.currency: r.amount})  # the reversal returns the amount, not the fee [G]
        r.row["status"] = REVERSED
        return False

    def _advance_stakes(self) -> None:
        still = []
        for s in self._stakes:
            if s.due_step > self.step_no:
                still.append(s)
            elif not s.rewarded:
                reward = max((s.amount / 200).quantize(SAT, ROUND_DOWN), SAT)
                self._book(s.account, STAKING_REWARD, {s.currency: reward})
                s.rewarded, s.due_step = True, self.step_no + self.rng.randint(3, 40)
                still.append(s)
            else:
                self._book(s.account, STAKING_CREDIT, {s.currency: s.amount})
        self._stakes = still


def _opening(c: str) -> Decimal:
    return Decimal(OPENING.get(c, "1000"))
