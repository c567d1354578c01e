"""The report's charts as inline SVG, drawn by pygal (pure: strings in, SVG text out).

Why pygal: SVG is its native output (not a backend of a raster library), so a chart is a few kilobytes of text that
stays sharp when printed to PDF and whose labels stay selectable text; it is pure Python with no required dependency
(matplotlib would bring numpy, pillow and fonttools into a service for five charts); it has been maintained since
2012 (3.x releases in 2026). Its optional tooltip script is loaded from the network by default: ``js=[]`` turns it off,
so every chart is static and the document opens offline (the browser test forbids any request).

Exactness: coordinates are floats (a bar's height need not be exact), but every label a reader sees beside a value is
the exact decimal text (``{"value": float, "label": exact}``), and every chart has its exact table under it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final

import pygal
from pygal.style import Style

from tracker.audit.coverage import Interval

# Importing pygal appends ``pygal.PluginImportFixer`` to ``sys.meta_path`` (so map plugins import as
# ``pygal.maps.<name>``). It implements only the legacy ``find_module``, so every later import in the process that
# reaches it emits an ImportWarning (an error under the test suite's ``filterwarnings = error``). We draw no maps:
# take it out again, here where pygal is imported, and nowhere else. tests/test_audit.py checks it is gone.
sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, pygal.PluginImportFixer)]

STYLE: Final = Style(
    background="white",
    plot_background="white",
    foreground="#222",
    foreground_strong="#111",
    foreground_subtle="#888",
    font_family="system-ui, sans-serif",
    colors=("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#c53030", "#2c7a7b", "#97266d"),
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    title_font_size=14,
)
TIMELINE_STYLE: Final = Style(**{**STYLE.to_dict(), "stroke_width": "12", "stroke_opacity": "1"})
MAX_X_LABELS: Final = 24


def _config(title: str, **extra: object) -> dict[str, object]:
    return {
        "title": title,
        "style": STYLE,
        "js": [],  # no tooltip script from the network: the document must open offline
        "disable_xml_declaration": True,
        "width": 960,
        "height": 360,
        "legend_at_bottom": True,
        "print_values": False,
        "truncate_legend": 40,
        **extra,
    }


def _render(chart: pygal.graph.graph.Graph) -> str:
    return str(chart.render(is_unicode=True))


def daily_bars(title: str, days: Sequence[str], series: Mapping[str, Mapping[str, Decimal]], unit: str) -> str:
    """A stacked bar per day, one series per key (e.g. market); ``series[key][day]`` is the exact value."""
    every = max(1, len(days) // MAX_X_LABELS)
    chart = pygal.StackedBar(
        **_config(title, x_label_rotation=30, show_minor_x_labels=False, x_labels_major_every=every, y_title=unit)
    )
    chart.x_labels = list(days)
    for key, values in series.items():
        chart.add(
            key or "(no market)",
            [
                {"value": float(values[day]), "label": f"{day} {key}: {values[day]} {unit}"} if day in values else None
                for day in days
            ],
        )
    return _render(chart)


def bars(title: str, labels: Sequence[str], values: Sequence[Decimal | int], unit: str = "") -> str:
    """One horizontal bar per label, the exact value as its printed label."""
    chart = pygal.HorizontalBar(**_config(title, height=max(160, 40 + 28 * len(labels)), show_legend=False))
    chart.x_labels = list(labels)
    chart.add(
        unit or title,
        [{"value": float(v), "label": f"{label}: {v} {unit}".strip()} for label, v in zip(labels, values, strict=True)],
    )
    return _render(chart)


def timeline(title: str, lanes: Mapping[str, Sequence[Interval]], start: datetime, end: datetime) -> str:
    """One lane per channel: a thick line where it was live, nothing where it was not (a gap)."""
    names = list(lanes)
    chart = pygal.DateTimeLine(
        **_config(
            title,
            height=max(180, 70 + 26 * len(names)),
            show_legend=False,
            allow_interruptions=True,
            show_dots=False,
            stroke_style={"width": 12, "linecap": "butt"},
            show_y_guides=False,
            style=TIMELINE_STYLE,
            range=(-0.5, len(names) - 0.5),
            x_label_rotation=20,
            x_value_formatter=lambda moment: moment.strftime("%m-%d %H:%M:%S"),
            margin_left=10,
        )
    )
    chart.y_labels = [{"label": _short(name), "value": i} for i, name in enumerate(names)]
    chart.xrange = (start, end)
    for i, name in enumerate(names):
        points: list[tuple[datetime, int] | None] = []
        for interval in lanes[name]:
            points += [(interval.start, i), (interval.end, i), None]
        chart.add(name, points or [None], stroke_style={"width": 12})
    return _render(chart)


def _short(channel: str) -> str:
    """``private-my_orders_btcusd-314159`` -> ``my_orders_btcusd`` (the account is in the heading)."""
    name = channel.removeprefix("private-")
    head, _, tail = name.rpartition("-")
    return head if tail.isdigit() else name


def balance_lines(
    title: str,
    computed: Mapping[str, Sequence[tuple[datetime, Decimal]]],
    snapshots: Mapping[str, Sequence[tuple[datetime, Decimal]]],
) -> str:
    """Computed balance over time per (sub-account, currency) as lines, each exchange snapshot as a dot beside it."""
    chart = pygal.DateTimeLine(
        **_config(title, x_label_rotation=20, x_value_formatter=lambda moment: moment.strftime("%Y-%m-%d %H:%M"))
    )
    for key, points in computed.items():
        chart.add(f"{key} computed", [{"value": (t, float(v)), "label": f"{key} {v}"} for t, v in points])
    for key, points in snapshots.items():
        chart.add(
            f"{key} exchange snapshot",
            [{"value": (t, float(v)), "label": f"{key} snapshot {v}"} for t, v in points],
            stroke=False,
            dots_size=5,
        )
    return _render(chart)
