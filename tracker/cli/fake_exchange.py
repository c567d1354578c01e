"""``tracker fake-exchange``: run the fake Bitstamp standalone until SIGINT/SIGTERM; print the environment a tracker
needs to point at it; optionally write the ground truth as JSON on exit."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "fake-exchange", help="run tracker's fake Bitstamp (HTTP + WebSocket on 127.0.0.1) with scripted activity"
    )
    parser.add_argument("--http-port", type=int, default=0, help="HTTP port (default: any free port)")
    parser.add_argument("--ws-port", type=int, default=0, help="WebSocket port (default: any free port)")
    parser.add_argument("--seed", type=int, default=0, help="activity seed (same seed, same account story)")
    parser.add_argument("--rate", type=float, default=5.0, help="frames per second (0: only on REST calls; default 5)")
    parser.add_argument("--markets", default="btcusd,ethusd,btcusd-perp", help="comma-separated market symbols")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="scheduled fault, repeatable: reconnect-every=10s, drop-every=30s, stall-every=60s,for=15s, "
        "pause-every=30s,for=5s, duplicate-every=5s, malformed-every=20s, unknown-every=20s, token-ttl=5s",
    )
    parser.add_argument(
        "--mode",
        action="append",
        default=[],
        metavar="NAME",
        help="behave like the real exchange may, repeatable (docs/fake.md): derivatives-refused, derivatives-flaky, "
        "unsigned, error-200, get-query-bare, market-wide-chain, liquidations-untimed, settlement-ms, "
        "refuse-channel=NAME, all",
    )
    parser.add_argument("--truth-out", type=Path, help="write the ground truth JSON here on exit")
    parser.set_defaults(func=cmd_fake_exchange)


def format_env(fx: Any) -> list[str]:
    notes = {"BITSTAMP_API_SECRET": "  # fake credentials for the fake exchange"}
    return [f"export {name}={value}{notes.get(name, '')}" for name, value in fx.tracker_variables().items()]


def cmd_fake_exchange(args: argparse.Namespace) -> int:
    import trio

    from tracker.errors import TrackerError
    from tracker.fake.faults import parse_fault, run_fault
    from tracker.fake.modes import Modes
    from tracker.fake.server import open_fake_exchange

    try:
        faults = [parse_fault(f) for f in args.fault]
        modes = Modes.parse(args.mode)
        markets = tuple(m.strip() for m in args.markets.split(",") if m.strip())
        from tracker.fake.markets import resolve_markets

        resolve_markets(markets)
    except ValueError as exc:
        raise TrackerError(str(exc)) from exc

    async def main() -> dict[str, Any]:
        async with open_fake_exchange(
            seed=args.seed,
            markets=markets,
            rate=args.rate or None,
            http_port=args.http_port,
            ws_port=args.ws_port,
            modes=modes,
        ) as fx:
            print("\n".join(format_env(fx)), flush=True)
            if modes:
                print(f"# modes: {', '.join(modes.names())}", file=sys.stderr, flush=True)
            print("# fake exchange running; Ctrl-C stops it", file=sys.stderr, flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    for spec in faults:
                        nursery.start_soon(run_fault, fx, spec)
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break
            return fx.truth()

    truth = trio.run(main)
    if args.truth_out is not None:
        args.truth_out.write_text(json.dumps(truth, indent=1) + "\n")
        print(f"# ground truth written to {args.truth_out}", file=sys.stderr)
    return 0
