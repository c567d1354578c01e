"""``tracker run``: live ingest of the account's private channels into the event log, until SIGINT/SIGTERM.

The accounts of the config file's ``[[accounts]]`` (``config.load_accounts``; one or several) are tracked by this one
process (``runtime/app.py``: ``run_accounts``), and SIGHUP applies the file as edited since: accounts added, removed
or changed are started, stopped or restarted, the others untouched (``runtime/config_reload.py``). A run configured
by the environment and flags has nothing to reload: SIGHUP logs a warning.

Settings come from flags > environment > config file. The API secret is only ever read from the environment or a
file (never argv). Exit code 0 after a clean stop: everything received has been committed. SIGINT and SIGTERM stop it
cleanly from its first moment: during the start-up (before anything is received) with one line, ``stopped during
start-up: SIGTERM while checking the database; nothing was received, nothing written``, and exit 0. A stop in a
database outage keeps trying to commit for the stop's grace (``TRACKER_STOP_GRACE``, 10 s), then ends with one error
line (exit 2) counting the frames not committed: they are in a side file, which ``tracker db import-unsaved FILE``
appends once the database is back, and the next run's start-up backfill fetches them again from REST (all but self-trade
and liquidation alerts; ``runtime/writer.py``).

A SQLite file that fails ``PRAGMA quick_check`` is refused before anything connects (one error line: restore from a
backup, ``tracker verify`` for details). A damaged page met while running stops the run with one such line too; the
frames not yet committed are in the side file it names (``tracker/runtime/writer.py``).
"""

from __future__ import annotations

import argparse
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy import Engine

    from tracker.errors import TrackerError
    from tracker.metrics import Metrics
    from tracker.runtime.early_signals import EarlySignals

from tracker.cli import add_common_flags, require_existing_database

log = logging.getLogger("tracker.run")

# How many accounts a SIGHUP may add to those ``tracker run`` started with (the database pool is sized for them).
RELOAD_SPARE = 16


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="track the account live: every private frame into the event log (Ctrl-C stops cleanly)"
    )
    add_run_flags(parser)
    parser.set_defaults(func=cmd_run, stops_cleanly=True)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``tracker run`` (``tracker config show`` takes them too, to show what such a run would use)."""
    add_common_flags(parser)
    parser.add_argument("--markets", help="comma-separated market symbols (env TRACKER_MARKETS; default: discover)")
    parser.add_argument("--api-url", dest="api_url", help="Bitstamp HTTP API base URL (env BITSTAMP_API_URL)")
    parser.add_argument("--ws-url", dest="ws_url", help="Bitstamp WebSocket URL (env BITSTAMP_WS_URL)")
    parser.add_argument(
        "--metrics-port",
        dest="metrics_port",
        type=int,
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics (env TRACKER_METRICS_PORT; 0: any free port)",
    )
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="allow plain http:// and ws:// to non-loopback hosts"
    )


def run_flags(args: argparse.Namespace) -> dict[str, object]:
    """``add_run_flags``' values, as ``load_settings``/``load_accounts`` take them (None: not given)."""
    return {
        name: getattr(args, name) for name in ("db_url", "markets", "api_url", "ws_url", "metrics_port", "insecure")
    }


def cmd_run(args: argparse.Namespace) -> int:
    """The run, a stop signal at any moment of it a clean stop: during the start-up (the synchronous checks here,
    then the markets and keys, ``runtime/app.py``) it abandons the start-up, nothing written, with one line and exit
    0; after, it is the service's lossless stop (``runtime/early_signals.py`` says how the two meet)."""
    from tracker.runtime.early_signals import stopping_cleanly

    return stopping_cleanly(args, partial(_run, args), lambda stopped: log.info("%s", stopped))


def _run(args: argparse.Namespace, early: EarlySignals) -> int:
    early.starting("reading the configuration")
    import trio

    from tracker.config import load_accounts
    from tracker.runtime.app import run_accounts, run_app
    from tracker.store.engine import open_engine
    from tracker.store.migrate import check_schema

    flags = run_flags(args)
    accounts = load_accounts(flags=flags)
    for one in accounts:
        one.require_credentials()
    settings = accounts[0]  # what they share: the database, the metrics port
    early.starting("checking the database")
    require_existing_database(settings)  # never leave an empty SQLite file behind
    engine = open_engine(settings.db_url, accounts=len(accounts) + (RELOAD_SPARE if settings.accounts_in_file else 0))
    try:
        check_schema(engine)
        refuse_damaged(engine)
        early.starting("starting the metrics server")
        metrics = start_metrics(settings.metrics_port) if settings.metrics_port is not None else None
        started = time.time()
        main: Callable[[], Awaitable[object]] = partial(run_app, settings, engine, metrics=metrics, early=early)
        if settings.accounts_in_file:  # SIGHUP reloads the file: read again as now, with the same flags
            count = f"{len(accounts)} account" + ("s" if len(accounts) > 1 else "")
            log.info("tracking %s in this process (the config file's [[accounts]])", count)
            reload_from = partial(load_accounts, flags=flags)
            # PostgreSQL: each account holds a connection for its lease; the pool has room for RELOAD_SPARE more
            # accounts than the start's (opened only when used), and a reload listing more needs a restart.
            spare = len(accounts) + RELOAD_SPARE if engine.dialect.name == "postgresql" else None
            main = partial(
                run_accounts,
                accounts,
                engine,
                metrics=metrics,
                reload_from=reload_from,
                max_accounts=spare,
                early=early,
            )
        early.hand_over()  # trio's receiver takes the signals at the run's first line (run_app, run_accounts)
        try:
            trio.run(main)
        except BaseException as error:
            damaged = damage_in(error, engine, started)
            if damaged is None:
                raise
            raise damaged from None
    finally:
        engine.dispose()
    return 0


def refuse_damaged(engine: Engine) -> None:
    """Do not append to a damaged file: SQLite's quick check before anything connects (PostgreSQL: nothing cheap to
    run here; ``tracker verify`` uses amcheck when installed)."""
    from tracker.store.engine import display_url
    from tracker.store.errors import DatabaseDamaged
    from tracker.store.integrity import check_integrity

    if engine.dialect.name != "sqlite":
        return
    report = check_integrity(engine, quick=True)
    if not report.ok:
        raise DatabaseDamaged(
            f"the database at {display_url(engine.url)} is damaged ({report.method}: {report.problems[0]}"
            f"{f'; {len(report.problems) - 1} more' if len(report.problems) > 1 else ''}): restore it from a backup;"
            " `tracker verify` shows the details"
        )


def damage_in(error: BaseException, engine: Engine, started: float) -> TrackerError | None:
    """A damaged page met while running, as one error line: the writer's own ``DatabaseDamaged`` (it names the side
    file) when it has one, else the first damage error any task hit (the side file the writer wrote when it was
    cancelled is looked up beside the database)."""
    from tracker.errors import leaves
    from tracker.store.engine import display_url
    from tracker.store.errors import DatabaseDamaged, first_line, is_damage
    from tracker.store.integrity import unsaved_path

    found = leaves(error)
    for leaf in found:
        if isinstance(leaf, DatabaseDamaged):
            return leaf
    hit = next((leaf for leaf in found if is_damage(leaf)), None)
    if hit is None:
        return None
    pattern = unsaved_path(engine).name.split(".unsaved-")[0] + ".unsaved-*.jsonl"
    spilled = [path for path in unsaved_path(engine).parent.glob(pattern) if path.stat().st_mtime >= started]
    saved = f"; frames not committed are saved in {max(spilled)}" if spilled else ""
    return DatabaseDamaged(
        f"the database at {display_url(engine.url)} is damaged ({first_line(hit)}): the run stopped{saved};"
        " restore it from a backup (`tracker verify` shows the damage)"
    )


def start_metrics(port: int) -> Metrics:
    """Serve /metrics now, so that a port in use fails before anything connects."""
    from tracker.metrics import Metrics, serve_metrics

    metrics = Metrics()
    bound = serve_metrics(metrics, port)
    log.info("metrics at http://127.0.0.1:%d/metrics", bound)
    return metrics
