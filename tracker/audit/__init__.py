"""The audit report (``tracker audit``), pure: its content as values (``model``), the coverage fold over the log's
tracker-made entries (``coverage``), exact cell text (``cells``), charts as SVG (``charts``, pygal) and the HTML
document (``html``). The queries that fill the model live in ``tracker/store/audit_queries.py``; the command that
ties them together, in ``tracker/cli/audit.py``.

Layer: beside ``domain`` (it imports only ``domain`` and ``errors`` of tracker; ``store`` and ``cli`` import it).
"""
