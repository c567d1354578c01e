"""The audit report of a real fake-exchange run (``tracker demo``, every fault on), opened in a real headless browser.

Chromium is Debian's (``apt-get install -y chromium``; ``.ci/run`` installs it), driven by Playwright through
``executable_path`` (no browser download). Without a browser the test skips with the reason; under ``CI=true`` it
fails instead, so CI cannot pass without having looked at the page.

Checked: the page renders with no console error and no request leaving the file (the document's own CSP would log
one as an error, and the route below records any); every section is there; the charts are SVG in the page; the key
figures shown equal the views (fill count from ``v_fills``, fees per market from ``v_fees_daily``, exact).
``TRACKER_SCREENSHOT_OUT=docs/audit-screenshot.png`` also saves a screenshot (the one in the README is made so).

Rules: loopback only (the fake binds 127.0.0.1 port 0), an absolute timeout, no sleeps.
"""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from tracker.audit.html import SECTIONS
from tracker.cli import main
from tracker.store.engine import open_engine

pytestmark = pytest.mark.timeout(90)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _need(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true needs the browser test to run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-second demo run with faults, and the audit report the demo wrote beside its database."""
    where = tmp_path_factory.mktemp("audit")
    db = where / "tracker-demo.db"
    assert main(["demo", "--duration", "3", "--db", str(db)]) == 0
    out = where / "tracker-demo-audit.html"
    assert out.is_file()
    return db, out


def test_the_report_renders_in_a_real_browser(demo_report: tuple[Path, Path]) -> None:
    executable = _chromium()
    if executable is None:
        _need("no Chromium installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import Request, sync_playwright
    except ImportError:
        _need("the playwright package is not installed (pip install -e '.[test]')")
    db, report = demo_report
    url = report.resolve().as_uri()
    errors: list[str] = []
    requests: list[str] = []

    def record(request: Request) -> None:
        if request.url != url:
            requests.append(request.url)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", record)
            page.goto(url, wait_until="load")
            for key, title in SECTIONS:
                assert page.locator(f"section#{key} h2").inner_text() == title
            assert page.locator("section#coverage svg.pygal-chart").count() == 1
            assert page.locator("section#activity svg.pygal-chart").count() >= 2
            assert page.locator("section#activity svg.pygal-chart").first.bounding_box() is not None
            fill_count = int(page.locator('[data-figure="fill-count"]').inner_text())
            fees = {
                (element.get_attribute("data-figure") or "").removeprefix("fees-"): Decimal(element.inner_text())
                for element in page.locator('[data-figure^="fees-"]').all()
            }
            verdict = page.locator('[data-figure="verify"]').inner_text()
            anchor = page.locator('[data-figure="anchor"]').inner_text()
            balances = page.locator('[data-figure="balances"]').inner_text()
            shown_balances = {
                (element.get_attribute("data-figure") or "").removeprefix("current-balance-"): Decimal(
                    element.inner_text()
                )
                for element in page.locator('[data-figure^="current-balance-"]').all()
            }
            shot = os.environ.get("TRACKER_SCREENSHOT_OUT")
            if shot:
                page.screenshot(path=shot, full_page=False)
        finally:
            browser.close()
    assert errors == []
    assert requests == []
    assert verdict == "ok"
    assert "snapshot check(s)" in balances  # the ledger views exist since migration 0006

    engine = open_engine(f"sqlite:///{db}", write=False)
    try:
        with engine.connect() as conn:
            assert fill_count == conn.execute(text("SELECT count(*) FROM v_fills")).scalar_one() > 0
            expected: dict[str, Decimal] = {}
            for market, day_fees in conn.execute(text("SELECT market, fees FROM v_fees_daily")):
                expected[market] = expected.get(market, Decimal(0)) + Decimal(day_fees)
            head, head_hash = conn.execute(text("SELECT seq, hash FROM event_log ORDER BY seq DESC LIMIT 1")).one()
            books = {
                f"{tai}-{currency}": Decimal(balance)
                for tai, currency, balance in conn.execute(
                    text("SELECT trade_account_id, currency, balance FROM v_balances")
                )
            }
    finally:
        engine.dispose()
    assert fees == expected
    assert shown_balances == books and len(books) >= 3  # each balance of every trade account, exact
    assert anchor == f"{head}:{head_hash}"
