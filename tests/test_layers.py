"""The layering rule of tracker/__init__.py, enforced: arrows point one way.

cli -> runtime -> (exchange | store | fake) -> bitstamp -> domain. The pure layers import no I/O libraries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tracker"
IO_LIBRARIES = {
    "trio",
    "trio_websocket",
    "httpx",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "h11",
    "wsproto",
    "prometheus_client",
}
# For each layer: the tracker layers it must not import.
FORBIDDEN = {
    "domain": {"bitstamp", "exchange", "store", "runtime", "cli", "fake"},
    "bitstamp": {"exchange", "store", "runtime", "cli", "fake"},
    "exchange": {"store", "runtime", "cli", "fake"},
    "store": {"exchange", "runtime", "cli", "fake"},
    "fake": {"exchange", "store", "runtime", "cli"},
    "runtime": {"cli"},
}
PURE = {"domain", "bitstamp"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules() -> list[tuple[str, Path]]:
    found = []
    for layer in FORBIDDEN:
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            found.append((layer, path))
    return found


@pytest.mark.parametrize(
    ("layer", "path"), modules(), ids=lambda v: str(v.relative_to(PACKAGE)) if isinstance(v, Path) else v
)
def test_layer_imports_point_one_way(layer: str, path: Path) -> None:
    for name in imports_of(path):
        parts = name.split(".")
        if parts[0] == "tracker" and len(parts) > 1:
            assert parts[1] not in FORBIDDEN[layer], f"{path.relative_to(PACKAGE)} ({layer}) imports {name}"
        if layer in PURE:
            assert parts[0] not in IO_LIBRARIES, f"{path.relative_to(PACKAGE)} is pure but imports {name}"


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom tracker.store import event_log\n", encoding="utf-8")
    assert {"trio", "tracker.store"} <= imports_of(bad)
