"""The fake account's books over a real socket, read by a plain httpx client with an independent signer: every trade
account's ``account_balances/`` equals the sum of its served ``user_transactions/`` rows (recomputed here by small
code of its own, exactly, after a long seeded run with every mode on), the movements and their shapes, the
sub-account header, ``withdrawal-requests/`` and ``crypto-transactions/`` paging, and ``tamper_ledger_row``.

Rules: loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation (a manual clock)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
from fake_helpers import ManualClock, signed_headers

from tracker.fake.model import AccountModel
from tracker.fake.modes import Modes
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.fake.wire import dumps

MARKETS = ("btcusd", "ethusd", "btcusd-perp", "ethusd-perp")
NOT_CURRENCIES = {"id", "datetime", "type", "fee", "order_id", "margin_mode", "leverage_rate", "self_trade"}
NOT_CURRENCIES |= {"self_trade_order_id"}


@asynccontextmanager
async def fake(
    clock: ManualClock, modes: Iterable[str] | Modes = (), seed: int = 31, **kw: Any
) -> AsyncIterator[FakeExchange]:
    async with open_fake_exchange(seed=seed, markets=MARKETS, clock=clock, modes=modes, **kw) as fx:
        yield fx


async def post(
    client: httpx.AsyncClient, fx: FakeExchange, route: str, body: str = "", subaccount: str | None = None
) -> httpx.Response:
    """A signed POST; ``X-Auth-Subaccount-Id`` is added after signing (it is not part of the signed string)."""
    url = fx.api_url + route
    stamp = int(fx.clock() * 1000)
    headers = signed_headers("POST", url, body, key=fx.api_key, secret=fx.api_secret, timestamp_ms=stamp)
    if subaccount is not None:
        headers["X-Auth-Subaccount-Id"] = subaccount
    return await client.post(url, headers=headers, content=body.encode() if body else None)


def exact(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)


async def ledger(client: httpx.AsyncClient, fx: FakeExchange, tai: str | None) -> list[dict[str, Any]]:
    """Every ``user_transactions/`` row of a trade account, oldest first (offset paging, 1000 a page)."""
    rows: list[dict[str, Any]] = []
    while True:
        page = exact(await post(client, fx, "user_transactions/", f"sort=asc&limit=1000&offset={len(rows)}", tai))
        rows += page
        if len(page) < 1000:
            return rows


def recompute(rows: Iterable[dict[str, Any]]) -> dict[str, Decimal]:
    """Balances from ledger rows, written here on purpose without the fake's code: every currency key moves by its
    value, ``fee`` leaves the pair's quote currency (or the one currency the row moves), a perp fill moves nothing."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if int(row["type"]) == 2 and ("margin_mode" in row or "leverage_rate" in row):
            continue
        pair = [k for k in row if "_" in k and k.split("_")[0] in row and k.split("_")[1] in row]
        moved = {k: Decimal(str(v)) for k, v in row.items() if k not in NOT_CURRENCIES and "_" not in k}
        for c, v in moved.items():
            out[c] += v
        fee = Decimal(str(row["fee"]))
        if fee:
            nonzero = [c for c, v in moved.items() if v]
            assert pair or len(nonzero) == 1, row
            out[pair[0].split("_")[1] if pair else nonzero[0]] -= fee
    return dict(out)


async def balances(client: httpx.AsyncClient, fx: FakeExchange, tai: str | None) -> dict[str, Decimal]:
    rows = exact(await post(client, fx, "account_balances/", subaccount=tai))
    for r in rows:
        assert Decimal(r["available"]) + Decimal(r["reserved"]) == Decimal(r["total"])
    return {r["currency"].lower(): Decimal(r["total"]) for r in rows}


async def test_balances_are_the_sum_of_the_served_ledger(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(60):
        async with fake(clock, modes=["all"]) as fx:
            await fx.generate(4000)
            truth = fx.truth()["accounts"]
            assert set(truth) == {"0", "1001", "1002"} and fx.subaccounts == ("1001", "1002")
            types: dict[str, set[tuple[str, type]]] = defaultdict(set)
            for tai in ("0", "1001", "1002"):
                rows = await ledger(client, fx, None if tai == "0" else tai)
                served = await balances(client, fx, None if tai == "0" else tai)
                assert recompute(rows) == served  # exactly, every currency
                want = truth[tai]
                assert {c: Decimal(v) for c, v in want["balances"].items()} == served
                assert [r["id"] for r in rows] == [r["id"] for r in want["ledger"]]
                assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
                assert all(v >= 0 for v in served.values())
                types[tai] |= {(str(r["type"]), type(r["type"])) for r in rows}
            codes = {code for code, _ in types["0"]}
            assert {"0", "1", "2", "14", "25", "26", "27", "32", "35", "36", "58", "60", "99"} <= codes
            assert {("0", str), ("0", int)} <= types["0"]  # type sent as a string and as an integer
            assert "14" in {code for code, _ in types["1001"]}


def test_movements_in_a_demo_length_run() -> None:
    """About 300 steps (a 30 s demo at 20 frames/s) show several of each movement and request outcome."""
    model = AccountModel(0, ("btcusd", "ethusd", "btcusd-perp"))
    for i in range(300):
        model.step(1_790_000_000_000_000 + i * 100_000)
    seen: Counter[str] = Counter()
    for account in model.state.accounts.values():
        seen.update(str(r.row["type"]) for r in account.transactions)
        seen.update(f"request:{w.row['status']}" for w in account.withdrawal_requests)
    for name in ("0", "1", "14", "25", "26", "27", "32", "35", "36", "99", "request:2", "request:3", "request:11"):
        assert seen[name] >= 2, (name, seen)
    assert seen["request:4"] >= 1
    books = model.truth()["crypto_transactions"]
    assert books["deposits"] and books["withdrawals"]


def test_books_are_the_seeds_whatever_the_modes() -> None:
    a, b = AccountModel(8), AccountModel(8, modes=Modes.parse(["all", "subaccount-header-ignored"]))
    for i in range(500):
        a.step(1_790_000_000_000_000 + i * 100_000)
        b.step(1_790_000_000_000_000 + i * 100_000)
    assert a.truth() == b.truth()
    with pytest.raises(ValueError):
        AccountModel(1, subaccounts=(0,))


def test_perp_fills_move_no_balance() -> None:
    model = AccountModel(4, ("btcusd-perp",), subaccounts=())
    model.step(1_790_000_000_000_000)  # funding rows first
    for i in range(1, 400):
        before = dict(model.state.balances)
        fills = len(model.state.fills)
        rows = len(model.state.transactions)
        model.step(1_790_000_000_000_000 + i * 100_000)
        new_rows = [r.row for r in model.state.transactions[rows:]]
        if len(model.state.fills) > fills and all(str(r["type"]) == "2" for r in new_rows):
            assert model.state.balances == before
    assert recompute(json.loads(dumps(r.row), parse_float=Decimal) for r in model.state.transactions) == dict(
        model.state.balances
    )


async def test_movement_shapes(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(30):
        async with fake(clock) as fx:
            await fx.generate(1500)
            rows = await ledger(client, fx, None)
            by_id = {r["id"]: r for r in rows}
            assert {type(r["type"]) for r in rows if str(r["type"]) != "2"} == {int, str}
            for r in rows:
                untouched = [k for k, v in r.items() if k in ("btc", "eth", "usd") and isinstance(v, Decimal)]
                assert all(r[k] == 0 for k in untouched)  # the number 0.0, never a string
            instant = [r for r in rows if str(r["type"]) == "36"]
            assert instant and all(Decimal(r["btc"] if Decimal(r["btc"]) else r["eth"]) > 0 for r in instant)
            assert all(Decimal(r["usd"]) < 0 and Decimal(r["fee"]) > 0 for r in instant)
            assert all(("btc_usd" in r) != ("eth_usd" in r) for r in instant)
            # per-market walks never see a movement
            for m in MARKETS:
                listed = exact(await post(client, fx, f"user_transactions/{m}/", "limit=1000"))
                assert {str(r["type"]) for r in listed} <= {"2", "58", "60"}
            # transfers: one movement, two rows, two ids, opposite amounts
            sub = await ledger(client, fx, "1001")
            transfers = [r for r in sub if str(r["type"]) == "14"]
            main_14 = [r for r in rows if str(r["type"]) == "14"]
            for t in transfers:
                c = next(k for k in ("btc", "eth", "usd") if Decimal(str(t[k])))
                twin = [r for r in main_14 if Decimal(str(r[c])) == -Decimal(str(t[c])) and r["id"] != t["id"]]
                assert twin, t
            # withdrawal requests: status, ledger row, on-chain row
            requests = exact(await post(client, fx, "withdrawal-requests/"))
            crypto = exact(await post(client, fx, "crypto-transactions/", "limit=1000"))
            assert set(crypto) == {"deposits", "withdrawals", "ripple_iou_transactions"}
            hashes = {w["txid"]: w for w in crypto["withdrawals"]}
            statuses = Counter(r["status"] for r in requests)
            assert {2, 3, 11} <= set(statuses), statuses
            for r in requests:
                if r["status"] in (0, 3, 4):
                    assert r["txid"] is None
                    continue
                row = by_id[r["txid"]]
                c = r["currency"].lower()
                assert str(row["type"]) == "1" and -Decimal(str(row[c])) == Decimal(r["amount"])
                assert Decimal(row["fee"]) > 0
                if r["status"] in (2, 11) and "network" in r:
                    chain = hashes[r["transaction_id"]]
                    assert isinstance(chain["amount"], Decimal | int) and chain["amount"] == Decimal(r["amount"])
                    assert isinstance(chain["datetime"], int) and chain["destinationAddress"] == r["address"]
                if r["status"] == 11:
                    returned = [x for x in rows if x["id"] > row["id"] and str(x["type"]) == "0"]
                    assert any(Decimal(str(x[c])) == Decimal(r["amount"]) for x in returned)
            for d in crypto["deposits"]:
                assert set(d) == {"currency", "network", "destinationAddress", "txid", "amount", "datetime"}
                assert isinstance(d["amount"], Decimal | int) and isinstance(d["datetime"], int)  # JSON numbers


async def test_request_status_moves_over_time(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(30):
        async with fake(clock, seed=5) as fx:
            seen: dict[int, list[int]] = defaultdict(list)
            for _ in range(60):
                await fx.generate(10)
                for r in exact(await post(client, fx, "withdrawal-requests/")):
                    if not seen[r["id"]] or seen[r["id"]][-1] != r["status"]:
                        seen[r["id"]].append(r["status"])
            paths = {tuple(p) for p in seen.values()}
            assert (0, 1, 2) in paths or any(p[:3] == (0, 1, 2) for p in paths)
            assert any(p[-2:] == (2, 11) for p in paths)
            assert any(p[-1] == 3 for p in paths)


async def test_withdrawal_requests_paging(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(30):
        async with fake(clock) as fx:
            await fx.generate(800)
            clock.now += 1000
            await fx.generate(800)
            every = exact(await post(client, fx, "withdrawal-requests/"))
            assert len(every) > 6 and [r["id"] for r in every] == sorted((r["id"] for r in every), reverse=True)
            page = exact(await post(client, fx, "withdrawal-requests/", "limit=3&offset=2"))
            assert page == every[2:5]
            for body, reason in (
                ("limit=3", "Both limit and offset must be present."),
                ("offset=3", "Both limit and offset must be present."),
                ("limit=0&offset=0", "Invalid limit."),
                ("limit=1001&offset=0", "Invalid limit."),
                ("limit=1&offset=200001", "Invalid offset."),
                ("id=x", "Invalid id."),
                ("timedelta=50000001", "Timedelta too large."),
            ):
                r = await post(client, fx, "withdrawal-requests/", body)
                assert r.status_code == 400 and r.json()["reason"] == reason, (body, r.text)
            one = exact(await post(client, fx, "withdrawal-requests/", f"id={every[3]['id']}"))
            assert one == [every[3]]
            recent = exact(await post(client, fx, "withdrawal-requests/", "timedelta=500"))
            assert recent and len(recent) < len(every) and recent == every[: len(recent)]
            assert (await post(client, fx, "withdrawal_requests/")).status_code == 404  # the spec's hyphen only


async def test_crypto_transactions_paging(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(30):
        async with fake(clock) as fx:
            await fx.generate(1500)
            every = exact(await post(client, fx, "crypto-transactions/", "limit=1000"))
            assert every["ripple_iou_transactions"] == [] and len(every["deposits"]) > 3
            two = exact(await post(client, fx, "crypto-transactions/", "limit=2&offset=1"))
            assert two["deposits"] == every["deposits"][1:3] and two["withdrawals"] == every["withdrawals"][1:3]
            default = exact(await post(client, fx, "crypto-transactions/"))
            assert default["deposits"] == every["deposits"][:100]
            # main account only: a sub-account header changes nothing
            assert exact(await post(client, fx, "crypto-transactions/", "limit=1000", "1001")) == every
            newest = every["deposits"][0]["datetime"]
            since = exact(await post(client, fx, "crypto-transactions/", f"limit=1000&since_timestamp={newest}"))
            assert since["deposits"] and all(d["datetime"] >= newest for d in since["deposits"])
            until = exact(await post(client, fx, "crypto-transactions/", f"limit=1000&until_timestamp={newest}"))
            assert all(d["datetime"] < newest for d in until["deposits"])
            old = int(clock.now) - 31 * 86400
            for body, reason in (
                ("limit=1001", "Limit too large."),
                ("limit=0", "Invalid limit."),
                ("offset=200001", "Offset too large."),
                ("since_timestamp=abc", "Invalid since_timestamp parameter."),
                (f"since_timestamp={old}", "since_timestamp parameter must be higher than"),
                (f"until_timestamp={old}", "until_timestamp parameter must be higher than"),
            ):
                r = await post(client, fx, "crypto-transactions/", body)
                assert r.status_code == 400 and r.json()["reason"].startswith(reason), (body, r.text)


async def test_subaccount_header(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(30):
        async with fake(clock, subaccounts=(77,)) as fx:
            await fx.generate(300)
            r = await post(client, fx, "account_balances/", subaccount="1001")
            assert r.status_code == 404
            assert r.json() == {
                "status": "error",
                "reason": "Trade account not found for provided API key.",
                "response_code": "404.004",
                "code": "404.004",
            }
            main, sub = await ledger(client, fx, None), await ledger(client, fx, "77")
            assert sub and not {r["id"] for r in main} & {r["id"] for r in sub}
            assert await ledger(client, fx, "0") == main
            assert exact(await post(client, fx, "open_orders/all/", subaccount="77")) == []
            assert exact(await post(client, fx, "open_orders/all/"))  # the main account has open orders
            usd = exact(await post(client, fx, "account_balances/usd/", subaccount="77"))
            assert Decimal(usd["total"]) == recompute(sub)["usd"]


async def test_subaccount_header_ignored_mode(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(30):
        async with fake(clock, modes=["subaccount-header-ignored"]) as fx:
            await fx.generate(300)
            main = await ledger(client, fx, None)
            assert await ledger(client, fx, "1001") == main
            assert await ledger(client, fx, "999") == main  # even an unknown id: the header is not read
            assert await balances(client, fx, "1002") == await balances(client, fx, None)
            assert fx.truth()["accounts"]["1001"]["ledger"]  # the sub-accounts still exist, unseen


async def test_tamper_changes_the_served_row_not_the_balance(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(30):
        async with fake(clock) as fx:
            await fx.generate(300)
            rows = await ledger(client, fx, "1002")
            target = next(r for r in rows if str(r["type"]) == "14" and Decimal(str(r["usd"])))
            before = await balances(client, fx, "1002")
            fx.tamper_ledger_row("1002", target["id"], "usd", Decimal(str(target["usd"])) + Decimal("0.01"))
            after_rows = await ledger(client, fx, "1002")
            assert await balances(client, fx, "1002") == before
            assert recompute(after_rows)["usd"] - before["usd"] == Decimal("0.01")
            changed = [a for a, b in zip(after_rows, rows, strict=True) if a != b]
            assert [r["id"] for r in changed] == [target["id"]]
            assert fx.truth()["tampered"] == [
                {
                    "trade_account_id": "1002",
                    "row_id": str(target["id"]),
                    "currency": "usd",
                    "was": f"{Decimal(str(target['usd'])):f}",
                    "now": f"{Decimal(str(target['usd'])) + Decimal('0.01'):f}",
                }
            ]
            with pytest.raises(KeyError):
                fx.tamper_ledger_row("1002", 1, "usd", Decimal(1))
