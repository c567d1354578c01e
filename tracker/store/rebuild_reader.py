"""The one-process rebuild's reader: a child process that reads and parses the log while the rebuild folds.

A log the two-process rebuild cannot split (one market, or parts that share rows: ``rebuild_parallel.py``) is folded
in one process. Reading and parsing are about a third of that process's time (docs/storage.md, "Rebuild"), and the
second core sits idle. Here a child (``python -m tracker.store.rebuild_reader``, ``store/child_processes.py``) reads
the entries up to the head the rebuild saw when it started, parses each with ``parse_entry`` (the same function, so
the same events), and sends them in batches as msgspec MessagePack; the rebuilding process only decodes them, folds
and writes. Decoding costs about half of parsing (the parser makes one ``Decimal`` per distinct text, a decoder one per
field), so the gain is the read and half the parse.

The events are the same values: every event type is a msgspec struct of text, ints, booleans, ``Decimal`` (sent as its
exact text), aware UTC ``datetime`` and tuples of such structs, and ``tests/test_rebuild_reader.py`` holds the round
trip to ``repr`` equality (a ``Decimal``'s exponent included) over every event type the parser makes.

The reader is a speed trick, never a source of truth: the rebuild goes on in-process from its own checkpoint when the
reader fails or dies (``ReaderFailed``: a warning), and after the reader's last batch (the entries appended
meanwhile). What MessagePack cannot carry fails it on purpose, and the in-process fold then takes the entry as it is:
an integer beyond 64 bits, or a text with a lone surrogate (from a JSON escape in a frame); no exchange frame should
have either. Its spec (the database URL, which may hold a
password) goes by its stdin, never its arguments or environment. Every time the parser makes is aware UTC with
``fold`` 0; MessagePack does not carry ``fold``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final, get_args

import msgspec

from tracker.bitstamp.parse import parse_entry
from tracker.domain.events import DomainEvent
from tracker.store import child_processes as children
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.rebuild_parallel import NOT_FOR_WORKERS

EVENT_TYPES: Final[tuple[type[Any], ...]] = get_args(DomainEvent)
_INDEX: Final = {event_type: index for index, event_type in enumerate(EVENT_TYPES)}
_BATCH: Final = msgspec.msgpack.Decoder(list[tuple[int, msgspec.Raw]])


class ReaderFailed(Exception):
    """The reader process failed or died; the message says how (the rebuild goes on without it)."""


def encode_events(events: list[DomainEvent], encoder: msgspec.msgpack.Encoder) -> bytes:
    """A batch of events as MessagePack: ``[[type index, event], ...]`` (each event encoded by its own type)."""
    index = _INDEX
    return encoder.encode([(index[type(event)], event) for event in events])


class EventDecoder:
    """``encode_events``' inverse: one typed decoder per event type."""

    __slots__ = ("decoders",)

    def __init__(self) -> None:
        self.decoders = [msgspec.msgpack.Decoder(event_type).decode for event_type in EVENT_TYPES]

    def __call__(self, data: bytes) -> list[DomainEvent]:
        decoders = self.decoders
        return [decoders[index](raw) for index, raw in _BATCH.decode(data)]


@dataclass(frozen=True, slots=True)
class ReaderSpec:
    database: str  # the log's database URL, password included (on the child's stdin only)
    after: int  # the first entry read is the one after this seq
    until: int  # the last entry read is at most this seq
    batch: int  # entries a message
    fail_after: int | None = None  # tests: fail once this many batches are sent


def run_reader(spec: ReaderSpec, out: Connection) -> None:
    """The child's body: ``("events", last seq, bytes)`` a batch, then ``("done", last seq)`` or ``("error", text)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    try:
        last = _read(spec, out, os.getppid())
    except BaseException as error:  # every failure goes to the parent, which goes on without us
        out.send(("error", f"{type(error).__name__}: {error}"))
    else:
        out.send(("done", last))


def _read(spec: ReaderSpec, out: Connection, parent: int) -> int:
    engine = open_engine(spec.database, write=False)
    try:
        log, encoder, last, sent = EventLog(engine), msgspec.msgpack.Encoder(), spec.after, 0
        while last < spec.until:
            if os.getppid() != parent:
                raise RuntimeError("the rebuild that started this reader is gone")
            if spec.fail_after is not None and sent >= spec.fail_after:
                raise RuntimeError(f"failing after {sent} batches, as the test asked")
            entries = log.read_records_after(last, min(spec.batch, spec.until - last))
            if not entries:
                break
            last = entries[-1].seq
            out.send(("events", last, encode_events([parse_entry(entry) for entry in entries], encoder)))
            sent += 1
        return last
    finally:
        engine.dispose()


def reader_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The reader's environment: this one without the API credentials and the database URL (as the workers':
    ``rebuild_parallel.NOT_FOR_WORKERS``; the URL reaches it in its spec, on its stdin)."""
    return {name: value for name, value in environ.items() if name not in NOT_FOR_WORKERS}


def read_parsed(spec: ReaderSpec) -> Generator[list[DomainEvent], None, None]:
    """The events of the entries in (``spec.after``, ``spec.until``], a batch at a time, read and parsed by a child
    process. Raises ``ReaderFailed`` when the child reports a failure or dies; the child is stopped when the iteration
    ends, however it ends."""
    process, pipe = children.spawn(__name__, reader_environment(os.environ))
    try:
        children.send_spec(process, spec)
        decode = EventDecoder()
        while True:
            try:
                message = pipe.recv()
            except EOFError:
                raise ReaderFailed(f"the reader process died (exit code {process.wait()})") from None
            kind = message[0]
            if kind == "events":
                yield decode(message[2])
            elif kind == "done":
                return
            else:
                raise ReaderFailed(f"the reader process failed: {message[1]}")
    finally:
        children.stop([process], [pipe])


def _main() -> None:
    """The reader process: its spec from stdin, its messages to stdout (see ``read_parsed``)."""
    children.child_main(ReaderSpec, run_reader, "tracker.store.rebuild_reader is started by `tracker rebuild`")


if __name__ == "__main__":
    # As the imported module, not as __main__: the spec was pickled as tracker.store.rebuild_reader.ReaderSpec.
    from tracker.store.rebuild_reader import _main as main

    main()
