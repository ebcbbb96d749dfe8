"""Result objects: what analyzers produce and what `results.json` stores.

An audit produces one :class:`AuditResult`. It contains one :class:`AnalyzerResult`
per analyzer (ran or skipped), the gate outcomes and the dataset summary. The
per-sample columns are not stored here but in `samples.parquet`.

`results.json` is the serialised form of :class:`AuditResult`. Its layout is
versioned by :data:`SCHEMA_VERSION`; readers should check that number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1
"""Version of the `results.json` layout. Raised on every incompatible change."""

Direction = Literal["higher_is_better", "lower_is_better", "neutral"]
Severity = Literal["info", "warning", "error"]

SEVERITIES: tuple[Severity, ...] = ("info", "warning", "error")


@dataclass
class Metric:
    """A scalar measure under a stable key `<analyzer>.<metric>`.

    Attributes:
        key: Stable key, e.g. `dataset.samples`. Gates and users refer to it.
        value: The measured value; None when it is undefined (e.g. a rate over
            zero samples).
        unit: Unit in words: `samples`, `fraction` (0..1), `tokens`, `km` ...
        direction: Whether larger values are better, worse or neither.
        description: One sentence stating what was counted over what.
    """

    key: str
    value: float | int | None
    unit: str
    direction: Direction
    description: str


@dataclass
class Table:
    """A named table of results, e.g. counts per country.

    Attributes:
        key: Stable key `<analyzer>.<table>`.
        title: Heading shown in the report.
        frame: The table itself. Stored in results.json as a list of records.
        description: What one row is.
        hidden: Left out of the generic table listing of the report, for
            tables that an analyzer's own report template shows its own way.
    """

    key: str
    title: str
    frame: pd.DataFrame
    description: str = ""
    hidden: bool = False


@dataclass
class Finding:
    """A counted problem in the dataset.

    Attributes:
        severity: `info`, `warning` or `error`.
        code: Stable kebab-case code, e.g. `metadata-unmatched`.
        message: One sentence for a person, stating the problem and the count.
        count: How many samples or rows show the problem.
        examples: Up to a few sample ids (or `row N` references for rows that
            never became samples) that show it.
        analyzer: Name of the analyzer or reader that reported it.
    """

    severity: Severity
    code: str
    message: str
    count: int
    examples: list[str] = field(default_factory=list)
    analyzer: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"invalid severity {self.severity!r}; use one of {SEVERITIES}")


@dataclass
class Figure:
    """A PNG figure produced by an analyzer.

    Attributes:
        key: Stable key `<analyzer>.<figure>`; the file is `figures/<key>.png`.
        title: Caption shown under the figure in the report.
        png: The PNG bytes. Not stored in results.json.
    """

    key: str
    title: str
    png: bytes


@dataclass
class AnalyzerResult:
    """Everything one analyzer produced, or why it was skipped.

    Attributes:
        name: Analyzer name, e.g. `vocabulary`.
        title: Heading for the report section.
        status: `ran` or `skipped`.
        reason: For a skipped analyzer, why (e.g. `no geometry`).
        metrics: Scalar metrics by key.
        tables: Tables by key.
        findings: Counted problems.
        figures: Figures by key.
        settings: Rule values the analyzer used (thresholds, lexicon file), so
            the report can state them.
    """

    name: str
    title: str
    status: Literal["ran", "skipped"] = "ran"
    reason: str = ""
    metrics: dict[str, Metric] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def add_metric(
        self,
        name: str,
        value: float | int | None,
        unit: str,
        direction: Direction,
        description: str,
    ) -> None:
        """Add a metric under the key `<analyzer>.<name>`."""
        key = f"{self.name}.{name}"
        self.metrics[key] = Metric(key, _plain_number(value), unit, direction, description)

    def add_table(
        self,
        name: str,
        title: str,
        frame: pd.DataFrame,
        description: str = "",
        hidden: bool = False,
    ) -> None:
        """Add a table under the key `<analyzer>.<name>`."""
        key = f"{self.name}.{name}"
        self.tables[key] = Table(key, title, frame, description, hidden)

    def add_figure(self, name: str, title: str, png: bytes) -> None:
        """Add a PNG figure under the key `<analyzer>.<name>`."""
        key = f"{self.name}.{name}"
        self.figures[key] = Figure(key, title, png)


@dataclass
class GateOutcome:
    """The result of one gate.

    Attributes:
        metric: Metric key the gate reads.
        comparison: One of `<`, `<=`, `>`, `>=`, `==`, `!=`.
        threshold: Value the metric is compared with.
        severity: `error` gates fail the run; `warning` gates only report.
        status: `pass`, `fail`, or `not-evaluated` when the metric was not
            computed (its analyzer was skipped or not selected) or is undefined.
        value: The metric value read, or None.
        message: One sentence for the report and the JUnit file.
    """

    metric: str
    comparison: str
    threshold: float
    severity: Severity
    status: Literal["pass", "fail", "not-evaluated"]
    value: float | int | None
    message: str

    @property
    def blocks_release(self) -> bool:
        """Whether this outcome makes the run exit with code 1."""
        return self.status == "fail" and self.severity == "error"


@dataclass
class AuditResult:
    """The outcome of one audit: the object `run_audit` returns.

    Attributes:
        dataset: Summary of the input: path, format, sample count, options.
        analyzers: Results by analyzer name, in run order.
        gates: Gate outcomes, in the order of the gates file.
        started: ISO time the run started (UTC).
        duration_s: Wall time of the run in seconds.
        eoaudit_version: Version of the package that wrote the result.
    """

    dataset: dict[str, Any]
    analyzers: dict[str, AnalyzerResult]
    gates: list[GateOutcome]
    started: str
    duration_s: float
    eoaudit_version: str

    @property
    def passed(self) -> bool:
        """True when no error-severity gate failed."""
        return not any(gate.blocks_release for gate in self.gates)

    @property
    def metrics(self) -> dict[str, Metric]:
        """All metrics of all analyzers that ran, by key."""
        merged: dict[str, Metric] = {}
        for analyzer in self.analyzers.values():
            merged.update(analyzer.metrics)
        return merged

    @property
    def findings(self) -> list[Finding]:
        """All findings, errors first."""
        everything = [f for a in self.analyzers.values() for f in a.findings]
        rank = {severity: i for i, severity in enumerate(reversed(SEVERITIES))}
        return sorted(everything, key=lambda f: rank[f.severity])

    def to_dict(self) -> dict[str, Any]:
        """Convert to the JSON-ready layout of `results.json`."""
        return {
            "schema_version": SCHEMA_VERSION,
            "eoaudit_version": self.eoaudit_version,
            "started": self.started,
            "duration_s": self.duration_s,
            "passed": self.passed,
            "dataset": self.dataset,
            "gates": [asdict(gate) for gate in self.gates],
            "analyzers": {
                name: _analyzer_to_dict(result) for name, result in self.analyzers.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], figures: dict[str, bytes]) -> AuditResult:
        """Rebuild a result from `results.json` content and the saved figure files.

        Raises:
            ValueError: When the schema version is not one this version reads.
        """
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"results.json has schema version {version!r}, but this eoaudit reads "
                f"version {SCHEMA_VERSION}; rerun `eoaudit run` to write it again"
            )
        analyzers = {
            name: _analyzer_from_dict(name, entry, figures)
            for name, entry in data["analyzers"].items()
        }
        gates = [GateOutcome(**gate) for gate in data["gates"]]
        return cls(
            dataset=data["dataset"],
            analyzers=analyzers,
            gates=gates,
            started=data["started"],
            duration_s=data["duration_s"],
            eoaudit_version=data["eoaudit_version"],
        )


def merge_findings(findings: list[Finding], max_examples: int = 5) -> list[Finding]:
    """Combine findings that share analyzer and code: counts add up, examples are kept in order.

    Partitions of a dataset each report their own findings; this gives the
    findings of the whole dataset. The first message of each code is kept, so
    messages must not contain the count.
    """
    merged: dict[tuple[str, str], Finding] = {}
    for finding in findings:
        key = (finding.analyzer, finding.code)
        if key not in merged:
            merged[key] = Finding(
                finding.severity,
                finding.code,
                finding.message,
                finding.count,
                list(finding.examples[:max_examples]),
                finding.analyzer,
            )
            continue
        target = merged[key]
        target.count += finding.count
        room = max_examples - len(target.examples)
        target.examples.extend(finding.examples[: max(room, 0)])
    return list(merged.values())


def _plain_number(value: Any) -> float | int | None:
    """Turn numpy scalars into Python numbers and NaN into None, for JSON."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool):
        return int(value)
    return cast(float | int, value)


def frame_to_records(frame: pd.DataFrame) -> dict[str, Any]:
    """Convert a table to `{"columns": [...], "rows": [[...], ...]}` with JSON values."""
    rows = []
    for row in frame.itertuples(index=False, name=None):
        rows.append([_json_cell(cell) for cell in row])
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


def _json_cell(cell: Any) -> Any:
    if isinstance(cell, (np.generic, float)):
        return _plain_number(cell)
    if isinstance(cell, pd.Timestamp):
        return cell.isoformat()
    if cell is None or cell is pd.NA or cell is pd.NaT:
        return None
    if isinstance(cell, (int, str, bool)):
        return cell
    return str(cell)


def _analyzer_to_dict(result: AnalyzerResult) -> dict[str, Any]:
    return {
        "title": result.title,
        "status": result.status,
        "reason": result.reason,
        "settings": result.settings,
        "metrics": {key: asdict(metric) for key, metric in result.metrics.items()},
        "tables": {
            key: {
                "title": table.title,
                "description": table.description,
                "hidden": table.hidden,
                **frame_to_records(table.frame),
            }
            for key, table in result.tables.items()
        },
        "findings": [asdict(finding) for finding in result.findings],
        "figures": {
            key: {"title": figure.title, "file": f"figures/{key}.png"}
            for key, figure in result.figures.items()
        },
    }


def _analyzer_from_dict(
    name: str, entry: dict[str, Any], figures: dict[str, bytes]
) -> AnalyzerResult:
    result = AnalyzerResult(
        name=name,
        title=entry["title"],
        status=entry["status"],
        reason=entry["reason"],
        settings=entry.get("settings", {}),
    )
    result.metrics = {key: Metric(**metric) for key, metric in entry["metrics"].items()}
    result.tables = {
        key: Table(
            key=key,
            title=table["title"],
            frame=pd.DataFrame(table["rows"], columns=table["columns"]),
            description=table.get("description", ""),
            hidden=table.get("hidden", False),
        )
        for key, table in entry["tables"].items()
    }
    result.findings = [Finding(**finding) for finding in entry["findings"]]
    result.figures = {
        key: Figure(key=key, title=figure["title"], png=figures.get(key, b""))
        for key, figure in entry["figures"].items()
    }
    return result
