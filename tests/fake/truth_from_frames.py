"""An independent re-derivation of the fake's ground truth from the frames alone, written from docs/semantics.md
(it shares no code with tracker.fake.state). Used by test_fake_model.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

PLACEHOLDERS = (Decimal(999999999), Decimal(0))


def market_of(channel: str) -> str:
    name = channel.removeprefix("private-").rsplit("-", 1)[0] if channel.startswith("private-") else channel
    return name.rsplit("_", 1)[1]


def iso(us: str | int) -> str:
    v = int(us)
    return datetime.fromtimestamp(v // 1_000_000, UTC).replace(microsecond=v % 1_000_000).isoformat()


def recompute(texts: list[str]) -> dict[str, Any]:
    orders: dict[str, dict[str, Any]] = {}
    offsets: dict[str, Decimal] = {}
    fills: dict[str, dict[str, Any]] = {}
    self_trades: list[dict[str, Any]] = []
    settlements: list[dict[str, Any]] = []
    liquidations: list[dict[str, Any]] = []
    positions: dict[str, dict[str, Any]] = {}
    for text in texts:
        frame = json.loads(text, parse_float=Decimal)
        event, channel, data = frame["event"], frame["channel"], frame["data"]
        if channel.startswith("private-my_orders_"):
            oid = data.get("id_str") or str(data["id"])
            o = orders.setdefault(
                oid,
                {
                    "order_id": oid,
                    "market": market_of(channel),
                    "side": "buy" if data["order_type"] == 0 else "sell",
                    "amount": Decimal(0),
                    "price": None,
                    "client_order_id": None,
                    "created_at": iso(data["microtimestamp"]),
                    "events": 0,
                },
            )
            o["events"] += 1
            aac = Decimal(data["amount_at_create"])
            if o["amount"] == 0 and aac != 0:
                o["amount"] = aac
            price = Decimal(data["price_str"])
            placeholder = price in PLACEHOLDERS
            remaining = Decimal(data["amount_str"])
            if o["events"] == 1 and event == "order_created" and placeholder and remaining == 0:
                o["placeholder_remaining"] = True
            else:
                o["placeholder_remaining"] = False
            o["amount_remaining"] = remaining
            if not placeholder:
                o["price"] = price
            if data.get("client_order_id") is not None:
                o["client_order_id"] = data["client_order_id"]
            if event in ("order_created", "order_changed", "stop_active", "order_replaced"):
                o["status"] = "open"
            elif event == "order_deleted":
                o["status"] = "filled" if remaining == 0 else "cancelled"
            elif event == "stop_inactive":
                o["status"] = "cancelled"
            if event == "order_replaced":
                orders[str(data["orig_order_id"])]["status"] = "replaced"
        elif channel.startswith("private-my_trades_"):
            tid = data.get("id_str") or str(data["id"])
            assert tid not in fills
            fills[tid] = {
                "trade_id": tid,
                "order_id": str(data["order_id"]),
                "market": market_of(channel),
                "side": data["side"],
                "amount": Decimal(data["amount"]),
                "price": Decimal(data["price"]),
                "fee": Decimal(data["fee"]),
                "executed_at": iso(data["microtimestamp"]),
            }
            if data.get("position_id"):
                signed = fills[tid]["amount"] * (1 if data["side"] == "buy" else -1)
                p = positions.setdefault(
                    data["position_id"],
                    {
                        "position_id": data["position_id"],
                        "market": market_of(channel),
                        "first": data["side"],
                        "net": Decimal(0),
                        "inc_a": Decimal(0),
                        "inc_v": Decimal(0),
                        "fees": Decimal(0),
                        "realised": Decimal(0),
                        "phase": "",
                    },
                )
                if p["net"] == 0 or (p["net"] > 0) == (signed > 0):
                    p["inc_a"] += fills[tid]["amount"]
                    p["inc_v"] += fills[tid]["amount"] * fills[tid]["price"]
                p["net"] += signed
                p["fees"] += fills[tid]["fee"]
        elif event == "self_trade":
            amount = Decimal(data["amount_str"])
            for key in ("buy_order_id", "sell_order_id"):
                offsets[str(data[key])] = offsets.get(str(data[key]), Decimal(0)) + amount
            self_trades.append(
                {
                    "buy_order_id": str(data["buy_order_id"]),
                    "sell_order_id": str(data["sell_order_id"]),
                    "market": market_of(channel),
                    "amount": amount,
                    "price": Decimal(data["price_str"]),
                    "occurred_at": iso(data["microtimestamp"]),
                }
            )
        elif event == "settlement":
            settlements.append(
                {
                    "position_id": data["id"], "transaction_id": data["tnx_id"], "kind": "settlement",
                    "ccy": data["ccy"], "amount": Decimal(data["as"]), "occurred_at": iso(int(data["ts"]) * 10**6),
                    "price_component": Decimal(data["ap"]), "trading_fee_component": Decimal(data["atf"]),
                    "liquidation_fee_component": Decimal(data["alf"]), "funding_component": Decimal(data["afu"]),
                    "socialized_loss_component": Decimal(data["asl"]), "settlement_price": Decimal(data["price"]),
                    "strike_price": Decimal(data["sp"]), "settlement_type": data["typ"],
                }
            )  # fmt: skip
            positions[data["id"]]["realised"] += Decimal(data["as"])
        elif event == "insurance_fund_premium":
            settlements.append(
                {
                    "position_id": data.get("id"), "transaction_id": data["tnx_id"],
                    "kind": "insurance_fund_premium", "ccy": data["ccy"], "amount": Decimal(data["amount"]),
                    "occurred_at": iso(int(data["ts"]) * 10**6),
                }
            )  # fmt: skip
        elif channel.startswith("private-my_liquidations-"):
            liquidations.append(
                {
                    "position_id": data["position_id"], "event": event, "margin_mode": data["margin_mode"],
                    "occurred_at": iso(data["microtimestamp"]),
                    "initial_margin_ratio": Decimal(data["initial_margin_ratio"]),
                    "maintenance_margin_ratio": Decimal(data["maintenance_margin_ratio"]),
                }
            )  # fmt: skip
            if event == "liquidation_start":
                positions[data["position_id"]]["phase"] = "liquidating"
            elif event == "liquidation_concluded":
                positions[data["position_id"]]["phase"] = "liquidated"
    out_orders = []
    for oid, o in sorted(orders.items(), key=lambda kv: int(kv[0])):
        remaining = o["amount"] if o["placeholder_remaining"] else o["amount_remaining"]
        out_orders.append(
            {
                "order_id": oid,
                "market": o["market"],
                "side": o["side"],
                "status": o["status"],
                "amount": o["amount"],
                "amount_filled": o["amount"] - remaining - offsets.get(oid, Decimal(0)),
                "amount_remaining": remaining,
                "price": o["price"],
                "client_order_id": o["client_order_id"],
                "created_at": o["created_at"],
            }
        )
    daily: dict[tuple[str, str], dict[str, Any]] = {}
    for f in fills.values():
        key = (f["executed_at"][:10], f["market"])
        d = daily.setdefault(
            key,
            {
                "day": key[0],
                "market": key[1],
                "fills": 0,
                "volume": Decimal(0),
                "fees": Decimal(0),
                "base_volume": Decimal(0),
            },
        )
        d["fills"] += 1
        d["volume"] += f["amount"] * f["price"]
        d["fees"] += f["fee"]
        d["base_volume"] += f["amount"]
    out_positions = []
    for pid, p in sorted(positions.items()):
        net = p["net"]
        side = "long" if net > 0 else "short" if net < 0 else ("long" if p["first"] == "buy" else "short")
        status = p["phase"] or ("open" if net != 0 else "closed")
        out_positions.append(
            {
                "position_id": pid,
                "market": p["market"],
                "side": side,
                "size": abs(net),
                "status": status,
                "entry_price": p["inc_v"] / p["inc_a"] if p["inc_a"] else None,
                "fees": p["fees"],
                "realised_pnl": p["realised"],
            }
        )
    return {
        "orders": out_orders,
        "fills": sorted(fills.values(), key=lambda f: int(f["trade_id"])),
        "fees_daily": [daily[k] for k in sorted(daily)],
        "self_trades": self_trades,
        "settlements": settlements,
        "liquidations": liquidations,
        "positions": out_positions,
    }


def normalise(value: Any) -> Any:
    """Decimal-valued strings compare as numbers ("0.50" == "0.5"); everything else as is."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, str):
        try:
            if value and (value[0].isdigit() or value[0] == "-") and "T" not in value and "-" not in value[1:]:
                return Decimal(value).normalize()
        except ArithmeticError:
            return value
    return value
