"""The run cache: finished partitions on disk, so a killed run can resume.

Each run writes into `CACHE_DIR/runs/<fingerprint>/`:

- `part-<index>.pkl`: the analyzers' partial states, the reader's findings and
  the row count of one partition. It is a pickle, so the folder must be as
  trusted as any local cache: never resume from a folder copied from elsewhere.
- `part-<index>.parquet`: the partition's samples with per-sample columns;
- `part-<index>.<analyzer>.spill.parquet`: rows an analyzer keeps on disk for
  finalize (:mod:`eoaudit.spill`);
- `finalize/`: DuckDB's temporary files and the columns finalize computes;
- `manifest.json`: the fingerprint and the finished partitions, rewritten
  atomically after each one.

The fingerprint hashes the input files (paths, sizes, modification times), the
read options, the analyzers, the rule files, the analyzer options, the chunk
size and the eoaudit version. A resumed run only reuses partitions whose
fingerprint and key match, so changing any of these starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import pyarrow.parquet as pq

from eoaudit.execution import PartitionOutcome

if TYPE_CHECKING:
    from eoaudit.engine import AuditOptions

MANIFEST = "manifest.json"


def run_fingerprint(
    source_fingerprint: str,
    analyzers: list[str],
    rules: dict[str, Any],
    options: AuditOptions,
    version: str,
) -> str:
    """Hash everything that decides a partition's outcome."""
    settings = {
        "source": source_fingerprint,
        "analyzers": analyzers,
        "rules": rules,
        "analyzer_options": options.analyzer_options,
        "chunk_size": options.chunk_size,
        "sample": options.sample,
        "seed": options.seed,
        "version": version,
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class RunCache:
    """The folder of one run's finished partitions."""

    folder: Path
    fingerprint: str
    temporary: bool
    done: dict[int, str] = field(default_factory=dict)

    @classmethod
    def open(cls, cache_dir: Path | None, fingerprint: str, resume: bool) -> RunCache:
        """Open the run folder; without `resume`, start it empty.

        With `resume`, partitions listed in a manifest of the same fingerprint
        are kept; a folder without one, or with another fingerprint, is emptied.
        """
        if cache_dir is None:
            folder = Path(tempfile.mkdtemp(prefix="eoaudit-run-"))
            return cls(folder, fingerprint, temporary=True)
        folder = cache_dir / "runs" / fingerprint[:20]
        cache = cls(folder, fingerprint, temporary=False)
        manifest = folder / MANIFEST
        if resume and manifest.is_file():
            data = json.loads(manifest.read_text(encoding="utf-8"))
            if data.get("fingerprint") == fingerprint:
                cache.done = {
                    int(index): key
                    for index, key in data["partitions"].items()
                    if cache._state_path(int(index)).is_file()
                    and cache.sample_path(int(index)).is_file()
                }
                return cache
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return cache

    def is_done(self, index: int, key: str) -> bool:
        """Return True when partition `index` with this key finished in this or an earlier run."""
        return self.done.get(index) == key

    def _state_path(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.pkl"

    def sample_path(self, index: int) -> Path:
        """Return the GeoParquet file of a partition's samples."""
        return self.folder / f"part-{index:06d}.parquet"

    def spill_path(self, index: int, analyzer: str) -> Path:
        """Return the file of the rows an analyzer spilled for a partition."""
        return self.folder / f"part-{index:06d}.{analyzer}.spill.parquet"

    def spill_files(self, count: int, analyzer: str) -> list[Path]:
        """Return an analyzer's spill files of the partitions that finished, in order."""
        paths = (self.spill_path(i, analyzer) for i in range(count))
        return [path for path in paths if path.is_file()]

    @property
    def scratch_dir(self) -> Path:
        """Return the folder for finalize's temporary files and final columns."""
        return self.folder / "finalize"

    def save(self, outcome: PartitionOutcome) -> None:
        """Store a finished partition and record it in the manifest.

        The state file is written last: a partition counts as finished only
        when it exists, so the samples and spill files before it are complete.
        """
        samples = _storable(outcome.samples)
        samples.to_parquet(self.sample_path(outcome.index), index=False)
        for analyzer, table in outcome.spills.items():
            pq.write_table(table, self.spill_path(outcome.index, analyzer))
        light = PartitionOutcome(
            index=outcome.index,
            key=outcome.key,
            states=outcome.states,
            samples=outcome.samples[[c for c in outcome.samples.columns if "." in str(c)]],
            findings=outcome.findings,
            rows_read=outcome.rows_read,
        )
        with self._state_path(outcome.index).open("wb") as handle:
            pickle.dump(light, handle, protocol=pickle.HIGHEST_PROTOCOL)
        self.done[outcome.index] = outcome.key
        manifest = {"fingerprint": self.fingerprint, "partitions": self.done}
        temporary = self.folder / f".{MANIFEST}.tmp"
        temporary.write_text(json.dumps(manifest), encoding="utf-8")
        temporary.replace(self.folder / MANIFEST)

    def load(self, index: int) -> PartitionOutcome:
        """Load a finished partition's outcome (per-sample columns only, not the samples)."""
        # The run folder is this tool's own cache, so unpickling it is trusted.
        with self._state_path(index).open("rb") as handle:
            outcome: PartitionOutcome = pickle.load(handle)
        return outcome

    def sample_files(self, count: int) -> list[Path]:
        """Return the sample files of the partitions that finished, in order."""
        return [self.sample_path(i) for i in range(count) if self.sample_path(i).is_file()]

    def discard(self) -> None:
        """Delete the run folder, and the cache folders above it if that leaves them empty."""
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.temporary:
            return
        for parent in (self.folder.parent, self.folder.parent.parent):
            try:
                parent.rmdir()
            except OSError:
                break


def _storable(samples: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Make object columns that hold mixed Python values storable as Parquet."""
    table = samples.reset_index(drop=True)
    for column in table.columns:
        if column == table.geometry.name:
            continue
        if table[column].dtype == object:
            table[column] = table[column].map(lambda v: v if v is None else str(v))
    return table
