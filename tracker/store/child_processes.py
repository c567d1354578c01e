"""Worker processes of ``tracker rebuild`` (``rebuild_parallel``) and of the chain walk (``chain_walk``): one shape.

Each worker is ``python -m <module>`` (not ``multiprocessing``'s spawn, which runs the parent's ``__main__`` again in
the child: ``python -m tracker`` would start a second CLI). Its spec is pickled on its stdin; its messages come back
on stdout as ``multiprocessing.connection`` frames (length-prefixed, read whole, so none waits in a read buffer):
``("done", result)`` ends a worker, ``("error", text)`` fails it, any other kind is the caller's (progress, batches).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from tracker.errors import StoreError


def spawn(module: str, env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start ``python -m module``; its stdin stays open for ``send_spec``, its stdout is read as a ``Connection``."""
    process = subprocess.Popen(
        [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(env)
    )
    assert process.stdout is not None
    pipe = Connection(os.dup(process.stdout.fileno()), writable=False)
    process.stdout.close()
    return process, pipe


def send_spec(process: subprocess.Popen[bytes], spec: object) -> None:
    assert process.stdin is not None
    pickle.dump(spec, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    process.stdin.close()


def collect(
    processes: Sequence[subprocess.Popen[bytes]],
    pipes: Sequence[Connection],
    handle: Callable[[int, tuple[Any, ...]], bool],
    *,
    died: str,
    failed: str,
) -> list[Any]:
    """Every worker's ``done`` result, in worker order. ``handle(index, message)`` takes the other messages (True:
    handled). A worker that dies raises ``StoreError(died)`` (``{code}``: its exit code); an ``error`` message or one
    ``handle`` refuses raises ``StoreError(f"{failed}: {text}")``.

    Returns as soon as every worker has sent ``done``, without waiting for them to exit: a worker's work is over
    then (its files closed), and its interpreter's teardown (freeing a heap of ~100 MB: 0.1-0.3 s) would hold up
    the caller (the rebuild's swap). The caller's ``stop`` reaps them (and kills one still tearing down)."""
    results: dict[int, Any] = {}
    pending = {pipe: index for index, pipe in enumerate(pipes)}
    while pending:
        for ready in wait(list(pending)):
            assert isinstance(ready, Connection)
            index = pending[ready]
            try:
                message = ready.recv()
            except EOFError:
                code = processes[index].wait()
                raise StoreError(died.format(code=code)) from None
            if message[0] == "done":
                results[index] = message[1]
                del pending[ready]
            elif not handle(index, message):
                raise StoreError(f"{failed}: {message[1]}")
    return [results[index] for index in range(len(processes))]


def stop(processes: Sequence[subprocess.Popen[bytes]], pipes: Sequence[Connection]) -> None:
    """Kill the workers still running and close every pipe (idempotent)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
    for pipe in pipes:
        pipe.close()


def child_main(spec_type: type, run: Callable[[Any, Connection], None], usage: str) -> None:
    """A worker's ``__main__``: its spec from stdin (refused unless a ``spec_type``), its messages to stdout."""
    spec = pickle.load(sys.stdin.buffer)
    if not isinstance(spec, spec_type):
        raise SystemExit(f"{usage}, not by hand")
    out = Connection(os.dup(sys.stdout.fileno()), readable=False)
    try:
        run(spec, out)
    finally:
        out.close()
