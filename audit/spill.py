"""Per-sample rows that analyzers keep on disk for finalize, and the columns finalize writes.

Most of an analyzer's state is a set of counters whose size does not depend
on the number of samples. A few results need every sample at once, such as
the duplicate search, which compares each caption with all others. For these
an analyzer returns rows with :attr:`~eoaudit.analyzers.base.ChunkResult.spill`
instead of keeping them in its state:

1. The engine adds the column :data:`SEQ` and writes one Parquet file per
   analyzer and partition into the run cache (:mod:`eoaudit.resume`).
2. In `finalize`, the analyzer reads the files listed in
   `AuditContext.spill_files`, usually with a DuckDB query from
   :func:`connect`, which sorts and groups out of core under a memory limit.
3. Per-sample columns that finalize computes go to a Parquet file with
   `sample_id` and one row per sample in dataset order (`ORDER BY sample_seq`).
   The analyzer appends its path to `AuditContext.final_files`, and
   :func:`~eoaudit.output.combine_sample_files` joins the columns onto
   samples.parquet a partition at a time.

So neither the client nor the workers hold per-sample data of more than one
partition at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from eoaudit.errors import UsageError

SEQ = "sample_seq"
"""Column the engine adds to spilled rows: increases with the row's place in the dataset.

It is `partition index * 2**32 + row in the partition's spill`, so sorting by
it gives dataset order without knowing the partitions' sizes in advance.
"""

DUCKDB_MEMORY = "1GB"
"""Default memory limit of the DuckDB queries over spilled rows; beyond it DuckDB writes to disk."""

_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)

DUCKDB_THREADS = 2

COMBINED_GROUP_ROWS = 65_536
"""Rows per row group of a combined spill file (:func:`combine`)."""


def sequenced(table: pa.Table, partition: int) -> pa.Table:
    """Return `table` with the :data:`SEQ` column of partition `partition` in front."""
    rows = np.arange(table.num_rows, dtype=np.int64) + (np.int64(partition) << np.int64(32))
    return table.add_column(0, SEQ, pa.array(rows, pa.int64()))


def check_memory_size(value: str) -> str:
    """Return `value` if DuckDB reads it as a memory size (`512MB`, `2GB`, `1.5GiB`).

    Raises:
        UsageError: When it is not a number followed by a unit.
    """
    if not _SIZE.fullmatch(value.strip()):
        raise UsageError(
            f"--finalize-memory {value!r} is invalid; give a number and a unit such as 512MB or 2GB"
        )
    return value.strip()


def connect(scratch: Path, memory: str = DUCKDB_MEMORY) -> Any:
    """Open an in-memory DuckDB database that spills to `scratch` past `memory`."""
    import duckdb

    scratch.mkdir(parents=True, exist_ok=True)
    db = duckdb.connect(
        config={
            "memory_limit": memory,
            "threads": DUCKDB_THREADS,
            "temp_directory": str(scratch / "duckdb"),
            "preserve_insertion_order": False,
        }
    )
    db.execute("SET enable_progress_bar = false")
    return db


def combine(files: list[Path], target: Path, group_rows: int = COMBINED_GROUP_ROWS) -> Path:
    """Concatenate spill files into one Parquet file, reading one file at a time.

    DuckDB keeps state for every file of a multi-file scan, and a run of small
    partitions writes thousands of spill files, so finalize queries one file.
    Columns missing from a file are filled with nulls.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.unify_schemas(
        [pq.read_schema(path) for path in files], promote_options="permissive"
    )
    pending: list[pa.Table] = []
    buffered = 0
    with pq.ParquetWriter(target, schema) as writer:
        for path in files:
            table = pq.read_table(path)
            for field in schema:
                if field.name not in table.column_names:
                    table = table.append_column(field.name, pa.nulls(len(table), field.type))
            pending.append(table.select(schema.names).cast(schema))
            buffered += len(table)
            if buffered >= group_rows:
                writer.write_table(pa.concat_tables(pending))
                pending, buffered = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending))
    return target


def parquet_list(files: list[Path]) -> str:
    """Return a DuckDB list literal of file paths, for `read_parquet(...)`."""
    quoted = ", ".join("'" + str(path).replace("'", "''") + "'" for path in files)
    return f"[{quoted}]"


class RowStream:
    """Read a Parquet file of per-sample rows a slice at a time, in file order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._batches: Iterator[pa.RecordBatch] = pq.ParquetFile(path).iter_batches()
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0

    def take(self, count: int) -> pa.Table:
        """Return the next `count` rows.

        Raises:
            RuntimeError: When the file has fewer rows left.
        """
        while self._buffered < count:
            batch = next(self._batches, None)
            if batch is None:
                raise RuntimeError(
                    f"{self.path}: {count} rows expected, only {self._buffered} left; "
                    "final columns need one row per sample"
                )
            self._buffer.append(batch)
            self._buffered += batch.num_rows
        table = pa.Table.from_batches(self._buffer)
        head, rest = table.slice(0, count), table.slice(count)
        self._buffer = rest.to_batches()
        self._buffered = rest.num_rows
        return head


def aligned_columns(streams: list[RowStream], sample_ids: pa.Array) -> list[tuple[str, pa.Array]]:
    """Take the next rows of every stream and check they belong to `sample_ids`, in order.

    Raises:
        RuntimeError: When a file's sample ids differ from `sample_ids`.
    """
    columns: list[tuple[str, pa.Array]] = []
    expected = sample_ids.cast(pa.string())
    for stream in streams:
        table = stream.take(len(sample_ids))
        ids = table.column("sample_id").combine_chunks().cast(pa.string())
        if not ids.equals(expected):
            raise RuntimeError(
                f"{stream.path}: rows do not follow the samples' order; the analyzer that "
                f"wrote it must sort them by {SEQ}"
            )
        columns.extend(
            (name, table.column(name).combine_chunks())
            for name in table.column_names
            if name != "sample_id"
        )
    return columns


def read_final_columns(files: list[Path]) -> pd.DataFrame:
    """Load final-column files into one frame indexed by sample_id (for small audits)."""
    frames = []
    for path in files:
        frame = pd.read_parquet(path)
        frames.append(frame.set_index("sample_id"))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, axis=1)


__all__ = [
    "DUCKDB_MEMORY",
    "SEQ",
    "RowStream",
    "aligned_columns",
    "check_memory_size",
    "combine",
    "connect",
    "parquet_list",
    "read_final_columns",
    "sequenced",
]
