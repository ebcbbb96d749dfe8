"""Dataset readers: one module per format, each turning a dataset into a SampleSet.

To add a format, write a module with `read(path, options) -> SampleSet`, add it
to :data:`READERS`, teach :func:`detect_format` to recognise it, and add tests
on a small file in the real layout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from eoaudit.errors import InputError, UsageError
from eoaudit.readers import geotiff_dir, karpathy, llama3_ssl4eo, table
from eoaudit.readers.options import ReadOptions
from eoaudit.samples import SampleSet

READERS: dict[str, Callable[[Path, ReadOptions], SampleSet]] = {
    "llama3-ssl4eo": llama3_ssl4eo.read,
    "table": table.read,
    "karpathy": karpathy.read,
    "geotiff-dir": geotiff_dir.read,
}
FORMATS = ("auto", *READERS)

__all__ = ["FORMATS", "READERS", "ReadOptions", "detect_format", "read_dataset"]


def read_dataset(path: str | Path, options: ReadOptions | None = None) -> SampleSet:
    """Load a dataset into the sample model.

    Args:
        path: File or folder of the dataset.
        options: Reader options; `options.format` of `auto` detects the format.

    Raises:
        InputError: When the path is missing or the dataset cannot be read.
        UsageError: When the format name is unknown.
    """
    options = options or ReadOptions()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the --dataset path")
    name = detect_format(path) if options.format == "auto" else options.format
    if name not in READERS:
        raise UsageError(f"unknown format {name!r}; use one of {', '.join(FORMATS)}")
    return READERS[name](path, options)


def detect_format(path: Path) -> str:
    """Guess the format of a dataset path from its name, layout and columns.

    Raises:
        InputError: When nothing matches.
    """
    if path.is_dir():
        if llama3_ssl4eo.caption_files(path) and any(path.glob(llama3_ssl4eo.CHUNK_GLOB)):
            return "llama3-ssl4eo"
        if geotiff_dir.tiff_files(path):
            return "geotiff-dir"
        raise InputError(
            f"{path}: cannot tell the format of this folder (no *_seasonal_data_*.csv caption "
            "chunks and no GeoTIFF files); pass --format"
        )

    suffix = path.suffix.lower()
    if suffix == ".json":
        return _detect_json(path)
    if suffix in (".csv", ".tsv"):
        header = _csv_header(path)
        return "llama3-ssl4eo" if llama3_ssl4eo.looks_like_llama3_ssl4eo(header) else "table"
    if suffix in (".parquet", ".geoparquet"):
        try:
            columns = pq.read_schema(path).names
        except Exception as error:  # pyarrow raises ArrowInvalid, OSError and others
            raise InputError(f"{path}: not a readable Parquet file ({error})") from None
        return "llama3-ssl4eo" if llama3_ssl4eo.looks_like_llama3_ssl4eo(columns) else "table"
    if suffix in (".jsonl", ".ndjson"):
        return "table"
    raise InputError(
        f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; "
        f"pass --format (one of {', '.join(READERS)})"
    )


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as handle:
        first = handle.readline()
    text = first.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    return [column.strip().strip('"') for column in text.split(separator)]


def _detect_json(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if karpathy.looks_like_karpathy(data):
        return "karpathy"
    raise InputError(
        f"{path}: a JSON file but not in the Karpathy caption layout; "
        "convert it to JSON Lines (.jsonl), one sample per line, and use --format table"
    )
