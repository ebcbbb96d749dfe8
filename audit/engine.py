"""Running an audit: partitions through the analyzers, then gates.

:func:`run_audit` is the library entry point; the CLI only parses options and
calls it. The dataset is split into partitions; each partition is analysed by
every analyzer (in this process or on Dask workers, see
:mod:`eoaudit.execution`), the analyzers' partial states are merged in
partition order, and finally each analyzer turns its merged state into
metrics, tables, findings and figures.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from tqdm import tqdm

from eoaudit import __version__
from eoaudit.analyzers import Analyzer, AuditContext, registered_analyzers
from eoaudit.errors import InputError, UsageError
from eoaudit.execution import FailedPartition, PartitionOutcome, PartitionTask, make_executor
from eoaudit.gates import evaluate_gates, parse_gates
from eoaudit.results import AnalyzerResult, AuditResult, Finding, merge_findings
from eoaudit.resume import RunCache, run_fingerprint
from eoaudit.ruleset import load_rules, load_yaml
from eoaudit.samples import SampleSet
from eoaudit.sources import FrameSource, SampleSource
from eoaudit.spill import DUCKDB_MEMORY, check_memory_size, read_final_columns
from eoaudit.spill import combine as combine_spills

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
        cache_dir: Folder for caches kept between runs, including the finished
            partitions of this run; a temporary folder when None.
        analyzer_options: Options for individual analyzers, by name.
        scheduler: `local`, `processes` or a Dask scheduler address; see
            :mod:`eoaudit.execution`.
        workers: Worker processes for `processes` (default: one per core).
        resume: Take partitions finished by an earlier, interrupted run of the
            same dataset and options from the cache instead of analysing them again.
        finalize_memory: Memory limit of the DuckDB queries that analyzers run
            over spilled rows in finalize (the duplicate search, say), such as
            `512MB`; beyond it they write to the run cache on disk.
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
    scheduler: str = "local"
    workers: int | None = None
    resume: bool = False
    finalize_memory: str = DUCKDB_MEMORY


@dataclass
class Audit:
    """An audit's outcome: the results, and the samples with per-sample columns.

    Attributes:
        result: Metrics, tables, findings, figures and gate outcomes.
        sample_files: One GeoParquet file per partition, in dataset order, with
            the samples and their per-sample columns `<analyzer>.<column>`.
        run: The cache folder containing those files.
        final_files: Parquet files of the per-sample columns that analyzers
            computed in `finalize`, each with `sample_id` and one row per
            sample in dataset order, to be joined onto the sample files.
    """

    result: AuditResult
    sample_files: list[Path]
    run: RunCache
    final_files: list[Path] = field(default_factory=list)

    @property
    def samples(self) -> gpd.GeoDataFrame:
        """Load all samples with their per-sample columns into memory."""
        frames = [gpd.read_parquet(path) for path in self.sample_files]
        if not frames:
            return gpd.GeoDataFrame({"sample_id": []}, geometry=[], crs="EPSG:4326")
        samples = gpd.GeoDataFrame(pd.concat(frames), geometry="geometry", crs=frames[0].crs)
        samples.index = pd.Index(samples["sample_id"].to_numpy())
        final = read_final_columns(self.final_files)
        if len(final.columns):
            samples = samples.join(final)
        return samples

    def discard_cache(self) -> None:
        """Delete this run's partition files; call after the outputs are written."""
        self.run.discard()


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


def run_audit(dataset: SampleSet | SampleSource, options: AuditOptions | None = None) -> Audit:
    """Run the analyzers and gates over a dataset, partition by partition.

    Args:
        dataset: Samples in memory (split into slices of `chunk_size`), or a
            :class:`~eoaudit.sources.SampleSource` read lazily.
        options: How to run; defaults run every analyzer in this process.

    Raises:
        UsageError: On an unknown analyzer or invalid option values.
        InputError: On an unreadable rules or gates file, or bad data in a
            partition under `on_bad_rows="error"`.
    """
    options = options or AuditOptions()
    if options.chunk_size < 1:
        raise UsageError(f"chunk size must be at least 1, got {options.chunk_size}")
    finalize_memory = check_memory_size(options.finalize_memory)
    started = datetime.now(UTC)
    clock = time.perf_counter()

    names = select_analyzers(options.analyzers)
    rules = load_rules(options.rules_dir)
    gates_source = options.gates or None
    gates_data = load_yaml(gates_source) if gates_source else rules["gates"]
    gates = parse_gates(gates_data, str(gates_source or "rules/gates.yaml"))

    source = _as_source(dataset, options)
    keys = source.partition_keys()
    classes = registered_analyzers()
    probe = source.load(0) if keys else None
    if probe is None or probe.samples.empty:
        raise InputError(f"{source.source}: no sample to audit")
    skipped = _skip_reasons(names, probe.samples, rules, options)
    running = [classes[n] for n in names if n not in skipped]

    run = RunCache.open(
        options.cache_dir,
        run_fingerprint(source.fingerprint(), names, rules, options, __version__),
        options.resume,
    )
    try:
        outcomes = _analyse_partitions(source, keys, running, rules, options, run, probe)
    except Exception:
        # A run that stops on bad input keeps nothing; an interrupted one
        # (KeyboardInterrupt, a killed process) keeps its partitions for --resume.
        run.discard()
        raise

    context = AuditContext(
        rules=rules,
        options=dict(options.analyzer_options),
        cache_dir=options.cache_dir,
        sample_count=outcomes.samples,
        rows_read=outcomes.rows_read,
        reader_findings=outcomes.findings,
        failed_partitions=[(f.key, f.error) for f in outcomes.failed],
        spill_files=_combined_spills(run, len(keys), running),
        scratch_dir=run.scratch_dir,
        finalize_memory=finalize_memory,
    )
    results: dict[str, AnalyzerResult] = {}
    for name in names:
        cls = classes[name]
        if name in skipped:
            results[name] = AnalyzerResult(
                name=name, title=cls.title, status="skipped", reason=skipped[name]
            )
            continue
        analyzer = cls(context)
        result = AnalyzerResult(name=name, title=cls.title, settings=analyzer.settings())
        state = outcomes.states.get(name)
        if state is None:
            result.status = "skipped"
            result.reason = "every partition failed"
        else:
            analyzer.finalize(state, result)
        results[name] = result

    result = AuditResult(
        dataset={
            "path": source.source,
            "format": source.format,
            "rows_read": outcomes.rows_read,
            "samples": outcomes.samples,
            "subset": {"size": options.sample, "seed": options.seed} if options.sample else None,
            "analyzers": names,
            "chunk_size": options.chunk_size,
            "partitions": len(keys),
            "failed_partitions": [f.key for f in outcomes.failed],
        },
        analyzers=results,
        gates=[],
        started=started.isoformat(timespec="seconds"),
        duration_s=0.0,
        eoaudit_version=__version__,
    )
    result.gates = evaluate_gates(gates, result.metrics)
    result.duration_s = round(time.perf_counter() - clock, 3)
    # Finalize writes the columns that need every partition (duplicate clusters, say).
    return Audit(result, run.sample_files(len(keys)), run, context.final_files)


def _combined_spills(
    run: RunCache, partitions: int, analyzers: list[type[Analyzer[Any]]]
) -> dict[str, list[Path]]:
    """Return each analyzer's spilled rows as one file in the scratch folder."""
    combined = {}
    for cls in analyzers:
        files = run.spill_files(partitions, cls.name)
        if files:
            target = run.scratch_dir / f"{cls.name}.spill.parquet"
            combined[cls.name] = [combine_spills(files, target)]
    return combined


def _as_source(dataset: SampleSet | SampleSource, options: AuditOptions) -> SampleSource:
    if isinstance(dataset, SampleSource):
        if options.sample is not None:
            raise UsageError(
                "a random subset needs the samples in memory; read the dataset with "
                "read_dataset() first, or open it with lazy=False"
            )
        return dataset
    samples = subset(dataset.samples, options.sample, options.seed)
    rows_read = dataset.rows_read if options.sample is None else len(samples)
    findings = list(dataset.findings)
    in_memory = SampleSet(samples, dataset.source, dataset.format, rows_read, findings)
    digest = hashlib.sha256()
    table = pd.DataFrame(samples.drop(columns="geometry")).astype(str)
    digest.update(pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes())
    wkb = pd.Series(samples.geometry.to_wkb(hex=True), dtype="string").fillna("")
    digest.update(pd.util.hash_pandas_object(wkb, index=False).to_numpy().tobytes())
    fingerprint = digest.hexdigest()
    return FrameSource(in_memory, options.chunk_size, fingerprint)


def _skip_reasons(
    names: list[str], samples: gpd.GeoDataFrame, rules: dict[str, Any], options: AuditOptions
) -> dict[str, str]:
    """Return why each analyzer that cannot run is skipped, judged on the first partition.

    NOTE: for lazily read datasets only the first partition is inspected, so an
    analyzer whose required column is empty there but filled later is skipped.
    """
    classes = registered_analyzers()
    context = AuditContext(rules=rules, options=dict(options.analyzer_options))
    reasons = {}
    for name in names:
        reason = classes[name](context).skip_reason(samples)
        if reason is not None:
            logger.info("%s: skipped, %s", name, reason)
            reasons[name] = reason
    return reasons


@dataclass
class _Merged:
    states: dict[str, Any]
    findings: list[Finding]
    rows_read: int
    samples: int
    failed: list[FailedPartition]


def _analyse_partitions(
    source: SampleSource,
    keys: list[str],
    analyzers: list[type[Analyzer[Any]]],
    rules: dict[str, Any],
    options: AuditOptions,
    run: RunCache,
    probe: SampleSet,
) -> _Merged:
    """Run every partition (or take it from the resume cache) and merge in partition order."""
    merged = _Merged({}, [], 0, 0, [])
    in_memory = isinstance(source, FrameSource)
    merge_context = AuditContext(rules=rules, options=dict(options.analyzer_options))
    mergers = {cls.name: cls(merge_context) for cls in analyzers}

    def tasks() -> Iterator[PartitionTask]:
        for index, key in enumerate(keys):
            if run.is_done(index, key):
                continue
            preloaded = None
            if in_memory:
                preloaded = source.load(index)
            elif index == 0:
                preloaded = probe
            yield PartitionTask(
                index=index,
                key=key,
                analyzers=analyzers,
                rules=rules,
                analyzer_options=options.analyzer_options,
                cache_dir=options.cache_dir,
                chunk_size=options.chunk_size,
                source=None if preloaded is not None else source.for_partition(index),
                preloaded=preloaded,
            )

    def merge(outcome: PartitionOutcome | FailedPartition) -> None:
        if isinstance(outcome, FailedPartition):
            merged.failed.append(outcome)
            return
        for cls in analyzers:
            state = outcome.states.get(cls.name)
            if state is None:
                continue
            previous = merged.states.get(cls.name)
            merged.states[cls.name] = (
                state if previous is None else mergers[cls.name].merge(previous, state)
            )
        merged.findings = merge_findings(merged.findings + outcome.findings)
        merged.rows_read += outcome.rows_read
        # The samples, their per-sample columns and the spilled rows are in the
        # run cache already; only the merged states stay on the client.
        merged.samples += len(outcome.samples)

    executor = make_executor(options.scheduler, options.workers)
    buffered: dict[int, PartitionOutcome | FailedPartition] = {}
    next_index = 0
    progress = tqdm(
        total=len(keys), desc="partitions", unit="part", disable=not options.progress, leave=False
    )
    try:
        for outcome in executor.run(tasks(), window=max(2 * (options.workers or 2), 2)):
            if isinstance(outcome, PartitionOutcome):
                run.save(outcome)
                outcome.spills = {}
            buffered[outcome.index] = outcome
            progress.update(1)
            while True:
                if next_index >= len(keys):
                    break
                if run.is_done(next_index, keys[next_index]) and next_index not in buffered:
                    buffered[next_index] = run.load(next_index)
                if next_index not in buffered:
                    break
                merge(buffered.pop(next_index))
                next_index += 1
        while next_index < len(keys):
            if next_index not in buffered:
                buffered[next_index] = run.load(next_index)
            merge(buffered.pop(next_index))
            next_index += 1
    finally:
        progress.close()
        executor.close()

    for failure in merged.failed:
        logger.error("partition %s failed: %s", failure.key, failure.error)
    return merged


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


__all__ = ["Audit", "AuditOptions", "run_audit", "select_analyzers", "subset"]
