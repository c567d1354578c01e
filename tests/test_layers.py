"""The layering rule of tracker/__init__.py, enforced: arrows point one way.

cli -> runtime -> (exchange | store | fake) -> bitstamp -> domain. The pure layers import no I/O libraries. The
top-level modules have places of their own: ``errors`` and ``logs`` import nothing of tracker, ``metrics`` and
``progress`` only ``errors``, ``config`` also ``store`` (a database URL is read by the store's rules) and
``subaccount_keys`` (the sub-accounts' own keys, read with the settings; it imports only ``config``). Only
``store/``, ``cli/`` and ``migrations/`` talk SQL (import sqlalchemy or alembic). Absolute and relative imports
alike, at any depth (an import inside a function counts).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tracker"
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
    "orjson",
    "msgspec",
}
SQL_LIBRARIES = {"sqlalchemy", "alembic", "psycopg"}
SQL_LAYERS = {"store", "cli", "migrations"}
TOP_LEVEL = {"config", "subaccount_keys", "logs", "metrics", "errors", "progress"}
EVERYTHING = {"domain", "bitstamp", "exchange", "store", "runtime", "cli", "fake", "audit", "export", *TOP_LEVEL}
# For each layer (package or top-level module): the tracker layers it must not import.
FORBIDDEN = {
    "domain": EVERYTHING - {"domain", "errors"},
    "bitstamp": EVERYTHING - {"domain", "bitstamp", "errors"},
    # The audit report's pure document builder (values, coverage fold, charts, HTML): store and cli import it.
    "audit": EVERYTHING - {"domain", "audit", "errors"},
    # Ledger exports and Bitstamp statements (rows in, CSV text out; statement rows to log entries): store and cli
    # import it; it reads the wire layer's canonical JSON and channel names.
    "export": EVERYTHING - {"domain", "bitstamp", "export", "errors"},
    "exchange": {"store", "runtime", "cli", "fake", "config", "subaccount_keys", "metrics", "progress", "export"},
    "store": {"exchange", "runtime", "cli", "fake", "config", "subaccount_keys", "metrics"},
    "fake": {"exchange", "store", "runtime", "cli", "metrics", "progress", "audit", "export"},
    "runtime": {"cli"},
    "cli": set(),
    "errors": EVERYTHING - {"errors"},
    "logs": EVERYTHING - {"logs"},
    "progress": EVERYTHING - {"progress"},
    # Settings sit beside runtime: validating a database URL reads it by the store's (SQLAlchemy's) rules; what may be
    # shown of a URL is the logs' rule (``hide_password``, a leaf), as the exchange's messages use it too.
    "config": EVERYTHING - {"config", "errors", "store", "subaccount_keys", "logs"},
    "subaccount_keys": EVERYTHING - {"subaccount_keys", "config", "errors"},
    "metrics": EVERYTHING - {"metrics", "errors"},
}
PURE = {"domain", "bitstamp", "errors", "audit", "export"}
# orjson is a pure function of bytes: the parser's fast JSON decoder in the wire layer, and in the domain the writer of
# the hash chain's input (chain._fast_values, the reference's bytes). msgspec likewise: the typed decoder of the hot
# frames (bitstamp/parse_typed.py), and the structs the projected rows are (domain/rows.py).
PURE_ALLOWED = {"bitstamp": {"orjson", "msgspec"}, "domain": {"orjson", "msgspec"}}


def _module_name(path: Path, root: Path = ROOT) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against its package (its place under ``root``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = _module_name(path, root).split(".") if path.is_relative_to(root) else [path.stem]
    package = module if path.name == "__init__.py" else module[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names.add(base)
            # ``from tracker import store`` and ``from . import gaps`` import submodules by name.
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        if layer in FORBIDDEN:
            found.append((layer, path))
    return found


def _ids(value: object) -> str:
    return str(value.relative_to(ROOT)) if isinstance(value, Path) else str(value)


def test_every_module_has_a_layer() -> None:
    unplaced = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if layer_of(p) not in FORBIDDEN and p.name not in ("__init__.py", "__main__.py")
    }
    assert not unplaced, f"modules with no layer in tests/test_layers.py: {sorted(unplaced)}"


@pytest.mark.parametrize(("layer", "path"), modules(), ids=_ids)
def test_layer_imports_point_one_way(layer: str, path: Path) -> None:
    for name in imports_of(path):
        parts = name.split(".")
        if parts[0] == "tracker" and len(parts) > 1:
            assert parts[1] not in FORBIDDEN[layer], f"{path.relative_to(PACKAGE)} ({layer}) imports {name}"
        if layer in PURE:
            allowed = PURE_ALLOWED.get(layer, set())
            assert parts[0] not in IO_LIBRARIES - allowed, f"{path.relative_to(PACKAGE)} is pure but imports {name}"


@pytest.mark.parametrize(
    "path", [*sorted(PACKAGE.rglob("*.py")), *sorted((ROOT / "migrations").rglob("*.py"))], ids=_ids
)
def test_only_store_cli_and_migrations_talk_sql(path: Path) -> None:
    layer = "migrations" if path.is_relative_to(ROOT / "migrations") else layer_of(path)
    if layer in SQL_LAYERS:
        return
    sql = {name for name in imports_of(path) if name.split(".")[0] in SQL_LIBRARIES}
    assert not sql, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(sql)}: SQL belongs in tracker/store/"


def test_the_rules_catch_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom tracker.store import event_log\n", encoding="utf-8")
    assert {"trio", "tracker.store", "tracker.store.event_log"} <= imports_of(bad)


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    # A module that sits in tracker/domain/ and imports upwards with relative imports: a copy of the package's layout
    # under tmp_path, not a file written into tracker/ (another xdist worker's test reading tracker/domain/*.py could
    # find it there and lose it half-way).
    probe = tmp_path / "tracker" / "domain" / "_layers_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "def f():\n    from ..store import event_log\n    from . import gaps\n    from .. import runtime\n",
        encoding="utf-8",
    )
    names = imports_of(probe, root=tmp_path)
    assert {"tracker.store", "tracker.store.event_log", "tracker.domain.gaps", "tracker.runtime"} <= names
    assert any(n.split(".")[1] in FORBIDDEN["domain"] for n in names if n.startswith("tracker."))
