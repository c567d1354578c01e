"""The fold's read rule (``tracker.domain.projection``'s docstring), enforced two ways.

The fold touches a state table only through ``table.get(key)``, ``key in table`` and ``table[key] = row``: never
iterates it, takes its ``len`` or truth, reads ``table[key]``, deletes, or keeps it in a variable. The store relies
on it: its tables hold only a batch's prefetched rows and load the others on ``get`` / ``in``.

1. Over the source: an AST walk of the folding modules finds every ``state.<table>`` and checks what is done
   with it (and that the checker itself finds the violations it is meant to).
2. At run time: the fold over real event sequences (the fake exchange's model, hypothesis-drawn edge cases) with
   tables that have nothing but the three operations and, batch by batch, nothing in memory (every row comes from
   a backing "store" on ``get``): the rows must equal the plain-dict fold's.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline import Log
from test_ledger_fold import ledger_entries
from test_projection import domain_events

from tracker.domain.events import DomainEvent
from tracker.domain.log import NewEntry
from tracker.domain.projection import ProjectionState, apply, fold, refold_positions
from tracker.domain.rows import TABLES, FillRow, Row
from tracker.fake.model import AccountModel

DOMAIN = Path(__file__).resolve().parents[1] / "tracker" / "domain"
FOLD_MODULES = sorted(DOMAIN.glob("projection*.py"))
WHOLE_TABLE = {"table", "rows_of", "to_rows", "changed_rows", "__eq__"}  # not for the fold: see StateTable


# --- 1. the source -------------------------------------------------------------------------------------------------


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _state_params(function: ast.FunctionDef) -> Iterator[ast.arg]:
    for arg in [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]:
        if isinstance(arg.annotation, ast.Name | ast.Constant) and "ProjectionState" in ast.unparse(arg.annotation):
            yield arg


def violations(source: str) -> list[str]:
    """Every use of a state table (``state.<name in TABLES>``) other than ``.get(...)``, ``in`` / ``not in`` and
    item assignment, every whole-table method called on ``state`` outside ``ProjectionState`` itself, and every
    ``ProjectionState`` parameter not named ``state`` (the walk would not see through another name)."""
    tree = ast.parse(source)
    parents = _parents(tree)
    own = {
        inner
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == "ProjectionState"
        for inner in ast.walk(node)
    }  # the state's own methods may do anything with its tables
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            found += [f"line {a.lineno}: parameter {a.arg!r}" for a in _state_params(node) if a.arg != "state"]
        if node in own or not (
            isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "state"
        ):
            continue
        parent = parents[node]
        if node.attr in WHOLE_TABLE:
            found.append(f"line {node.lineno}: state.{node.attr}")
        elif node.attr in TABLES:
            get_call = (
                isinstance(parent, ast.Attribute) and parent.attr == "get" and isinstance(parents[parent], ast.Call)
            )
            stored = isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store)
            tested = (
                isinstance(parent, ast.Compare)
                and node in parent.comparators
                and all(isinstance(op, ast.In | ast.NotIn) for op in parent.ops)
            )
            if not (get_call or stored or tested):
                found.append(f"line {node.lineno}: {ast.unparse(parent)}")
    return found


@pytest.mark.parametrize("path", FOLD_MODULES, ids=lambda p: p.name)
def test_the_fold_reads_tables_only_through_get_and_in(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


def test_the_fold_modules_are_all_checked() -> None:
    """Every module that takes a ``ProjectionState`` is one the walk above reads."""
    takers = {p.name for p in DOMAIN.glob("*.py") if "state: ProjectionState" in p.read_text(encoding="utf-8")}
    assert takers and takers <= {p.name for p in FOLD_MODULES}


@pytest.mark.parametrize(
    "bad",
    [
        "def f(state: ProjectionState):\n    for key in state.orders:\n        pass\n",
        "def f(state: ProjectionState):\n    return len(state.fills)\n",
        "def f(state: ProjectionState):\n    return state.orders[key]\n",
        "def f(state: ProjectionState):\n    orders = state.orders\n",
        "def f(state: ProjectionState):\n    return list(state.positions.values())\n",
        "def f(state: ProjectionState):\n    del state.streams[key]\n",
        "def f(state: ProjectionState):\n    return state.counters.get\n",
        "def f(state: ProjectionState):\n    return bool(state.settlements)\n",
        "def f(state: ProjectionState):\n    return state.table('orders')\n",
        "def f(s: ProjectionState):\n    pass\n",
    ],
)
def test_the_source_check_finds_each_kind_of_violation(bad: str) -> None:
    assert violations(bad)


def test_the_source_check_lets_the_three_operations_through() -> None:
    good = (
        "def f(state: ProjectionState):\n"
        "    row = state.orders.get(key)\n"
        "    if key in state.fills or key not in state.positions:\n"
        "        state.orders[key] = row\n"
    )
    assert violations(good) == []


# --- 2. run time ---------------------------------------------------------------------------------------------------


class StoredTable:
    """The three operations and nothing else; nothing in memory when a batch starts (``stored``: the "database",
    read on every miss, written after each batch). Anything else the fold did would raise a ``TypeError`` or an
    ``AttributeError`` (no ``__iter__``, ``__len__``, ``__getitem__``, ``__delitem__``, ``values``...)."""

    __slots__ = ("memory", "reads", "stored")

    def __init__(self, stored: dict[Any, Row]) -> None:
        self.stored = stored
        self.memory: dict[Any, Row] = {}
        self.reads = 0

    def get(self, key: Any, /) -> Row | None:
        if key in self.memory:
            return self.memory[key]
        self.reads += 1
        return self.stored.get(key)

    def __contains__(self, key: object, /) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: Any, row: Row, /) -> None:
        self.memory[key] = row

    def __bool__(self) -> bool:
        raise TypeError("the fold asked whether a state table is empty")


def fills_by(fills: StoredTable, column: str) -> Callable[[str, str], list[FillRow]]:
    """A ``PositionFills`` (``column`` "position_id") or an ``OrderFills`` ("order_id") over a ``StoredTable`` of
    fills: the stored ones with the batch's in their place (what the store's index query and ``FillsReader`` give)."""

    def read(account: str, value: str) -> list[FillRow]:
        rows = {**fills.stored, **fills.memory}.values()
        return [r for r in rows if isinstance(r, FillRow) and r.account == account and getattr(r, column) == value]

    return read


def fold_in_batches(events: Sequence[DomainEvent], size: int) -> dict[str, dict[Any, Row]]:
    """As the store folds: per batch a fresh state on ``StoredTable``s, the batch's end (``refold_positions``), then
    its dirty rows "written"."""
    stored: dict[str, dict[Any, Row]] = {name: {} for name in TABLES}
    checkpoint = 0
    for start in range(0, len(events), size):
        tables = {name: StoredTable(stored[name]) for name in TABLES}
        state = ProjectionState(
            tables=tables,
            position_fills=fills_by(tables["fills"], "position_id"),
            order_fills=fills_by(tables["fills"], "order_id"),
        )
        state.checkpoint = checkpoint
        for event in events[start : start + size]:
            apply(state, event)
        refold_positions(state)
        for name, keys in state.dirty.items():
            for key in keys:
                stored[name][key] = tables[name].memory[key]
        checkpoint = state.checkpoint
    return stored


def _as_dicts(state: ProjectionState) -> dict[str, dict[Any, Row]]:
    return {name: dict(state.rows_of(name)) for name in TABLES}


def model_events(seed: int, steps: int) -> list[DomainEvent]:
    """The fake exchange's account over ``steps`` steps, then its first 300 events again (replays: what is seen
    again is counted, not applied twice)."""
    model = AccountModel(seed, ("btcusd", "ethusd", "btcusd-perp", "ethusd-perp"))
    log = Log("acc")
    for i in range(steps):
        for emission in model.step(1_790_000_000_000_000 + i * 250_000):
            log.ws(emission.text)
    events = log.events()
    return events + [msgspec.structs.replace(event, seq=event.seq + len(events)) for event in events[:300]]


@pytest.mark.parametrize("size", [1, 97, 100_000])
def test_the_fold_on_stored_tables_equals_the_fold_on_dicts(size: int) -> None:
    events = model_events(3, 800)
    kinds = {type(event).__name__ for event in events}
    assert {"OrderEvent", "Fill", "SelfTrade", "Settlement", "LiquidationAlert"} <= kinds, kinds
    whole = _as_dicts(fold(events))
    assert whole["counters"], "the replays were counted"
    assert fold_in_batches(events, size) == whole


@settings(max_examples=200, deadline=None)
@given(domain_events(), st.integers(min_value=1, max_value=12))
def test_edge_cases_on_stored_tables_equal_the_fold_on_dicts(events: list[DomainEvent], size: int) -> None:
    assert fold_in_batches(events, size) == _as_dicts(fold(events))


@pytest.mark.parametrize(
    "misuse",
    [iter, len, bool, lambda t: t[("acc", "1")], lambda t: t.values(), lambda t: t.pop(("acc", "1"))],
)
def test_a_stored_table_refuses_everything_else(misuse: Callable[[StoredTable], object]) -> None:
    with pytest.raises((TypeError, AttributeError)):
        misuse(StoredTable({}))


@settings(max_examples=100, deadline=None)
@given(ledger_entries(), st.integers(min_value=1, max_value=7))
def test_the_ledger_on_stored_tables_equals_the_fold_on_dicts(entries: list[NewEntry], size: int) -> None:
    """Random ledgers (legs, snapshots, rows under two trade accounts): the ledger's fold keeps the read rule too."""
    log = Log("acc")
    for entry in entries:
        log.append(entry)
    events = log.events()
    assert fold_in_batches(events, size) == _as_dicts(fold(events))
