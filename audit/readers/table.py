"""Reader for plain tables: CSV, TSV, Parquet, GeoParquet and JSON Lines.

Columns are found by common names unless named with options:

- caption: `caption`, `text`, `captions`, `sentence`, `description`
- sample id: `sample_id`, `id`; else a unique `image_id`, `name` or `filename`;
  else the 1-based row number
- location: `lat`/`lon` (or `latitude`/`longitude`, `center_lat`/`center_lon`),
  `geohash` (decoded to the cell centre), or `geometry`/`wkt`/`footprint` (WKT,
  or the geometry column of a GeoParquet file)
- acquisition time: `time`, `datetime`, `date`, `acquisition_time`, `timestamp`,
  or a date taken out of another column with `time_regex`
- image: `image`, `image_path`, `path`, `filename`, `file`
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd

from eoaudit.errors import InputError
from eoaudit.readers import _common
from eoaudit.readers.options import ReadOptions
from eoaudit.samples import (
    CAPTION,
    CRS,
    IMAGE,
    IMAGE_ID,
    SAMPLE_ID,
    TIME,
    BadRows,
    SampleSet,
    build_samples,
    empty_caption_finding,
)

CAPTION_NAMES = ("caption", "text", "captions", "sentence", "description")
ID_NAMES = ("sample_id", "id")
UNIQUE_NAME_COLUMNS = ("image_id", "name", "filename", "file_name")
LAT_NAMES = ("lat", "latitude", "center_lat")
LON_NAMES = ("lon", "lng", "long", "longitude", "center_lon")
GEOHASH_NAMES = ("geohash",)
GEOMETRY_NAMES = ("geometry", "wkt", "footprint", "geom")
TIME_NAMES = ("time", "datetime", "date", "acquisition_time", "timestamp")
IMAGE_NAMES = ("image", "image_path", "path", "filename", "file_name", "file")


def read(path: Path, options: ReadOptions) -> SampleSet:
    """Read a table file into samples.

    Raises:
        InputError: When the file cannot be read, has no caption column, or a
            row is bad under `on_bad_rows="error"`.
    """
    bad_rows = BadRows(str(path), options.on_bad_rows)
    frame = _common.read_table_file(path, bad_rows, options.encoding)
    samples = frame_to_samples(frame, str(path), options, bad_rows)
    findings = bad_rows.findings()
    empty = empty_caption_finding(samples)
    if empty:
        findings.append(empty)
    rows_read = len(frame) + bad_rows.unparsed
    return SampleSet(samples, str(path), "table", rows_read, findings)


def frame_to_samples(
    frame: pd.DataFrame, source: str, options: ReadOptions, bad_rows: BadRows
) -> gpd.GeoDataFrame:
    """Map a table's columns onto the sample model.

    Used by the table reader and by readers whose captions come as a table.
    """
    if frame.empty:
        raise InputError(f"{source}: the table has no rows; there is nothing to audit")
    frame = frame.reset_index(drop=True)
    labels = [f"row {i + 1}" for i in range(len(frame))]

    caption = _common.find_column(frame, CAPTION_NAMES, options.caption_column, "caption", source)
    if caption is None:
        raise InputError(
            f"{source}: no caption column found (looked for {', '.join(CAPTION_NAMES)}); "
            f"name it with --caption-column, columns are {', '.join(map(str, frame.columns))}"
        )

    out = pd.DataFrame(index=frame.index)
    out[SAMPLE_ID] = _sample_ids(frame, options, source)
    out[CAPTION] = frame[caption].astype("string").fillna("")
    out[TIME] = _times(frame, options, source, bad_rows, labels)

    image = _common.find_column(frame, IMAGE_NAMES, options.image_column, "image", source)
    if image is not None:
        out[IMAGE] = frame[image].astype("string")

    passthrough = [c for c in frame.columns if c not in (caption, SAMPLE_ID, TIME, "geometry")]
    for column in passthrough:
        if column not in out:
            out[column] = frame[column]
    if IMAGE_ID in out and out[IMAGE_ID].is_unique:
        # One caption per image: image_id is an id, not a grouping column.
        out[IMAGE_ID] = out[IMAGE_ID].astype(str)

    geometry = _geometry(frame, options, source, bad_rows, labels)
    return build_samples(out, geometry=geometry, source=source, bad_rows=bad_rows)


def _sample_ids(frame: pd.DataFrame, options: ReadOptions, source: str) -> pd.Series:
    column = _common.find_column(frame, ID_NAMES, options.id_column, "sample id", source)
    if column is not None:
        return frame[column].astype("string").fillna("")
    for name in UNIQUE_NAME_COLUMNS:
        candidate = _common.find_column(frame, (name,), None, name, source)
        if candidate is not None and frame[candidate].is_unique:
            return frame[candidate].astype("string")
    return pd.Series([str(i + 1) for i in range(len(frame))], index=frame.index)


def _times(
    frame: pd.DataFrame, options: ReadOptions, source: str, bad_rows: BadRows, labels: list[str]
) -> pd.Series:
    if options.time_regex is not None:
        column, pattern = options.time_regex
        if column not in frame.columns:
            raise InputError(
                f"{source}: --time-regex names column {column!r}, which is not in the table; "
                f"columns are {', '.join(map(str, frame.columns))}"
            )
        return _common.extract_times(
            frame[column], pattern, column=column, bad_rows=bad_rows, labels=labels
        )
    column = _common.find_column(frame, TIME_NAMES, options.time_column, "time", source)
    if column is None:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    values = frame[column]
    if pd.api.types.is_datetime64_any_dtype(values):
        if getattr(values.dt, "tz", None) is None:
            return values.dt.tz_localize("UTC").reset_index(drop=True)
        return values.dt.tz_convert("UTC").reset_index(drop=True)
    return _common.parse_times(
        values, dayfirst=options.dayfirst, column=column, bad_rows=bad_rows, labels=labels
    )


def _geometry(
    frame: pd.DataFrame, options: ReadOptions, source: str, bad_rows: BadRows, labels: list[str]
) -> gpd.GeoSeries | None:
    if isinstance(frame, gpd.GeoDataFrame) and options.geometry_column is None:
        series = frame.geometry
        if series.crs is not None and not series.crs.equals(CRS):
            series = series.to_crs(CRS)
        return _common.geometries_from_column(
            series.reset_index(drop=True), column="geometry", bad_rows=bad_rows, labels=labels
        )

    geometry = _common.find_column(
        frame, GEOMETRY_NAMES, options.geometry_column, "geometry", source
    )
    if geometry is not None:
        return _common.geometries_from_column(
            frame[geometry], column=geometry, bad_rows=bad_rows, labels=labels
        )

    lat = _common.find_column(frame, LAT_NAMES, options.lat_column, "latitude", source)
    lon = _common.find_column(frame, LON_NAMES, options.lon_column, "longitude", source)
    if (lat is None) != (lon is None):
        raise InputError(
            f"{source}: found a {'latitude' if lat else 'longitude'} column but not its partner; "
            "name both with --lat-column and --lon-column"
        )
    if lat is not None and lon is not None:
        return _common.points_from_lat_lon(
            frame[lat], frame[lon], columns=(lat, lon), bad_rows=bad_rows, labels=labels
        )

    geohash = _common.find_column(frame, GEOHASH_NAMES, options.geohash_column, "geohash", source)
    if geohash is not None:
        return _common.points_from_geohash(
            frame[geohash], column=geohash, bad_rows=bad_rows, labels=labels
        )
    return None
