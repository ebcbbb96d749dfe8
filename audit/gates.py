"""Gates: thresholds on metrics that decide the exit code, and their JUnit XML."""

from __future__ import annotations

import operator
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eoaudit.errors import InputError
from eoaudit.output import write_atomic
from eoaudit.results import GateOutcome, Metric, Severity

COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Gate:
    """One threshold on one metric, as written in a gates file."""

    metric: str
    comparison: str
    threshold: float
    severity: Severity


def parse_gates(data: Any, source: str) -> list[Gate]:
    """Validate the content of a gates file.

    Raises:
        InputError: Naming the gate and the field that is wrong.
    """
    if not isinstance(data, dict) or not isinstance(data.get("gates"), list):
        raise InputError(f"{source}: expected a mapping with a 'gates' list")
    gates = []
    for number, entry in enumerate(data["gates"], start=1):
        where = f"{source}, gate {number}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping with metric, comparison, threshold")
        unknown = set(entry) - {"metric", "comparison", "threshold", "severity"}
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        metric = entry.get("metric")
        if not isinstance(metric, str) or "." not in metric:
            raise InputError(f"{where}: metric {metric!r} is not a key like 'dataset.samples'")
        comparison = str(entry.get("comparison", ""))
        if comparison not in COMPARISONS:
            raise InputError(
                f"{where}: comparison {comparison!r} is invalid; "
                f"use one of {', '.join(COMPARISONS)}"
            )
        threshold = entry.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise InputError(f"{where}: threshold {threshold!r} is not a number")
        severity = entry.get("severity", "error")
        if severity not in ("warning", "error"):
            raise InputError(f"{where}: severity {severity!r} is invalid; use error or warning")
        gates.append(Gate(metric, comparison, float(threshold), severity))
    return gates


def evaluate_gates(gates: list[Gate], metrics: dict[str, Metric]) -> list[GateOutcome]:
    """Compare each gate's metric with its threshold."""
    outcomes = []
    for gate in gates:
        metric = metrics.get(gate.metric)
        rule = f"{gate.metric} {gate.comparison} {gate.threshold:g}"
        if metric is None or metric.value is None:
            why = "was not computed" if metric is None else "is undefined for this dataset"
            outcomes.append(
                GateOutcome(
                    gate.metric,
                    gate.comparison,
                    gate.threshold,
                    gate.severity,
                    "not-evaluated",
                    None,
                    f"{rule}: not evaluated, the metric {why}",
                )
            )
            continue
        passed = COMPARISONS[gate.comparison](metric.value, gate.threshold)
        status = "pass" if passed else "fail"
        outcomes.append(
            GateOutcome(
                gate.metric,
                gate.comparison,
                gate.threshold,
                gate.severity,
                status,
                metric.value,
                f"{rule}: {status}, value {metric.value:.6g}",
            )
        )
    return outcomes


def write_junit(outcomes: list[GateOutcome], path: Path) -> None:
    """Write the gate outcomes as JUnit XML, one test case per gate.

    A failed error gate is a `<failure>`, a failed warning gate a passing test
    case with the message in `<system-out>`, and a gate not evaluated is
    `<skipped>`. The file is written to a temporary name and renamed.
    """
    failures = sum(1 for o in outcomes if o.blocks_release)
    skipped = sum(1 for o in outcomes if o.status == "not-evaluated")
    suite = ET.Element(
        "testsuite",
        name="eoaudit.gates",
        tests=str(len(outcomes)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    for outcome in outcomes:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"eoaudit.gates.{outcome.severity}",
            name=f"{outcome.metric} {outcome.comparison} {outcome.threshold:g}",
        )
        if outcome.status == "not-evaluated":
            ET.SubElement(case, "skipped", message=outcome.message)
        elif outcome.blocks_release:
            failure = ET.SubElement(case, "failure", message=outcome.message, type="gate")
            failure.text = outcome.message
        elif outcome.status == "fail":
            ET.SubElement(case, "system-out").text = f"warning: {outcome.message}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    buffer = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    write_atomic(path, buffer)
