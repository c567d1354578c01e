"""Scheduled faults for ``tracker fake-exchange --fault ...`` (and tests): a tiny spec language.

reconnect-every=10s          bts:request_reconnect, tokens invalidated, sockets closed 3 s later
drop-every=30s               abrupt TCP drop of every connection
stall-every=60s,for=15s      connections go silent (no frames, no pongs, socket open) for 15 s
pause-every=30s,for=5s       frames withheld from every socket for 5 s (REST still shows them)
duplicate-every=5s           the next frame is delivered twice
malformed-every=20s          one invalid-JSON frame
unknown-every=20s            one frame with an unknown event name
token-ttl=5s                 websockets_token valid_sec (short TTL)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import trio

from tracker.fake.server import FakeExchange

KINDS = ("reconnect", "drop", "stall", "pause", "duplicate", "malformed", "unknown")
_DUR = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def parse_duration(text: str) -> float:
    m = _DUR.match(text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r} (examples: 500ms, 10s, 2m)")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value * 60 if m.group(2) == "m" else value


@dataclass(frozen=True, slots=True)
class FaultSpec:
    kind: str  # one of KINDS, or "token-ttl"
    every: float  # seconds (for token-ttl: the TTL)
    duration: float = 5.0  # stall / pause length


def parse_fault(text: str) -> FaultSpec:
    head, *opts = [p.strip() for p in text.split(",")]
    name, sep, value = head.partition("=")
    if not sep:
        raise ValueError(f"bad fault {text!r}: expected NAME=DURATION, e.g. reconnect-every=10s")
    duration = 5.0
    for opt in opts:
        key, _, v = opt.partition("=")
        if key != "for":
            raise ValueError(f"bad fault option {opt!r}: only for=DURATION")
        duration = parse_duration(v)
    if name == "token-ttl":
        return FaultSpec("token-ttl", parse_duration(value))
    kind = name.removesuffix("-every")
    if kind not in KINDS or not name.endswith("-every"):
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(k + '-every' for k in KINDS)}, token-ttl")
    return FaultSpec(kind, parse_duration(value), duration)


async def run_fault(fx: FakeExchange, spec: FaultSpec) -> None:
    """Apply ``spec`` forever (returns at once for token-ttl)."""
    if spec.kind == "token-ttl":
        fx.set_token_ttl(spec.every)
        return
    while True:
        await trio.sleep(spec.every)
        if spec.kind == "reconnect":
            await fx.request_reconnect()
        elif spec.kind == "drop":
            await fx.drop_connections()
        elif spec.kind == "stall":
            fx.stall()
            await trio.sleep(spec.duration)
            fx.unstall()
        elif spec.kind == "pause":
            fx.pause_delivery()
            await trio.sleep(spec.duration)
            fx.resume_delivery()
        elif spec.kind == "duplicate":
            fx.duplicate_next(1)
        elif spec.kind == "malformed":
            await fx.send_malformed()
        elif spec.kind == "unknown":
            await fx.send_unknown_event()
