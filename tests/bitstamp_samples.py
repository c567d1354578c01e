"""Loading the shared Bitstamp samples (``shared/bitstamp/samples`` beside the clone). Missing under CI=true fails."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# shared/ lies beside the clone (CI lays a copy there); TRACKER_SAMPLES_DIR overrides for other layouts.
SAMPLES = Path(
    os.environ.get("TRACKER_SAMPLES_DIR") or Path(__file__).resolve().parents[2] / "shared" / "bitstamp" / "samples"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PRIVATE_SAMPLE_FILES = (
    "my_orders_order_created.json",
    "my_orders_order_changed.json",
    "my_orders_order_deleted.json",
    "my_orders_order_replaced.json",
    "my_orders_stop_active.json",
    "my_orders_stop_inactive.json",
    "my_trades_trade.json",
    "live_trades_self_trade.json",
    "my_settlements_settlement.json",
    "my_settlements_insurance_fund_premium.json",
    "my_liquidations_liquidation_start.json",
    "my_token_settlements_token_ready.json",
)


def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        if IN_CI:
            pytest.fail(f"Bitstamp samples missing at {SAMPLES} (CI=true: must not be skipped)")
        pytest.skip(f"Bitstamp samples missing at {SAMPLES}")
    return SAMPLES


def load(name: str) -> list[dict[str, Any]]:
    return list(json.loads((samples_dir() / name).read_text()))


def frame_texts(name: str) -> list[str]:
    """The exact wire text of each sample: ``raw`` where present, else ``json.dumps(message)``."""
    return [w["raw"] if w.get("raw") else json.dumps(w["message"]) for w in load(name)]
