"""Running an audit: samples through the analyzers, then gates.

:func:`run_audit` is the library entry point; the CLI only parses options and
calls it. Each analyzer sees the samples chunk by chunk, its partial states are
merged in chunk order, and its per-sample columns are joined onto the samples.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from tqdm import tqdm

from eoaudit import __version__
from eoaudit.analyzers import AuditContext, registered_analyzers
from eoaudit.errors import UsageError
from eoaudit.gates import evaluate_gates, parse_gates
from eoaudit.results import AnalyzerResult, AuditResult
from eoaudit.ruleset import load_rules, load_yaml
from eoaudit.samples import SampleSet

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 10_000


@dataclass
class AuditOptions:
    """How to run an audit.

    Attributes:
        analyzers: Analyzer names to run, in any order; all registered ones
            when None. The `dataset` analyzer always runs.
        gates: Gates file; the packaged `rules/gates.yaml` when None.
        rules_dir: Folder whose YAML files replace the packaged rule files.
        chunk_size: Samples per chunk; bounds the memory of one analyzer step.
        sample: Audit a random subset of this many samples; all when None.
        seed: Seed of the random subset.
        progress: Show progress bars on stderr.
        cache_dir: Folder for caches kept between runs.
        analyzer_options: Options for individual analyzers, by name.
    """

    analyzers: list[str] | None = None
    gates: Path | None = None
    rules_dir: Path | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    sample: int | None = None
    seed: int = 0
    progress: bool = False
    cache_dir: Path | None = None
    analyzer_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Audit:
    """An audit's outcome: the results and the samples with per-sample columns.

    Per-sample columns are named `<analyzer>.<column>`.
    """

    result: AuditResult
    samples: gpd.GeoDataFrame


def select_analyzers(names: list[str] | None) -> list[str]:
    """Return the analyzer names to run, in run order, `dataset` first.

    Raises:
        UsageError: When a name is not a registered analyzer.
    """
    available = registered_analyzers()
    if names is None:
        return list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UsageError(
            f"unknown analyzer(s) {', '.join(unknown)}; available: {', '.join(available)}"
        )
    wanted = set(names) | {"dataset"}
    return [name for name in available if name in wanted]


def run_audit(dataset: SampleSet, options: AuditOptions | None = None) -> Audit:
    """Run the analyzers and gates over a loaded dataset.

    Raises:
        UsageError: On an unknown analyzer or invalid option values.
        InputError: On an unreadable rules or gates file.
    """
    options = options or AuditOptions()
    if options.chunk_size < 1:
        raise UsageError(f"chunk size must be at least 1, got {options.chunk_size}")
    started = datetime.now(UTC)
    clock = time.perf_counter()

    names = select_analyzers(options.analyzers)
    rules = load_rules(options.rules_dir)
    gates_source = options.gates or None
    gates_data = load_yaml(gates_source) if gates_source else rules["gates"]
    gates = parse_gates(gates_data, str(gates_source or "rules/gates.yaml"))

    samples = subset(dataset.samples, options.sample, options.seed)
    context = AuditContext(
        rules=rules,
        options=dict(options.analyzer_options),
        cache_dir=options.cache_dir,
        sample_count=len(samples),
        sample_columns=pd.DataFrame(index=samples.index),
        rows_read=dataset.rows_read if options.sample is None else len(samples),
        reader_findings=list(dataset.findings),
    )

    results: dict[str, AnalyzerResult] = {}
    for name in names:
        results[name] = _run_analyzer(name, samples, context, options)

    merged = (
        samples.join(context.sample_columns) if len(context.sample_columns.columns) else samples
    )
    result = AuditResult(
        dataset={
            "path": dataset.source,
            "format": dataset.format,
            "rows_read": dataset.rows_read,
            "samples": len(samples),
            "subset": {"size": options.sample, "seed": options.seed} if options.sample else None,
            "analyzers": names,
            "chunk_size": options.chunk_size,
        },
        analyzers=results,
        gates=[],
        started=started.isoformat(timespec="seconds"),
        duration_s=0.0,
        eoaudit_version=__version__,
    )
    result.gates = evaluate_gates(gates, result.metrics)
    result.duration_s = round(time.perf_counter() - clock, 3)
    return Audit(result, merged)


def subset(samples: gpd.GeoDataFrame, size: int | None, seed: int) -> gpd.GeoDataFrame:
    """Draw a random subset of `size` samples, kept in their original order.

    Raises:
        UsageError: When `size` is not positive.
    """
    if size is None or size >= len(samples):
        return samples
    if size < 1:
        raise UsageError(f"--sample must be at least 1, got {size}")
    chosen = samples.sample(n=size, random_state=seed).index
    return samples.loc[samples.index.isin(chosen)]


def _run_analyzer(
    name: str, samples: gpd.GeoDataFrame, context: AuditContext, options: AuditOptions
) -> AnalyzerResult:
    cls = registered_analyzers()[name]
    analyzer = cls(context)
    reason = analyzer.skip_reason(samples)
    if reason is not None:
        logger.info("%s: skipped, %s", name, reason)
        return AnalyzerResult(name=name, title=cls.title, status="skipped", reason=reason)

    logger.info("%s: running on %d samples", name, len(samples))
    clock = time.perf_counter()
    state = None
    columns = []
    starts = range(0, len(samples), options.chunk_size)
    for start in tqdm(starts, desc=name, unit="chunk", disable=not options.progress, leave=False):
        chunk = samples.iloc[start : start + options.chunk_size]
        partial = analyzer.map_chunk(chunk)
        state = partial.state if state is None else analyzer.merge(state, partial.state)
        if partial.columns is not None:
            columns.append(partial.columns)

    result = AnalyzerResult(name=name, title=cls.title, settings=analyzer.settings())
    analyzer.finalize(state, result)
    if columns:
        frame = pd.concat(columns)
        frame.columns = [f"{name}.{c}" for c in frame.columns]
        if not frame.index.isin(samples.index).all():
            raise RuntimeError(f"{name}: per-sample columns name sample ids not in the audit")
        context.sample_columns = context.sample_columns.join(frame)
    logger.info("%s: done in %.2f s", name, time.perf_counter() - clock)
    return result


__all__ = ["Audit", "AuditOptions", "run_audit", "select_analyzers", "subset"]
