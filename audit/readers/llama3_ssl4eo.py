"""Reader for Llama3-SSL4EO-S12 captions, joined with SSL4EO-S12 v1.1 metadata and chips.

The captions come as a folder of chunk CSVs (`ssl4eos12_val_seasonal_data_000001.csv`,
256 rows each, matching one Zarr Zip file) or as one Parquet file per split
(`val.parquet`). Columns: caption, question_1..question_3, file, sample_id,
time_id, classes, tags, names.

There `sample_id` is an integer location id (80717). SSL4EO-S12 v1.1 writes
the same location as a 7-digit string ('0080717') and one acquisition as
`<location>_<time_id>`. The sample model uses the latter as `sample_id` and the
7-digit form as `location_id`.

Footprints and acquisition times come from the v1.1 metadata GeoParquet
(`metadata`), joined on (location, time_id). Chips come from the v1.1 Zarr Zip
files under `images/S2L2A/` and `images/S2RGB/`, which also give
`center_lat`/`center_lon`, `crs` and a `cloud_fraction` from `cloud_mask`.
Captions without a metadata or chip match are kept and counted in a finding.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import closing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyproj

from eoaudit.errors import InputError
from eoaudit.images import ZarrChipRef, read_zarr_metadata
from eoaudit.readers import _common
from eoaudit.readers.options import ReadOptions
from eoaudit.results import Finding, merge_findings
from eoaudit.samples import (
    CAPTION,
    CRS,
    IMAGE,
    LOCATION_ID,
    MAX_EXAMPLES,
    SAMPLE_ID,
    TIME,
    BadRows,
    SampleSet,
    build_samples,
    empty_caption_finding,
)
from eoaudit.spill import connect

COLUMNS = (
    "caption",
    "question_1",
    "question_2",
    "question_3",
    "file",
    "sample_id",
    "time_id",
    "classes",
    "tags",
    "names",
)
KEY_COLUMNS = ("caption", "sample_id", "time_id")
MODALITIES = ("S2L2A", "S2RGB")
CHUNK_GLOB = "*_seasonal_data_*.csv"


def looks_like_llama3_ssl4eo(columns: list[str]) -> bool:
    """Return True when a table's columns are those of Llama3-SSL4EO-S12 captions."""
    return {"caption", "sample_id", "time_id", "file"} <= set(columns)


def caption_files(path: Path) -> list[Path]:
    """Return the caption files of a dataset path: chunk CSVs, or the file itself."""
    if path.is_dir():
        files = sorted(path.glob(CHUNK_GLOB))
        if not files:
            files = sorted(path.glob("*.parquet"))
        return files
    return [path]


@dataclass(frozen=True)
class Part:
    """One partition of a caption dataset: a chunk CSV, or one row group of a Parquet file."""

    file: Path
    row_group: int | None = None

    @property
    def key(self) -> str:
        """Stable name of the partition, used in findings and the resume manifest."""
        if self.row_group is None:
            return self.file.name
        return f"{self.file.name}#row-group-{self.row_group}"


def partitions(path: Path) -> list[Part]:
    """List the partitions of a dataset path without reading the captions.

    Raises:
        InputError: When the path contains no caption file.
    """
    files = caption_files(path)
    if not files:
        raise InputError(
            f"{path}: no Llama3-SSL4EO-S12 caption files found "
            f"(expected {CHUNK_GLOB} chunk CSVs or a split Parquet file such as val.parquet)"
        )
    parts: list[Part] = []
    for file in files:
        if file.suffix.lower() == ".parquet":
            try:
                groups = pq.ParquetFile(file).num_row_groups
            except Exception as error:  # pyarrow raises ArrowInvalid, OSError and others
                raise InputError(f"{file}: not a readable Parquet file ({error})") from None
            parts.extend(Part(file, group) for group in range(groups))
        else:
            parts.append(Part(file))
    return parts


def read(path: Path, options: ReadOptions) -> SampleSet:
    """Read Llama3-SSL4EO-S12 captions and join metadata and chips.

    Raises:
        InputError: When no caption file is found, a column is missing, or a
            row is bad under `on_bad_rows="error"`.
    """
    loaded = [read_partition(path, part, options) for part in partitions(path)]
    samples = pd.concat([p.samples for p in loaded])
    bad_rows = BadRows(str(path), options.on_bad_rows)
    merged = build_samples(
        samples.drop(columns="geometry").reset_index(drop=True),
        geometry=gpd.GeoSeries(samples.geometry.to_numpy(), crs=CRS),
        source=str(path),
        bad_rows=bad_rows,
    )
    findings = merge_findings([f for p in loaded for f in p.findings] + bad_rows.findings())
    rows_read = sum(p.rows_read for p in loaded)
    return SampleSet(merged, str(path), "llama3-ssl4eo", rows_read, findings)


def read_partition(path: Path, part: Part, options: ReadOptions) -> SampleSet:
    """Read one partition and join its metadata and chips.

    Duplicate sample ids are checked within the partition only; :func:`read`
    checks them across the whole dataset.
    """
    bad_rows = BadRows(str(path), options.on_bad_rows)
    frame, labels = _read_captions([part], bad_rows, options.encoding)
    rows_read = len(frame) + bad_rows.unparsed

    out = _to_model(frame, labels, bad_rows, str(path))
    findings: list[Finding] = []
    geometry: gpd.GeoSeries | None = None

    if options.metadata is not None:
        out, geometry, finding = _join_metadata(out, options.metadata)
        if finding:
            findings.append(finding)
    else:
        findings.append(
            Finding(
                severity="info",
                code="metadata-not-given",
                message=(
                    "samples without SSL4EO-S12 v1.1 metadata, so without footprint or "
                    "acquisition time unless chips supply them; pass --metadata FILE"
                ),
                count=len(out),
                analyzer="dataset",
            )
        )

    if options.images is not None:
        out, geometry, chip_findings = _join_chips(out, geometry, options.images)
        findings.extend(chip_findings)

    samples = build_samples(out, geometry=geometry, source=str(path), bad_rows=bad_rows)
    findings = bad_rows.findings() + findings
    empty = empty_caption_finding(samples)
    if empty:
        findings.append(empty)
    return SampleSet(samples, str(path), "llama3-ssl4eo", rows_read, findings)


def _read_captions(
    parts: list[Part], bad_rows: BadRows, encoding: str
) -> tuple[pd.DataFrame, list[str]]:
    frames = []
    labels: list[str] = []
    for part in parts:
        file = part.file
        file_rows = BadRows(str(file), bad_rows.policy)
        if part.row_group is None:
            frame = _common.read_table_file(file, file_rows, encoding)
        else:
            frame = pq.ParquetFile(file).read_row_group(part.row_group).to_pandas()
        # Malformed lines are reported under the file they are in.
        for reason, entries in file_rows.problems.items():
            for label, detail in entries:
                bad_rows.add(-1, f"{file.name} {label}", reason, detail)
        missing = [c for c in KEY_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(
                f"{file}: missing column(s) {', '.join(missing)} of the Llama3-SSL4EO-S12 layout "
                f"({', '.join(COLUMNS)})"
            )
        frames.append(pd.DataFrame(frame))
        labels.extend(f"{part.key} row {i + 1}" for i in range(len(frame)))
    bad_rows.raise_if_strict()
    combined = pd.concat(frames, ignore_index=True)
    if combined.empty:
        raise InputError(f"{parts[0].file}: the caption file has no rows")
    return combined, labels


def _to_model(
    frame: pd.DataFrame, labels: list[str], bad_rows: BadRows, source: str
) -> pd.DataFrame:
    """Rename the columns to the sample model and pad location ids to 7 digits."""
    location = pd.to_numeric(frame["sample_id"].astype("string"), errors="coerce")
    time_id = pd.to_numeric(frame["time_id"].astype("string"), errors="coerce")
    for column, values in (("sample_id", location), ("time_id", time_id)):
        invalid = values.isna() | (values < 0) | (values % 1 != 0)
        for position in np.flatnonzero(invalid.to_numpy()):
            bad_rows.add(
                int(position),
                labels[position],
                f"invalid-{column.replace('_', '-')}",
                f"{column}={frame[column].iloc[position]!r} is not a non-negative integer",
            )
    location_text = location.fillna(-1).astype(int).astype(str).str.zfill(7)
    time_text = time_id.fillna(-1).astype(int).astype(str)

    out = pd.DataFrame(
        {
            SAMPLE_ID: location_text + "_" + time_text,
            CAPTION: frame["caption"].astype("string").fillna(""),
            LOCATION_ID: location_text,
            "time_id": time_id.fillna(-1).astype(int),
        }
    )
    for column in frame.columns:
        if column not in ("caption", "sample_id", "time_id"):
            out[column] = frame[column].to_numpy()
    return out


METADATA_COLUMNS = ("sample_id", "time_id", "time", "geometry")
METADATA_EXTRAS = ("tile_id", "tile_crs")
INDEX_ROW_GROUP = 8192
"""Rows per row group of the metadata index: a partition's lookup reads only its row groups."""


@dataclass(frozen=True)
class MetadataIndex:
    """The v1.1 metadata sorted by acquisition id, so that a partition reads only its rows.

    The 1M-row train metadata takes an estimated few hundred MB as a table,
    which each worker would otherwise hold. The index is a Parquet copy sorted by
    `_key` (`<7-digit sample_id>_<time_id>`) in row groups of
    :data:`INDEX_ROW_GROUP` rows; a lookup filters on `_key`, and Parquet's
    row-group statistics let it skip all other row groups.

    Attributes:
        folder: The temporary folder of the index file, deleted with this object.
        path: The index file.
        crs: The CRS of the footprints in the metadata file.
        extras: The optional columns present (`tile_id`, `tile_crs`).
        largest: The largest key of each row group.
    """

    folder: tempfile.TemporaryDirectory[str]
    path: Path
    crs: Any
    extras: tuple[str, ...]
    largest: np.ndarray

    @classmethod
    def open(
        cls, folder: tempfile.TemporaryDirectory[str], path: Path, crs: Any, extras: tuple[str, ...]
    ) -> MetadataIndex:
        """Open an index file and read the largest key of each row group."""
        metadata = pq.ParquetFile(path).metadata
        column = metadata.schema.to_arrow_schema().get_field_index("_key")
        largest = [
            metadata.row_group(i).column(column).statistics.max
            for i in range(metadata.num_row_groups)
        ]
        return cls(folder, path, crs, extras, np.array(largest, dtype=object))

    def lookup(self, keys: list[str]) -> pd.DataFrame:
        """Return the rows of `keys` (first occurrence each) indexed by key."""
        requested = sorted(set(keys))
        groups = np.unique(np.searchsorted(self.largest, requested, side="left"))
        table = pq.ParquetFile(self.path).read_row_groups(
            [int(g) for g in groups if g < len(self.largest)],
            columns=["_key", "time", "geometry", *self.extras],
        )
        table = table.filter(pc.is_in(table["_key"], pa.array(requested, pa.string())))
        frame = table.to_pandas()
        geometry = gpd.GeoSeries.from_wkb(frame["geometry"].to_numpy(), crs=self.crs)
        if self.crs is not None and not geometry.crs.equals(CRS):
            geometry = geometry.to_crs(CRS)
        found = pd.DataFrame(
            {
                "_key": frame["_key"].to_numpy(),
                "_time": pd.to_datetime(frame["time"], utc=True).to_numpy(),
                "_geometry": geometry.to_numpy(),
            }
        )
        for extra in self.extras:
            found[extra] = frame[extra].to_numpy()
        return found.drop_duplicates("_key").set_index("_key")


@lru_cache(maxsize=2)
def _metadata_index(metadata_path: Path, size: int, mtime_ns: int) -> MetadataIndex:
    """Build the sorted index of a metadata file once per process.

    The arguments `size` and `mtime_ns` make a changed file a new cache entry.
    The index goes to a temporary folder that is deleted when the entry is
    dropped or the process ends. DuckDB sorts out of core, so building it does
    not load the whole file either.
    """
    try:
        schema = pq.read_schema(metadata_path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError and others
        raise InputError(
            f"--metadata {metadata_path}: not a readable GeoParquet file ({error})"
        ) from None
    missing = [c for c in METADATA_COLUMNS if c not in schema.names]
    if missing:
        raise InputError(
            f"--metadata {metadata_path}: missing column(s) {', '.join(sorted(missing))}; "
            "expected the SSL4EO-S12 v1.1 metadata GeoParquet (sample_id, time_id, time, "
            "tile_id, geometry, tile_crs, file)"
        )
    extras = tuple(c for c in METADATA_EXTRAS if c in schema.names)
    crs = _geoparquet_crs(schema, metadata_path)
    folder = tempfile.TemporaryDirectory(prefix="eoaudit-metadata-")
    target = Path(folder.name) / "index.parquet"
    try:
        _write_index(metadata_path, extras, target)
    except BaseException:
        folder.cleanup()
        raise
    return MetadataIndex.open(folder, target, crs, extras)


def _write_index(metadata_path: Path, extras: tuple[str, ...], target: Path) -> None:
    source = str(metadata_path).replace("'", "''")
    selected = ", ".join(extras)
    query = f"""
        SELECT lpad(CAST(sample_id AS VARCHAR), 7, '0') || '_' || CAST(time_id AS VARCHAR) AS _key,
               time, CAST(geometry AS BLOB) AS geometry {", " + selected if selected else ""}
        FROM read_parquet('{source}', file_row_number = true)
        ORDER BY _key, file_row_number
    """
    with closing(connect(target.parent / "duckdb")) as db:
        try:
            batches = db.sql(query).to_arrow_reader(INDEX_ROW_GROUP)
            with pq.ParquetWriter(target, batches.schema) as writer:
                for batch in batches:
                    writer.write_batch(batch, row_group_size=INDEX_ROW_GROUP)
        except Exception as error:  # duckdb raises several error types
            raise InputError(
                f"--metadata {metadata_path}: failed to read the metadata ({error}); "
                "expected the SSL4EO-S12 v1.1 metadata GeoParquet"
            ) from None


def _geoparquet_crs(schema: pa.Schema, metadata_path: Path) -> Any:
    """Return the CRS of the primary geometry column (GeoParquet's default, OGC:CRS84, if unset)."""
    try:
        geo = json.loads((schema.metadata or {})[b"geo"])
        column = geo["columns"][geo["primary_column"]]
    except (KeyError, ValueError):
        raise InputError(
            f"--metadata {metadata_path}: no GeoParquet 'geo' metadata; write the file with "
            "GeoPandas (GeoDataFrame.to_parquet) or another GeoParquet writer"
        ) from None
    crs = column.get("crs", "OGC:CRS84")
    return None if crs is None else pyproj.CRS.from_user_input(crs)


def _join_metadata(
    out: pd.DataFrame, metadata_path: Path
) -> tuple[pd.DataFrame, gpd.GeoSeries, Finding | None]:
    """Add footprints, acquisition times and tile ids from the v1.1 metadata."""
    if not metadata_path.is_file():
        raise InputError(f"--metadata {metadata_path}: file not found")
    stat = metadata_path.stat()
    index = _metadata_index(metadata_path.resolve(), stat.st_size, stat.st_mtime_ns)
    keys = out[SAMPLE_ID].to_numpy(dtype=object)
    lookup = index.lookup([str(k) for k in keys])

    positions = lookup.index.get_indexer(keys)
    matched = pd.Series(positions >= 0)
    found = lookup.iloc[positions.clip(min=0)]
    merged = out.reset_index(drop=True)
    for column in found.columns:
        if not column.startswith("_"):
            merged[column] = found[column].to_numpy()
    geometry = gpd.GeoSeries(
        pd.Series(found["_geometry"].to_numpy()).where(matched, None).to_numpy(), crs=CRS
    )
    merged[TIME] = pd.to_datetime(pd.Series(found["_time"].to_numpy()), utc=True)

    finding = None
    unmatched = int((~matched).sum())
    if unmatched:
        examples = merged.loc[~matched, SAMPLE_ID].head(MAX_EXAMPLES).tolist()
        finding = Finding(
            severity="warning",
            code="metadata-unmatched",
            message=(
                f"captions without a (sample_id, time_id) match in {metadata_path.name}; "
                "they are kept without footprint or acquisition time"
            ),
            count=unmatched,
            examples=examples,
            analyzer="dataset",
        )
    return merged, geometry, finding


def _join_chips(
    out: pd.DataFrame, geometry: gpd.GeoSeries | None, images: Path
) -> tuple[pd.DataFrame, gpd.GeoSeries, list[Finding]]:
    """Add chip references and the Zarr metadata (centre, CRS, cloud fraction)."""
    if not images.is_dir():
        raise InputError(f"--images {images}: folder not found")
    folders = {m: images / m for m in MODALITIES if (images / m).is_dir()}
    if not folders:
        raise InputError(
            f"--images {images}: no {' or '.join(MODALITIES)} folder inside; "
            "point --images at the split folder that contains them"
        )
    if "file" not in out.columns:
        raise InputError("the captions have no 'file' column, so chips cannot be found")

    tables = []
    for file_name in sorted(out["file"].dropna().astype(str).unique()):
        for modality, folder in folders.items():
            zarr_path = folder / file_name
            if not zarr_path.is_file():
                continue
            table = read_zarr_metadata(zarr_path)
            table["modality"] = modality
            table["ref"] = [
                str(ZarrChipRef(zarr_path.resolve(), loc, int(t)))
                for loc, t in zip(table["location_id"], table["time_index"], strict=True)
            ]
            tables.append(table)
    if not tables:
        finding = _missing_chip_finding(out, out.index, folders)
        return out, _as_geoseries(geometry, len(out)), [finding]

    chips = pd.concat(tables, ignore_index=True)
    refs = chips.pivot_table(index="sample_id", columns="modality", values="ref", aggfunc="first")
    first = chips.drop_duplicates("sample_id").set_index("sample_id")

    out = out.copy()
    found = out[SAMPLE_ID].isin(first.index).to_numpy()
    for modality in folders:
        column = f"image_{modality.lower()}"
        out[column] = out[SAMPLE_ID].map(refs[modality]) if modality in refs else None
    preferred = [f"image_{m.lower()}" for m in MODALITIES if m in folders]
    out[IMAGE] = out[preferred].bfill(axis=1).iloc[:, 0]
    for column in ("center_lat", "center_lon", "crs", "cloud_fraction"):
        out[column] = out[SAMPLE_ID].map(first[column])

    # Chips also give the acquisition time and footprint where metadata did not.
    chip_time = out[SAMPLE_ID].map(first["time"])
    out[TIME] = out[TIME].fillna(chip_time) if TIME in out else chip_time
    geometry = _as_geoseries(geometry, len(out))
    chip_footprint = out[SAMPLE_ID].map(first["footprint"]).to_numpy()
    filled = [g if g is not None else c for g, c in zip(geometry, chip_footprint, strict=True)]
    geometry = gpd.GeoSeries(filled, crs=CRS)

    findings = []
    if not found.all():
        findings.append(_missing_chip_finding(out, np.flatnonzero(~found), folders))
    return out, geometry, findings


def _as_geoseries(geometry: gpd.GeoSeries | None, length: int) -> gpd.GeoSeries:
    if geometry is None:
        return gpd.GeoSeries([None] * length, crs=CRS)
    return geometry.reset_index(drop=True)


def _missing_chip_finding(
    out: pd.DataFrame, positions: np.ndarray | pd.Index, folders: dict[str, Path]
) -> Finding:
    missing = out.iloc[np.asarray(positions)]
    return Finding(
        severity="warning",
        code="chip-missing",
        message=(
            f"captions without a chip in {', '.join(str(f) for f in folders.values())}; "
            "they are audited without pixels"
        ),
        count=len(missing),
        examples=missing[SAMPLE_ID].head(MAX_EXAMPLES).tolist(),
        analyzer="dataset",
    )
