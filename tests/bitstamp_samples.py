"""Loading the shared Bitstamp samples (``shared/bitstamp/samples`` beside the clone, or beside the checkout it was
cloned from). Missing under CI=true fails."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
RELATIVE = Path("shared") / "bitstamp" / "samples"


def _origin_checkout() -> Path | None:
    """The checkout this one was cloned from, when that is a local path (a throwaway clone in /tmp, say)."""
    try:
        url = subprocess.run(
            ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(url.removeprefix("file://")) if url and "://" not in url.removeprefix("file://") else None
    return path.resolve() if path is not None and path.is_dir() else None


def _samples() -> Path:
    """TRACKER_SAMPLES_DIR; else shared/ beside this clone (where CI lays a copy); else beside the checkout it was
    cloned from."""
    if os.environ.get("TRACKER_SAMPLES_DIR"):
        return Path(os.environ["TRACKER_SAMPLES_DIR"])
    beside = REPO.parent / RELATIVE
    if beside.is_dir():
        return beside
    origin = _origin_checkout()
    if origin is not None and (origin.parent / RELATIVE).is_dir():
        return origin.parent / RELATIVE
    return beside  # missing: samples_dir() fails under CI and skips otherwise, naming this path


SAMPLES = _samples()
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
