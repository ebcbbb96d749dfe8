"""Rendering the HTML report from an AuditResult with the Jinja2 templates in `reports/`.

The page is one self-contained file: the CSS is inlined and figures are PNG
data URIs. Autoescaping is on for every template, so captions and values from
the dataset appear as text, never as markup.
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from eoaudit.results import AuditResult

TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"


def _environment() -> jinja2.Environment:
    folder = Path(str(resources.files("eoaudit.reports")))
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["number"] = format_number
    environment.filters["data_uri"] = _png_data_uri
    environment.filters["highlight"] = highlight
    return environment


def format_number(value: Any) -> str:
    """Format a metric or table value for people: 4 significant digits, thousands separated."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "\u2013"  # en dash for a missing value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


def highlight(text: str, spans: Any) -> Markup:
    """Escape `text` and wrap each span in `<mark>`.

    Args:
        text: The caption.
        spans: `[start, end]` or `[start, end, label]` character offsets into
            `text`, as lists or a JSON string of lists; overlapping spans are
            merged into the first. The label becomes the mark's title.
    """
    if isinstance(spans, str):
        spans = json.loads(spans) if spans else []
    pieces = []
    position = 0
    for span in sorted(spans or [], key=lambda s: (s[0], s[1])):
        start, end = int(span[0]), int(span[1])
        if start < position or end <= start:
            continue
        label = str(span[2]) if len(span) > 2 else ""
        pieces.append(escape(text[position:start]))
        pieces.append(Markup('<mark title="{}">{}</mark>').format(label, text[start:end]))
        position = end
    pieces.append(escape(text[position:]))
    return Markup("").join(pieces)


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_report(result: AuditResult, rules: dict[str, Any] | None = None) -> str:
    """Render the report page for an audit result.

    Args:
        result: The audit result.
        rules: Parsed rule files; only `thresholds.report` (size caps of the
            page) is read. The packaged defaults are used when None.
    """
    environment = _environment()
    limits = {"max_table_rows": 50, "max_findings": 200, "max_examples": 5}
    if rules and isinstance(rules.get("thresholds"), dict):
        limits.update(rules["thresholds"].get("report", {}))
    css = resources.files("eoaudit.reports").joinpath(STYLESHEET).read_text(encoding="utf-8")

    sections = []
    for analyzer in result.analyzers.values():
        partial = f"_{analyzer.name}.html.j2"
        custom = partial in environment.list_templates()
        sections.append({"analyzer": analyzer, "partial": partial if custom else None})

    findings = result.findings
    return environment.get_template(TEMPLATE).render(
        result=result,
        css=css,
        sections=sections,
        findings=findings[: limits["max_findings"]],
        findings_hidden=max(0, len(findings) - limits["max_findings"]),
        limits=limits,
    )
