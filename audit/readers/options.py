"""Options that steer the readers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eoaudit.samples import BadRowPolicy


@dataclass
class ReadOptions:
    """How to read a dataset. Every field has a default that auto-detection fills in.

    Attributes:
        format: Reader name, or `auto` to detect it from the path.
        caption_column: Column with the caption; detected from common names if None.
        id_column: Column with a unique sample id; row numbers are used if None
            and no `sample_id`/`id` column exists.
        lat_column: Latitude column in degrees (EPSG:4326).
        lon_column: Longitude column in degrees (EPSG:4326).
        geohash_column: Geohash column; decoded to the cell centre.
        geometry_column: Column with WKT footprints, or the geometry of a GeoParquet file.
        time_column: Column with acquisition times.
        image_column: Column with an image path or reference.
        dayfirst: Read dates such as 03/04/2021 as 3 April rather than ISO only.
        time_regex: `(column, pattern)` that takes the date out of another column.
        metadata: SSL4EO-S12 v1.1 metadata GeoParquet (footprints and times).
        images: Folder with SSL4EO-S12 v1.1 `S2L2A/` and/or `S2RGB/` Zarr Zip files.
        captions: Captions table of a `geotiff-dir` dataset.
        encoding: Text encoding of CSV and JSON files.
        on_bad_rows: `skip` leaves bad rows out and counts them in findings;
            `error` stops at the first.
    """

    format: str = "auto"
    caption_column: str | None = None
    id_column: str | None = None
    lat_column: str | None = None
    lon_column: str | None = None
    geohash_column: str | None = None
    geometry_column: str | None = None
    time_column: str | None = None
    image_column: str | None = None
    dayfirst: bool = False
    time_regex: tuple[str, str] | None = None
    metadata: Path | None = None
    images: Path | None = None
    captions: Path | None = None
    encoding: str = "utf-8"
    on_bad_rows: BadRowPolicy = "skip"
