"""Bitstamp wire samples for the tests: the repository's own (``tests/data``, always there) and, when present, the
shared collection as an extra corpus.

``tests/data`` is what the tests need: every channel/event kind and REST answer they read, written from
``docs/bitstamp.md`` (``tests/data/README.md`` says what each file is). The shared samples
(``shared/bitstamp/samples``) are found beside this clone, beside the checkout a local clone was made from, or at
``TRACKER_SAMPLES_DIR``; when found, the corpus-wide tests run over them too (parametrised by ``corpora()``). Their
absence skips nothing and fails nothing, under ``CI=true`` as well: a fresh clone must pass its own tests.

Both corpora use one file layout: a JSON list of wrappers, each with the wire JSON in ``message`` and, where the
exact bytes matter (exponent floats, big integers), the wire text in ``raw``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
RELATIVE = Path("shared") / "bitstamp" / "samples"
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


def _shared() -> Path | None:
    """TRACKER_SAMPLES_DIR (when set, it wins, and a missing path means "none"); else shared/ beside this clone;
    else beside the checkout it was cloned from; else None."""
    if os.environ.get("TRACKER_SAMPLES_DIR"):
        path = Path(os.environ["TRACKER_SAMPLES_DIR"])
        return path if path.is_dir() else None
    beside = REPO.parent / RELATIVE
    if beside.is_dir():
        return beside
    origin = _origin_checkout()
    if origin is not None and (origin.parent / RELATIVE).is_dir():
        return origin.parent / RELATIVE
    return None


SHARED: Path | None = _shared()
SAMPLES = DATA  # the corpus every test can rely on (older callers test ``SAMPLES.is_dir()``)


def corpora() -> list[Any]:
    """``pytest.param`` of each corpus present, for ``parametrize("corpus", corpora())``: ``data`` always, ``shared``
    when found."""
    found = [pytest.param(DATA, id="data")]
    if SHARED is not None:
        found.append(pytest.param(SHARED, id="shared"))
    return found


def corpus_dirs() -> list[Path]:
    """The directories of ``corpora()``."""
    return [DATA] if SHARED is None else [DATA, SHARED]


def load(name: str, corpus: Path = DATA) -> list[dict[str, Any]]:
    """The wrappers of one sample file; an empty list when an extra corpus lacks the file."""
    path = corpus / name
    if corpus != DATA and not path.is_file():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")))


def frame_texts(name: str, corpus: Path = DATA) -> list[str]:
    """The exact wire text of each sample: ``raw`` where present, else ``json.dumps(message)``."""
    return [w["raw"] if w.get("raw") else json.dumps(w["message"]) for w in load(name, corpus)]


def private_frame_texts(corpus: Path = DATA) -> list[str]:
    """Every private-channel frame of one corpus."""
    return [text for name in PRIVATE_SAMPLE_FILES for text in frame_texts(name, corpus)]
