"""``tracker fake-exchange``: run the fake Bitstamp standalone until SIGINT/SIGTERM; print the environment a tracker
needs to point at it; optionally write the ground truth as JSON on exit."""

from __future__ import annotations

import argparse
import errno
import json
import math
import signal
import sys
from pathlib import Path
from typing import Any

from tracker.errors import TrackerError

MAX_RATE = 10_000


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "fake-exchange", help="run tracker's fake Bitstamp (HTTP + WebSocket on 127.0.0.1) with scripted activity"
    )
    parser.add_argument("--http-port", type=port, default=0, help="HTTP port (default: any free port)")
    parser.add_argument("--ws-port", type=port, default=0, help="WebSocket port (default: any free port)")
    parser.add_argument("--seed", type=int, default=0, help="activity seed (same seed, same account story)")
    parser.add_argument("--rate", type=rate, default=5.0, help="frames per second (0: only on REST calls; default 5)")
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
        help=mode_help(),
    )
    parser.add_argument("--truth-out", type=Path, help="write the ground truth JSON here on exit")
    parser.add_argument(
        "--subaccount-keys",
        action="store_true",
        help="issue each sub-account its own API key and print BITSTAMP_SUBACCOUNT_<N>_API_KEY/_API_SECRET too",
    )
    parser.set_defaults(func=cmd_fake_exchange)


def mode_help() -> str:
    """Every mode by name, from the list ``--mode`` accepts (``tracker.fake.modes``): the help cannot miss one."""
    from tracker.fake.modes import ALL, FLAG_NAMES, NOT_IN_ALL, REFUSE_CHANNEL

    names = ", ".join((*FLAG_NAMES, f"{REFUSE_CHANNEL}=NAME"))
    left_out = " or ".join(sorted(NOT_IN_ALL))
    return f"behave like the real exchange may, repeatable (docs/fake.md): {names}, {ALL} (every mode but {left_out})"


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 (any free port) and 65535, got {value}")
    return value


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of frames per second: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"must be between 0 (only on REST calls) and {MAX_RATE}, got {text}")
    return value


def format_env(fx: Any, *, subaccount_keys: bool = False) -> list[str]:
    notes = {"BITSTAMP_API_SECRET": "  # fake credentials for the fake exchange"}
    variables = fx.tracker_variables(subaccount_keys=subaccount_keys)
    return [f"export {name}={value}{notes.get(name, '')}" for name, value in variables.items()]


async def wait_for_stop() -> None:
    """Until SIGINT or SIGTERM (the tests replace this to stop at once)."""
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def cmd_fake_exchange(args: argparse.Namespace) -> int:
    import trio

    from tracker.fake.faults import parse_fault, run_fault
    from tracker.fake.markets import resolve_markets
    from tracker.fake.modes import Modes
    from tracker.fake.server import open_fake_exchange

    try:
        faults = [parse_fault(f) for f in args.fault]
        modes = Modes.parse(args.mode)
        markets = tuple(m.strip().lower() for m in args.markets.split(",") if m.strip())
        resolve_markets(markets)
    except ValueError as exc:
        raise TrackerError(str(exc)) from exc
    if not markets:
        raise TrackerError("--markets is empty: list market symbols like btcusd,ethusd")
    truth_out: Path | None = args.truth_out
    if truth_out is not None and (truth_out.is_dir() or not truth_out.parent.is_dir()):
        # Checked now, not after hours of running: the truth is written at the stop.
        raise TrackerError(f"--truth-out {truth_out}: not a file in an existing directory")

    async def main() -> dict[str, Any]:
        async with open_fake_exchange(
            seed=args.seed,
            markets=markets,
            rate=args.rate or None,
            http_port=args.http_port,
            ws_port=args.ws_port,
            modes=modes,
        ) as fx:
            print("\n".join(format_env(fx, subaccount_keys=getattr(args, "subaccount_keys", False))), flush=True)
            if modes:
                print(f"# modes: {', '.join(modes.names())}", file=sys.stderr, flush=True)
            print("# fake exchange running; Ctrl-C stops it", file=sys.stderr, flush=True)
            async with trio.open_nursery() as nursery:
                for spec in faults:
                    nursery.start_soon(run_fault, fx, spec)
                await wait_for_stop()
                nursery.cancel_scope.cancel()
            return fx.truth()

    try:
        truth = trio.run(main)
    except* OSError as group:
        raise _listen_error(group, args.http_port, args.ws_port) from None
    if truth_out is not None:
        try:
            truth_out.write_text(json.dumps(truth, indent=1) + "\n")
        except OSError as exc:
            raise TrackerError(f"cannot write --truth-out {truth_out}: {exc.strerror}") from None
        print(f"# ground truth written to {truth_out}", file=sys.stderr)
    return 0


def _listen_error(group: BaseExceptionGroup[OSError], http_port: int, ws_port: int) -> TrackerError:
    """The servers' bind failure as one line (trio reports it inside an exception group, 44 lines of traceback)."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    asked = " and ".join(f"{flag} {n}" for flag, n in (("--http-port", http_port), ("--ws-port", ws_port)) if n)
    if isinstance(first, OSError) and first.errno == errno.EADDRINUSE:
        return TrackerError(
            f"cannot listen on 127.0.0.1 ({asked or 'a free port'}): the port is already in use; pick another, or 0"
            " for any free port"
        )
    reason = getattr(first, "strerror", None) or str(first)
    return TrackerError(f"cannot listen on 127.0.0.1 ({asked or 'a free port'}): {reason}")
