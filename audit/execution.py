"""Executors that analyse partitions in this process or on a Dask cluster.

One task loads one partition and runs every selected analyzer's `map_chunk`
on it, chunk by chunk; the client merges the states in partition order. The
order is fixed, so a run on a cluster gives the same results as a run in this
process.

Schedulers (`--scheduler`):

- `local`: tasks run one after the other in this process.
- `processes`: a `dask.distributed.LocalCluster` of worker processes on this
  machine, one thread each.
- `tcp://HOST:PORT` (any address Dask accepts): an existing
  `dask.distributed` scheduler. Its workers need eoaudit installed and must
  see the dataset at the same paths.
"""

from __future__ import annotations

import gc
import logging
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import pandas as pd
import pyarrow as pa

from eoaudit.analyzers.base import Analyzer, AuditContext
from eoaudit.errors import EoauditError, MissingDependencyError, UsageError
from eoaudit.results import Finding
from eoaudit.samples import SampleSet
from eoaudit.sources import SampleSource
from eoaudit.spill import sequenced

logger = logging.getLogger(__name__)

DEFAULT_RETRIES = 2

_WORKER_ENVIRONMENT = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
"""Dask configuration for the workers of `--scheduler processes`.

By default Dask starts workers with `MALLOC_TRIM_THRESHOLD_=65536`. Setting
that variable also turns off glibc's adaptive mmap threshold, so every array
over 128 KiB is mapped and unmapped again. With two workers, a 20,224-caption
audit spent 38.8 s of system time in page faults, against 2.6 s in one
process, and a partition took almost twice as long (benchmarks/scale.md).
"""


@dataclass
class PartitionTask:
    """The work order for one partition, sent to a worker.

    Either `source` and `index` (the worker loads the partition itself) or
    `preloaded` (samples already in memory, sent along) is set.
    """

    index: int
    key: str
    analyzers: list[type[Analyzer[Any]]]
    rules: dict[str, Any]
    analyzer_options: dict[str, Any]
    cache_dir: Any
    chunk_size: int
    source: SampleSource | None = None
    preloaded: SampleSet | None = None


@dataclass
class PartitionOutcome:
    """The analysed partition that a worker returns.

    Attributes:
        index: Position of the partition in the dataset.
        key: Name of the partition.
        states: Merged state per analyzer name.
        samples: The partition's samples with the analyzers' per-sample
            columns (`<analyzer>.<column>`), for samples.parquet.
        findings: The reader's findings for this partition.
        rows_read: Rows the reader found in this partition.
        spills: Spilled rows per analyzer name, with the :data:`~eoaudit.spill.SEQ`
            column; the run cache writes them to disk (:mod:`eoaudit.spill`).
    """

    index: int
    key: str
    states: dict[str, Any]
    samples: gpd.GeoDataFrame
    findings: list[Finding]
    rows_read: int
    spills: dict[str, pa.Table] = field(default_factory=dict)


def process_partition(task: PartitionTask) -> PartitionOutcome:
    """Load one partition and run every analyzer's map_chunk over it."""
    if task.preloaded is not None:
        loaded = task.preloaded
    else:
        assert task.source is not None
        loaded = task.source.load(task.index)
    samples = loaded.samples
    context = AuditContext(
        rules=task.rules,
        options=dict(task.analyzer_options),
        cache_dir=task.cache_dir,
        sample_count=len(samples),
        sample_columns=pd.DataFrame(index=samples.index),
    )

    states: dict[str, Any] = {}
    spills: dict[str, pa.Table] = {}
    for cls in task.analyzers:
        analyzer = cls(context)
        state = None
        columns = []
        spilled = []
        for start in range(0, max(len(samples), 1), task.chunk_size):
            chunk = samples.iloc[start : start + task.chunk_size]
            partial = analyzer.map_chunk(chunk)
            state = partial.state if state is None else analyzer.merge(state, partial.state)
            if partial.columns is not None:
                columns.append(partial.columns)
            if partial.spill is not None:
                spilled.append(partial.spill)
        states[cls.name] = state
        if spilled:
            spills[cls.name] = sequenced(pa.concat_tables(spilled), task.index)
        if columns:
            frame = pd.concat(columns)
            frame.columns = [f"{cls.name}.{c}" for c in frame.columns]
            context.sample_columns = context.sample_columns.join(frame)

    if len(context.sample_columns.columns):
        samples = samples.join(context.sample_columns)
    settle_heap()
    return PartitionOutcome(
        index=task.index,
        key=task.key,
        states=states,
        samples=samples,
        findings=loaded.findings,
        rows_read=loaded.rows_read,
        spills=spills,
    )


_heap_settled = False


def settle_heap() -> None:
    """Exclude the objects alive now from cyclic garbage collection, once per process.

    Called after the first partition, when the imports, the spaCy pipeline
    and the readers' caches are loaded: about 400,000 long-lived objects that
    every full collection would otherwise walk again. The analyzers create
    many short-lived tuples, which trigger such collections often. Freezing
    the long-lived objects cut the vocabulary analyzer's time per 10,000
    captions from about 3.5 s to 3.1 s. Frozen objects are still freed when
    nothing refers to them.
    """
    global _heap_settled
    if not _heap_settled:
        _heap_settled = True
        gc.collect()
        gc.freeze()


@dataclass
class FailedPartition:
    """A partition whose task kept failing after its retries."""

    index: int
    key: str
    error: str


class Executor:
    """Runs partition tasks and yields their outcomes, in any order."""

    def run(
        self, tasks: Iterator[PartitionTask], window: int
    ) -> Iterator[PartitionOutcome | FailedPartition]:
        """Run the tasks, at most `window` at a time, yielding each result."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers and connections."""


class LocalExecutor(Executor):
    """Runs tasks one after the other in this process, retrying failures."""

    def __init__(self, retries: int = DEFAULT_RETRIES) -> None:
        self.retries = retries

    def run(
        self, tasks: Iterator[PartitionTask], window: int
    ) -> Iterator[PartitionOutcome | FailedPartition]:
        """Run each task, retrying it up to `retries` times when it raises."""
        for task in tasks:
            yield _with_retries(task, self.retries)


def _with_retries(task: PartitionTask, retries: int) -> PartitionOutcome | FailedPartition:
    message = ""
    for attempt in range(retries + 1):
        try:
            return process_partition(task)
        except (KeyboardInterrupt, SystemExit, MemoryError, EoauditError):
            raise
        except Exception as error:  # an analyzer bug fails this partition, not the run
            logger.warning(
                "partition %s failed (attempt %d of %d): %s",
                task.key,
                attempt + 1,
                retries + 1,
                error,
            )
            logger.debug("%s", traceback.format_exc())
            message = f"{type(error).__name__}: {error}"
    return FailedPartition(task.index, task.key, message)


class DaskExecutor(Executor):
    """Runs tasks on a dask.distributed cluster; Dask retries tasks whose worker died."""

    def __init__(self, scheduler: str, workers: int | None, retries: int = DEFAULT_RETRIES):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise MissingDependencyError(
                "distributed", "--scheduler " + scheduler, "dask"
            ) from None
        self.retries = retries
        self.cluster = None
        # The random part keeps a long-lived scheduler from returning a finished
        # partition of another run (object ids, used before, repeat between runs).
        self.key_name = f"eoaudit-partition-{uuid.uuid4().hex}"
        if scheduler == "processes":
            import dask

            with dask.config.set(_WORKER_ENVIRONMENT):
                self.cluster = LocalCluster(
                    n_workers=workers or None,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(scheduler, timeout=30)
            except OSError as error:
                raise UsageError(
                    f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({error}); "
                    "start one with `dask scheduler` and `dask worker ADDRESS`, or use processes"
                ) from None

    def run(
        self, tasks: Iterator[PartitionTask], window: int
    ) -> Iterator[PartitionOutcome | FailedPartition]:
        """Submit tasks keeping `window` in flight; yield outcomes as they finish."""
        from dask.distributed import as_completed

        pending: dict[Any, PartitionTask] = {}
        completed = as_completed()
        for task in tasks:
            future = self.client.submit(
                process_partition, task, retries=self.retries, key=(self.key_name, task.index)
            )
            pending[future] = task
            completed.add(future)
            if len(pending) >= window:
                yield self._collect(next(completed), pending)
        for future in completed:
            yield self._collect(future, pending)

    def _collect(self, future: Any, pending: dict[Any, PartitionTask]) -> Any:
        task = pending.pop(future)
        try:
            return future.result()
        except EoauditError:
            raise
        except Exception as error:  # the task failed on every retry, or its workers died
            logger.warning(
                "partition %s failed after %d retries: %s", task.key, self.retries, error
            )
            return FailedPartition(task.index, task.key, f"{type(error).__name__}: {error}")

    def close(self) -> None:
        """Close the client, and the local cluster if this executor started it."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(scheduler: str, workers: int | None = None) -> Executor:
    """Build the executor for a `--scheduler` value.

    Raises:
        UsageError: When the value is neither `local`, `processes` nor an address.
    """
    if scheduler == "local":
        return LocalExecutor()
    if scheduler == "processes" or "://" in scheduler:
        return DaskExecutor(scheduler, workers)
    raise UsageError(
        f"--scheduler {scheduler!r} is invalid; use local, processes or a Dask scheduler "
        "address such as tcp://127.0.0.1:8786"
    )


__all__ = [
    "Executor",
    "FailedPartition",
    "PartitionOutcome",
    "PartitionTask",
    "make_executor",
    "process_partition",
]
