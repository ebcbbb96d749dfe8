"""The analyzer interface and registry.

An analyzer turns samples into an :class:`~eoaudit.results.AnalyzerResult`. It
works chunk by chunk so that memory stays bounded by the chunk size and chunks
can run on separate workers:

1. :meth:`Analyzer.map_chunk` takes one chunk of samples and returns a
   :class:`ChunkResult`: a partial state (small, picklable) and optional
   per-sample columns for that chunk.
2. :meth:`Analyzer.merge` combines two partial states. It must be associative,
   and the result must not depend on how the samples were split into chunks.
3. :meth:`Analyzer.finalize` turns the merged state into metrics, tables,
   findings and figures.

State that would grow with the number of samples (per-sample keys for the
duplicate search, say) does not go into the state: `map_chunk` returns it as
:attr:`ChunkResult.spill` rows, which the engine writes to disk and finalize
reads back (:mod:`eoaudit.spill`).

Register a new analyzer with the :func:`register` decorator and import its
module in `eoaudit/analyzers/__init__.py`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import geopandas as gpd
import pandas as pd
import pyarrow as pa

from eoaudit.results import AnalyzerResult, Finding
from eoaudit.samples import CAPTION, IMAGE, TIME
from eoaudit.spill import DUCKDB_MEMORY

State = TypeVar("State")

REQUIREMENTS = ("caption", "geometry", "time", "image")
"""Columns an analyzer may require to have at least one non-missing value."""


@dataclass
class AuditContext:
    """The shared inputs every analyzer can read besides its chunk.

    Attributes:
        rules: Parsed rule files by name (`gates`, `thresholds`, `landcover` ...).
        options: Analyzer options from the command line or the API, by name
            (e.g. `worldcover`, `device`).
        cache_dir: Folder for caches that survive between runs, or None.
        sample_count: Number of samples in the audit.
        sample_columns: Per-sample columns of the analyzers that already ran,
            indexed by sample_id, so later analyzers can break them down.
        rows_read: Rows or records the reader found, before bad rows were left out.
        reader_findings: Problems the reader counted while loading.
        failed_partitions: `(partition key, error)` of partitions that failed on
            every retry; their samples are missing from the results.
        spill_files: In `finalize`: the Parquet files of each analyzer's
            spilled rows, by analyzer name, in dataset order.
        scratch_dir: In `finalize`: a folder for temporary files and final
            columns, removed with the run cache.
        finalize_memory: Memory limit of the DuckDB queries in `finalize`
            (:func:`eoaudit.spill.connect`), such as `1GB`.
        final_files: In `finalize`: Parquet files of per-sample columns that
            need every partition. Each has `sample_id` and one row per sample in
            dataset order, and is joined onto samples.parquet.

    In `map_chunk`, `sample_count` and `sample_columns` describe the partition
    being analysed. In `finalize`, `sample_count` is the whole audit's and
    `sample_columns` is empty, so that the client's memory does not grow with
    the samples: columns that need every partition (duplicate flags, say) are
    computed from `spill_files` and written to a file in `final_files`.
    """

    rules: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None
    sample_count: int = 0
    sample_columns: pd.DataFrame = field(default_factory=pd.DataFrame)
    rows_read: int = 0
    reader_findings: list[Finding] = field(default_factory=list)
    failed_partitions: list[tuple[str, str]] = field(default_factory=list)
    spill_files: dict[str, list[Path]] = field(default_factory=dict)
    scratch_dir: Path | None = None
    finalize_memory: str = DUCKDB_MEMORY
    final_files: list[Path] = field(default_factory=list)


@dataclass
class ChunkResult(Generic[State]):
    """The partial result of :meth:`Analyzer.map_chunk` for one chunk.

    Attributes:
        state: Partial state to merge with the other chunks' states.
        columns: Per-sample columns for the chunk, indexed by sample_id, or None.
        spill: Rows for finalize that are kept on disk rather than in the
            state (one per sample, or per scored pair), in chunk order, or
            None; see :mod:`eoaudit.spill`.
    """

    state: State
    columns: pd.DataFrame | None = None
    spill: pa.Table | None = None


class Analyzer(abc.ABC, Generic[State]):
    """Base class of all analyzers.

    Attributes:
        name: Short name, used in `--analyzers` and as the metric key prefix.
        title: Heading of the report section.
        requires: Columns that must have at least one value for the analyzer to
            run; taken from :data:`REQUIREMENTS`.
        order: Position in the run; analyzers that break down other analyzers'
            columns run after them.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ("caption",)
    order: ClassVar[int] = 50

    def __init__(self, context: AuditContext) -> None:
        self.context = context

    def skip_reason(self, samples: gpd.GeoDataFrame) -> str | None:
        """Return why the analyzer cannot run on these samples, or None if it can."""
        present = {
            "caption": CAPTION in samples and bool(samples[CAPTION].notna().any()),
            "geometry": bool(samples.geometry.notna().any()),
            "time": TIME in samples and bool(samples[TIME].notna().any()),
            "image": IMAGE in samples and bool(samples[IMAGE].notna().any()),
        }
        missing = [need for need in self.requires if not present.get(need, False)]
        return f"no {' and no '.join(missing)}" if missing else None

    @abc.abstractmethod
    def map_chunk(self, chunk: gpd.GeoDataFrame) -> ChunkResult[State]:
        """Analyse one chunk of samples."""

    @abc.abstractmethod
    def merge(self, left: State, right: State) -> State:
        """Combine two partial states; must be associative."""

    @abc.abstractmethod
    def finalize(self, state: State, result: AnalyzerResult) -> None:
        """Fill `result` with metrics, tables, findings and figures from the merged state."""

    def settings(self) -> dict[str, Any]:
        """Return the rule values this analyzer uses, for the report and results.json."""
        return {}


_REGISTRY: dict[str, type[Analyzer[Any]]] = {}


def register(cls: type[Analyzer[Any]]) -> type[Analyzer[Any]]:
    """Add an analyzer class to the registry under its `name`.

    Raises:
        ValueError: When another class already uses the name.
    """
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"analyzer name {cls.name!r} is already used by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def registered_analyzers() -> dict[str, type[Analyzer[Any]]]:
    """Return the registered analyzer classes by name, in run order."""
    ordered = sorted(_REGISTRY.values(), key=lambda cls: (cls.order, cls.name))
    return {cls.name: cls for cls in ordered}
