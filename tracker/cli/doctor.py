"""``tracker doctor``: read-only, with the user's real key: what the exchange answers for everything tracker relies on.

One line per endpoint and channel: answered or not, the status or code and what tracker does about it, whether the
answer was signed, and the fields known / unknown / missing against what tracker parses; under it, an optional field
tracker leans on that no frame carried (``field_catalog.LEANED_ON``). ``--out FILE`` writes the same as JSON for a bug
report, with the key, the secret and the token removed (``--redact-amounts`` also replaces every number in the sample
rows). Exit 0 when tracker can run on this account, 1 when it cannot (the essential probes: the token,
``user_transactions/``, the order and trade channels; the clock within 150 s). With the config file's ``[[accounts]]``
(and no key in the environment): every listed account in turn, one report each (``--out``: a JSON list of them), exit 0
when tracker can run on all."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tracker.cli import add_common_flags, finite_number
from tracker.logs import hide_password

AMOUNT = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor", help="ask the exchange, read-only, what tracker relies on; one line per endpoint and channel"
    )
    add_common_flags(parser)
    parser.add_argument("--markets", help="comma-separated market symbols (env TRACKER_MARKETS; default: discover)")
    parser.add_argument("--api-url", dest="api_url", help="Bitstamp HTTP API base URL (env BITSTAMP_API_URL)")
    parser.add_argument("--ws-url", dest="ws_url", help="Bitstamp WebSocket URL (env BITSTAMP_WS_URL)")
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="allow plain http:// to non-loopback hosts"
    )
    parser.add_argument("--listen", type=_seconds, default=5.0, metavar="SECONDS", help="seconds per channel (5)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the report as JSON (secrets removed)")
    parser.add_argument(
        "--redact-amounts", action="store_true", help="with --out: replace every number in the sample rows"
    )
    parser.set_defaults(func=cmd_doctor)


def _seconds(text: str) -> float:
    value = finite_number(text, "seconds")
    if not 0 <= value <= 300:
        raise argparse.ArgumentTypeError(f"must be between 0 and 300 seconds, got {text}")
    return value


def cmd_doctor(args: argparse.Namespace) -> int:
    import trio

    from tracker.config import load_accounts, load_settings
    from tracker.exchange.rest import BitstampClient
    from tracker.logs import scrub
    from tracker.runtime.doctor import run_doctor

    flags = {"markets": args.markets, "api_url": args.api_url, "ws_url": args.ws_url, "insecure": args.insecure}
    settings = load_settings(flags=flags)
    # The config file's [[accounts]] (no key in the environment): every listed account in turn, as `tracker run`
    # would track them.
    accounts = load_accounts(flags=flags) if not settings.api_key and settings.accounts_in_file else (settings,)
    reports: list[dict[str, Any]] = []
    can_run = True
    for number, one in enumerate(accounts, 1):
        key, secret = one.require_credentials()

        async def main(one: Any = one, key: str = key, secret: str = secret) -> Any:
            async with BitstampClient(one.api_url, key, secret) as client:
                return await run_doctor(
                    client,
                    api_url=one.api_url,
                    ws_url=one.ws_url,
                    markets=one.markets or (),
                    listen_s=args.listen,
                )

        report = trio.run(main)
        if len(accounts) > 1:
            print(f"{'' if number == 1 else chr(10)}== account {number} of [[accounts]]")
        # A password in a URL is echoed by the probes' error lines: shown as u:***@, on screen and in --out.
        hide = partial(without_url_passwords, urls=(one.api_url, one.ws_url))
        print(hide(format_report(report.as_data())))
        reports.append(
            redact_report(
                report.as_data(),
                secrets=(key, secret),
                amounts=args.redact_amounts,
                scrub=_then(scrub, hide),
            )
        )
        can_run = can_run and report.can_run
    if args.out is not None:
        data: Any = reports[0] if len(reports) == 1 else reports  # several accounts: a list, in the file's order
        args.out.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"written: {args.out} (key, secret and token removed{'; amounts too' if args.redact_amounts else ''})")
    return 0 if can_run else 1


def redact_report(
    data: Any, *, secrets: tuple[str, ...], amounts: bool, scrub: Callable[[str], str] = lambda s: s
) -> Any:
    """The report with every secret (and the token, which ``scrub`` knows) replaced, and with ``amounts`` every
    number in the sample rows."""

    def walk(value: Any, in_sample: bool) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, in_sample or k == "sample") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, in_sample) for v in value]
        if isinstance(value, str):
            for secret in secrets:
                if secret:
                    value = value.replace(secret, "***")
            value = scrub(value)
            if amounts and in_sample and AMOUNT.fullmatch(value):
                return "<amount>"
            return value
        if amounts and in_sample and isinstance(value, int | float) and not isinstance(value, bool):
            return "<amount>"
        return value

    return walk(data, False)


def _then(first: Callable[[str], str], second: Callable[[str], str]) -> Callable[[str], str]:
    return lambda text: second(first(text))


def without_url_passwords(text: str, urls: Sequence[str]) -> str:
    """``text`` with each of ``urls`` that holds a password shown as ``hide_password`` shows it (``u:***@``)."""
    for url in urls:
        text = text.replace(url, hide_password(url))
    return text


def format_report(data: dict[str, Any]) -> str:
    """The report as lines (pure)."""
    lines = [
        f"tracker doctor: {hide_password(data['api_url'])} and {hide_password(data['ws_url'])}, {data['checked_at']}"
    ]
    skew = data.get("clock_skew_s")
    if skew is None and not any(p["ok"] for p in data["probes"] if p["name"].startswith("rest:")):
        lines.append("clock     unknown: no REST call was answered (see REST below)")
    elif skew is None:
        lines.append("clock     unknown: the exchange sent no Date header")
    else:
        verdict = "ok" if abs(skew) <= 150 else "TOO FAR (API0017 beyond 150 s: sync the clock)"
        lines.append(
            f"clock     {verdict}: the exchange's clock is {abs(skew):g} s {'ahead of' if skew >= 0 else 'behind'} ours"
        )
    markets = ", ".join(data.get("markets") or []) or "none found"
    lines.append(f"account   {data.get('account') or 'unknown (no token)'}; markets: {markets}")
    lines.append(f"GET query signed as {data.get('get_query_signed_as')!r}")
    for section, prefix in (("REST", "rest:"), ("channels", "ws")):
        lines.append(section)
        for probe in (p for p in data["probes"] if p["name"].startswith(prefix)):
            lines.append("  " + _probe_line(probe))
    essential = [p for p in data["probes"] if p["essential"] and not p["ok"]]
    degraded = [p["name"] for p in data["probes"] if not p["essential"] and not p["ok"]]
    if data["can_run"]:
        tail = f"; degraded (tracker runs without them): {', '.join(degraded)}" if degraded else ""
        lines.append(f"verdict: tracker can run on this account{tail}")
    else:
        names = ", ".join(p["name"] for p in essential) or "the clock"
        lines.append(f"verdict: tracker cannot run on this account: {names} failed")
    return "\n".join(lines)


def _probe_line(probe: dict[str, Any]) -> str:
    name = probe["name"].split(":", 1)[-1]
    state = "ok  " if probe["ok"] else "FAIL"
    parts = [f"{state}  {name:<48}"]
    if not probe["ok"]:
        code = probe.get("code") or probe.get("status")
        how = f" → {probe['disposition']}" if probe.get("disposition") else ""
        parts.append(f"{code or ''}{how}: {probe['detail']}".lstrip(": "))
    else:
        parts.append(probe["detail"])
        if probe.get("signed") is False:
            parts.append("UNSIGNED")
    fields = probe.get("fields")
    if fields:
        text = f"fields: {len(fields['known'])} known"
        if fields["unknown"]:
            text += f", unknown: {', '.join(fields['unknown'])}"
        if fields["missing"]:
            text += f", MISSING: {', '.join(fields['missing'])}"
        parts.append(text)
    line = "  ".join(parts)
    for absent in (fields or {}).get("absent", ()):  # (an older report's JSON has none)
        line += f"\n        absent: {absent['field']} in every frame: {absent['meaning']}"
    return line
