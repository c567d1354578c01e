"""``tracker rebuild``: rebuild every projection table from the event log and swap the result in atomically.

Safe while ``tracker run`` is running: the live projector notices the swap and continues from the new checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Any

from tracker.cli import add_common_flags, open_database, whole_number
from tracker.config import load_settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rebuild", help="rebuild the projection (proj_* tables behind the v_* views) from the event log"
    )
    add_common_flags(parser)
    parser.add_argument(
        "--batch", type=whole_number(1), default=5000, help="log entries per transaction (default: 5000)"
    )
    parser.set_defaults(func=cmd_rebuild)


def format_result(events: int, checkpoint: int, rows: dict[str, int], seconds: float, workers: int = 1) -> str:
    rate = events / seconds if seconds > 0 else 0.0
    processes = f", {workers} processes" if workers > 1 else ""
    public = ", ".join(f"{rows.get(name, 0):,} {name}" for name in ("orders", "fills", "positions", "settlements"))
    public += f", {rows.get('discrepancies', 0):,} discrepancies ({rows.get('discrepancies_open', 0):,} open)"
    return (
        f"rebuilt {events:,} events in {seconds:.1f} s ({rate:,.0f} events/s{processes}): {public};"
        f" checkpoint at seq {checkpoint}"
    )


def cmd_rebuild(args: argparse.Namespace) -> int:
    from tracker.progress import Progress
    from tracker.store.event_log import EventLog
    from tracker.store.migrate import check_schema
    from tracker.store.projections import BatchResult
    from tracker.store.rebuild import rebuild

    settings = load_settings(flags={"db_url": args.db_url})
    engine = open_database(settings, write=True)
    try:
        check_schema(engine)
        progress = Progress("rebuilding", total=EventLog(engine).head())

        def advance(result: BatchResult) -> None:
            progress.advance(result.events)

        try:
            result = rebuild(engine, batch=args.batch, on_batch=advance, on_restart=progress.restart)
        finally:
            progress.close()
    finally:
        engine.dispose()
    print(format_result(result.events, result.checkpoint, result.rows, result.seconds, result.workers))
    return 0
