"""Sample sources: a dataset split into partitions that can be loaded one at a time.

The engine never needs the whole dataset in memory. It reads a source's
partition keys, and each worker loads and analyses one partition. A source
must be picklable and cheap to send (paths and options, not data).

- :class:`Llama3Source` reads Llama3-SSL4EO-S12 captions lazily: one
  partition per chunk CSV or per Parquet row group, with the metadata and chip
  joins done per partition.
- :class:`FrameSource` splits samples that are already in memory (every other
  format, and any subset drawn with `--sample`) into slices of `chunk_size`.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from eoaudit.readers import ReadOptions, detect_format, llama3_ssl4eo, read_dataset
from eoaudit.readers.llama3_ssl4eo import Part
from eoaudit.samples import SampleSet


class SampleSource(abc.ABC):
    """A dataset as an ordered list of partitions.

    Attributes:
        source: The dataset path as the user gave it.
        format: Reader name.
    """

    source: str
    format: str

    @abc.abstractmethod
    def partition_keys(self) -> list[str]:
        """Return a stable, unique name for each partition, in dataset order."""

    @abc.abstractmethod
    def load(self, index: int) -> SampleSet:
        """Load partition `index` as samples, with the reader's findings for it."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Return a hash that changes when the input files or read options change."""

    def for_partition(self, index: int) -> SampleSource:
        """Return a source that loads partition `index`, as small as possible to send to a worker.

        The engine sends one with every task, so a source whose size grows
        with the number of partitions should return a smaller one here.
        """
        return self


class FrameSource(SampleSource):
    """Samples already in memory, split into slices of `chunk_size` rows.

    The reader's findings and the rows it left out are attached to the first
    partition, so that summing over partitions gives the dataset's totals.
    """

    def __init__(self, dataset: SampleSet, chunk_size: int, fingerprint: str = "") -> None:
        self.dataset = dataset
        self.chunk_size = chunk_size
        self.source = dataset.source
        self.format = dataset.format
        self._fingerprint = fingerprint

    def partition_keys(self) -> list[str]:
        """Name each slice by its row range, e.g. `rows 1-10000`."""
        total = len(self.dataset.samples)
        return [
            f"rows {start + 1}-{min(start + self.chunk_size, total)}"
            for start in range(0, total, self.chunk_size)
        ]

    def load(self, index: int) -> SampleSet:
        """Return slice `index` of the samples."""
        start = index * self.chunk_size
        part = self.dataset.samples.iloc[start : start + self.chunk_size]
        rows_read = len(part)
        findings = []
        if index == 0:
            rows_read += self.dataset.rows_read - len(self.dataset.samples)
            findings = list(self.dataset.findings)
        return SampleSet(part, self.source, self.format, rows_read, findings)

    def fingerprint(self) -> str:
        """Return the fingerprint given by the caller (in-memory data has no files to hash)."""
        return self._fingerprint


class Llama3Source(SampleSource):
    """Llama3-SSL4EO-S12 captions read one chunk CSV or Parquet row group at a time."""

    format = "llama3-ssl4eo"

    def __init__(self, path: Path, options: ReadOptions) -> None:
        self.path = path
        self.options = options
        self.source = str(path)
        self.parts = llama3_ssl4eo.partitions(path)

    def partition_keys(self) -> list[str]:
        """Name each partition by its file (and row group)."""
        return [part.key for part in self.parts]

    def load(self, index: int) -> SampleSet:
        """Read one partition and join its metadata and chips."""
        return llama3_ssl4eo.read_partition(self.path, self.parts[index], self.options)

    def fingerprint(self) -> str:
        """Hash the caption files, metadata file and chip folder listing with the options."""
        files = [part.file for part in self.parts]
        if self.options.metadata is not None:
            files.append(self.options.metadata)
        if self.options.images is not None:
            files.extend(sorted(self.options.images.glob("*/*.zarr.zip")))
        return fingerprint_files(files, asdict(self.options))

    def for_partition(self, index: int) -> SampleSource:
        """Return a source of this one partition, without the list of all the others."""
        return Llama3Partition(self.path, self.options, index, self.parts[index])


class Llama3Partition(SampleSource):
    """One partition of a :class:`Llama3Source`, sent with a task instead of the whole list."""

    format = "llama3-ssl4eo"

    def __init__(self, path: Path, options: ReadOptions, index: int, part: Part) -> None:
        self.path = path
        self.options = options
        self.source = str(path)
        self.index = index
        self.part = part

    def partition_keys(self) -> list[str]:
        """Return the one partition's key."""
        return [self.part.key]

    def load(self, index: int) -> SampleSet:
        """Read the partition; `index` must be its index in the whole dataset.

        Raises:
            ValueError: When `index` names another partition.
        """
        if index != self.index:
            raise ValueError(
                f"this source contains partition {self.index} only, not {index}; "
                "use Llama3Source.for_partition(index) for another partition"
            )
        return llama3_ssl4eo.read_partition(self.path, self.part, self.options)

    def fingerprint(self) -> str:
        """Hash the partition's caption file and the options."""
        return fingerprint_files([self.part.file], asdict(self.options))


def fingerprint_files(files: list[Path], settings: dict[str, object]) -> str:
    """Hash file paths, sizes and modification times together with settings."""
    digest = hashlib.sha256()
    for file in sorted(set(files)):
        stat = file.stat()
        digest.update(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def open_source(
    path: str | Path, options: ReadOptions, chunk_size: int, lazy: bool = True
) -> SampleSource:
    """Open a dataset as partitions.

    Llama3-SSL4EO-S12 datasets are read lazily, partition by partition; every
    other format is read whole and then split into slices of `chunk_size`.

    Args:
        path: Dataset file or folder.
        options: Reader options.
        chunk_size: Rows per slice for formats read whole.
        lazy: False reads every format whole (needed to draw a random subset).
    """
    path = Path(path)
    name = options.format
    if name == "auto" and path.exists():
        name = detect_format(path)
    if lazy and name == "llama3-ssl4eo":
        return Llama3Source(path, options)
    dataset = read_dataset(path, options)
    files = [p for p in ([path] if path.is_file() else sorted(path.rglob("*"))) if p.is_file()]
    return FrameSource(dataset, chunk_size, fingerprint_files(files, asdict(options)))
