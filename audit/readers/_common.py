"""Parsing steps that several readers share: tables, columns, times, coordinates."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pygeohash
import shapely

from eoaudit.errors import InputError
from eoaudit.samples import CRS, BadRows

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".geoparquet", ".jsonl", ".ndjson")

_SKIPPED_LINE = re.compile(r"Skipping line (\d+): (.*)")


def read_table_file(path: Path, bad_rows: BadRows, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV, TSV, Parquet, GeoParquet or JSON Lines file into a frame.

    GeoParquet files come back as GeoDataFrames in their own CRS. CSV rows with
    the wrong number of fields are bad rows, labelled by their line number.

    Raises:
        InputError: On an unknown suffix, bytes that are not valid in
            `encoding`, or a file that cannot be parsed at all.
    """
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, bad_rows, encoding, sep="\t" if suffix == ".tsv" else ",")
    if suffix in (".parquet", ".geoparquet"):
        return _read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, bad_rows, encoding)
    raise InputError(
        f"{path}: unknown table suffix {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}"
    )


def _read_csv(path: Path, bad_rows: BadRows, encoding: str, sep: str) -> pd.DataFrame:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(
                path,
                sep=sep,
                dtype=str,
                keep_default_na=False,
                encoding=encoding,
                on_bad_lines="warn",
            )
        except UnicodeDecodeError as error:
            raise _decode_error(path, error, encoding) from None
        except pd.errors.EmptyDataError:
            raise InputError(f"{path}: the file is empty; give a table with a header row") from None
        except pd.errors.ParserError as error:
            raise InputError(f"{path}: not a readable CSV file ({error})") from None

    # Malformed lines never become rows of the frame, hence position -1.
    for warning in caught:
        for line in str(warning.message).splitlines():
            match = _SKIPPED_LINE.match(line.strip())
            if match:
                bad_rows.add(-1, f"line {match.group(1)}", "malformed-csv-row", match.group(2))
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return gpd.read_parquet(path)
    except ValueError as error:
        if "geo" not in str(error).lower():
            raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    except Exception as error:  # pyarrow raises several unrelated types for corrupt files
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    return pd.read_parquet(path)


def _read_jsonl(path: Path, bad_rows: BadRows, encoding: str) -> pd.DataFrame:
    records = []
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as error:
        raise _decode_error(path, error, encoding) from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            bad_rows.add(-1, f"line {number}", "malformed-json-line", error.msg)
            continue
        if not isinstance(record, dict):
            bad_rows.add(-1, f"line {number}", "malformed-json-line", "not a JSON object")
            continue
        records.append(record)
    return pd.DataFrame.from_records(records)


def _decode_error(path: Path, error: UnicodeDecodeError, encoding: str) -> InputError:
    """Build an error naming the first line and byte that are not valid text.

    The offsets in a decoder's error are relative to the block it was given,
    so the file is scanned again line by line to find the real position.
    """
    offset = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as line_error:
                bad = line[line_error.start : line_error.start + 1].hex()
                return InputError(
                    f"{path}, line {number}: byte 0x{bad} at offset {offset + line_error.start} "
                    f"is not valid {encoding}; re-encode the file as UTF-8 "
                    "(e.g. iconv -f latin1 -t utf-8) or pass --encoding"
                )
            offset += len(line)
    return InputError(f"{path}: not valid {encoding} ({error.reason}); pass --encoding")


def find_column(
    frame: pd.DataFrame, candidates: Sequence[str], requested: str | None, what: str, source: str
) -> str | None:
    """Return the column for `what`: the requested one, else the first candidate present.

    Candidates match case-insensitively.

    Raises:
        InputError: When `requested` is not a column of the frame.
    """
    if requested:
        if requested not in frame.columns:
            raise InputError(
                f"{source}: no column {requested!r} for the {what}; "
                f"columns are {', '.join(map(str, frame.columns))}"
            )
        return requested
    lower = {str(column).lower(): str(column) for column in frame.columns}
    for candidate in candidates:
        if candidate in lower:
            return lower[candidate]
    return None


def parse_times(
    values: pd.Series, *, dayfirst: bool, column: str, bad_rows: BadRows, labels: Sequence[str]
) -> pd.Series:
    """Parse acquisition times to UTC; naive times are taken as UTC.

    ISO 8601 is expected unless `dayfirst` is set, in which case forms such as
    `31/12/2020` are read day first. Empty cells become NaT; a non-empty cell
    that does not parse is a bad row.
    """
    text = values.astype("string").str.strip()
    if dayfirst:
        parsed = pd.to_datetime(text, dayfirst=True, format="mixed", utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    failed = parsed.isna() & text.notna() & text.ne("")
    for position in np.flatnonzero(failed.to_numpy()):
        hint = "day-first dates need --dayfirst" if not dayfirst else "expected a day-first date"
        bad_rows.add(
            int(position),
            labels[int(position)],
            "unparseable-time",
            f"{column}={text.iloc[position]!r} is not a date ({hint})",
        )
    return parsed.reset_index(drop=True)


def extract_times(
    values: pd.Series, pattern: str, *, column: str, bad_rows: BadRows, labels: Sequence[str]
) -> pd.Series:
    """Take a date out of text with a regular expression whose first group is the date."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise InputError(
            f"--time-regex {column}={pattern}: invalid regular expression ({error})"
        ) from None
    if compiled.groups < 1:
        raise InputError(
            f"--time-regex {column}={pattern}: the expression needs a group around the date, "
            r"e.g. (\d{4}-\d{2}-\d{2})"
        )
    extracted = values.astype("string").str.extract(compiled, expand=False)
    if isinstance(extracted, pd.DataFrame):
        extracted = extracted.iloc[:, 0]
    missing = extracted.isna() & values.notna()
    for position in np.flatnonzero(missing.to_numpy()):
        bad_rows.add(
            int(position),
            labels[int(position)],
            "unparseable-time",
            f"{column}={values.iloc[position]!r} does not match --time-regex {pattern!r}",
        )
    return parse_times(extracted, dayfirst=False, column=column, bad_rows=bad_rows, labels=labels)


def points_from_lat_lon(
    lat: pd.Series,
    lon: pd.Series,
    *,
    columns: tuple[str, str],
    bad_rows: BadRows,
    labels: Sequence[str],
) -> gpd.GeoSeries:
    """Build EPSG:4326 points; rows with both cells empty get no geometry.

    A value that is not a number, a latitude outside [-90, 90] or a longitude
    outside [-180, 180] makes the row bad.
    """
    lat_text = lat.astype("string").str.strip().fillna("")
    lon_text = lon.astype("string").str.strip().fillna("")
    lat_values = pd.to_numeric(lat_text.replace("", None), errors="coerce").to_numpy(float)
    lon_values = pd.to_numeric(lon_text.replace("", None), errors="coerce").to_numpy(float)
    both_empty = (lat_text.eq("") & lon_text.eq("")).to_numpy()

    checks = [
        (np.isnan(lat_values) & ~both_empty, "invalid-coordinate", columns[0], "is not a number"),
        (np.isnan(lon_values) & ~both_empty, "invalid-coordinate", columns[1], "is not a number"),
        (np.abs(lat_values) > 90, "latitude-out-of-range", columns[0], "is outside [-90, 90]"),
        (np.abs(lon_values) > 180, "longitude-out-of-range", columns[1], "is outside [-180, 180]"),
    ]
    bad = np.zeros(len(lat_values), dtype=bool)
    for mask, reason, column, problem in checks:
        raw = lat_text if column == columns[0] else lon_text
        for position in np.flatnonzero(mask & ~bad):
            bad_rows.add(
                int(position),
                labels[int(position)],
                reason,
                f"{column}={raw.iloc[position]!r} {problem}",
            )
        bad |= mask

    usable = ~bad & ~both_empty
    points = np.full(len(lat_values), None, dtype=object)
    points[usable] = shapely.points(lon_values[usable], lat_values[usable])
    return gpd.GeoSeries(points, crs=CRS)


def points_from_geohash(
    values: pd.Series, *, column: str, bad_rows: BadRows, labels: Sequence[str]
) -> gpd.GeoSeries:
    """Decode geohashes to the points at their cell centres (EPSG:4326)."""
    points = np.full(len(values), None, dtype=object)
    for position, code in enumerate(values.astype("string").fillna("")):
        code = code.strip().lower()
        if not code:
            continue
        try:
            lat, lon = pygeohash.decode(code)
        except (ValueError, KeyError, IndexError):
            bad_rows.add(
                position,
                labels[int(position)],
                "invalid-geohash",
                f"{column}={code!r} is not a geohash",
            )
            continue
        points[position] = shapely.Point(float(lon), float(lat))
    return gpd.GeoSeries(points, crs=CRS)


def geometries_from_column(
    values: pd.Series, *, column: str, bad_rows: BadRows, labels: Sequence[str]
) -> gpd.GeoSeries:
    """Parse WKT (or pass through shapely geometries) and reject invalid shapes.

    Invalid geometry, such as a self-intersecting polygon, makes the row bad;
    its reason comes from GEOS (`shapely.is_valid_reason`).
    """
    if isinstance(values, gpd.GeoSeries):
        geometries = values.to_numpy()
    else:
        text = values.astype("string").fillna("").str.strip()
        geometries = np.full(len(text), None, dtype=object)
        for position, wkt in enumerate(text):
            if not wkt:
                continue
            try:
                geometries[position] = shapely.from_wkt(wkt)
            except shapely.errors.GEOSException as error:
                bad_rows.add(
                    position,
                    labels[int(position)],
                    "invalid-geometry",
                    f"{column}={wkt[:60]!r} is not WKT ({error})",
                )
    for position, geometry in enumerate(geometries):
        if geometry is None or geometry.is_empty:
            geometries[position] = None
            continue
        if not geometry.is_valid:
            bad_rows.add(
                position,
                labels[int(position)],
                "invalid-geometry",
                f"{column} is an invalid shape ({shapely.is_valid_reason(geometry)})",
            )
            geometries[position] = None
            continue
        minx, miny, maxx, maxy = geometry.bounds
        if miny < -90 or maxy > 90 or minx < -180 or maxx > 180:
            bad_rows.add(
                position,
                labels[int(position)],
                "latitude-out-of-range" if miny < -90 or maxy > 90 else "longitude-out-of-range",
                f"{column} bounds {geometry.bounds} fall outside EPSG:4326 lon/lat limits",
            )
            geometries[position] = None
    return gpd.GeoSeries(geometries, crs=CRS)


def parse_time_regex(option: str) -> tuple[str, str]:
    """Split a `COLUMN=REGEX` option into its two parts."""
    column, sep, pattern = option.partition("=")
    if not sep or not column or not pattern:
        raise InputError(
            f"--time-regex {option!r}: expected COLUMN=REGEX, "
            r"e.g. image_path=(\d{4}-\d{2}-\d{2})"
        )
    return column, pattern
