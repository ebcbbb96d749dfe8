"""Reader for a folder of GeoTIFF images plus a captions table keyed by file name.

The captions table is the `captions` option, or else the one file named
`captions.csv`, `captions.parquet` or `captions.jsonl` in the folder. Its file
column (`file`, `filename`, `image`, `image_path` or `name`) contains each image's
file name, relative to the folder; several captions may share one image.

Footprint and CRS come from each GeoTIFF (its bounds, reprojected to EPSG:4326
with densified edges). The acquisition time comes from the GeoTIFF tags
`datetime`, `DATETIME`, `acquisition_date` or `TIFFTAG_DATETIME`, where present;
a time column in the captions table takes precedence.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import rasterio
import rasterio.warp
import shapely

from eoaudit.errors import InputError
from eoaudit.readers import _common
from eoaudit.readers.options import ReadOptions
from eoaudit.readers.table import frame_to_samples
from eoaudit.results import Finding
from eoaudit.samples import (
    CRS,
    IMAGE,
    IMAGE_ID,
    MAX_EXAMPLES,
    TIME,
    BadRows,
    SampleSet,
    empty_caption_finding,
)

TIFF_SUFFIXES = (".tif", ".tiff")
CAPTION_TABLE_NAMES = ("captions.csv", "captions.parquet", "captions.jsonl")
FILE_NAMES = ("file", "filename", "file_name", "image", "image_path", "name")
TIME_TAGS = ("datetime", "DATETIME", "acquisition_date", "TIFFTAG_DATETIME")


def tiff_files(folder: Path) -> list[Path]:
    """Return the GeoTIFF files of a folder, sorted, without descending into subfolders."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)


def read(path: Path, options: ReadOptions) -> SampleSet:
    """Read captions for a folder of GeoTIFFs into samples.

    Raises:
        InputError: When the folder has no GeoTIFF, no captions table is found,
            or a caption names a file that is not in the folder (under
            `on_bad_rows="error"`).
    """
    if not path.is_dir():
        raise InputError(f"{path}: the geotiff-dir format needs a folder of GeoTIFF files")
    table_path = options.captions or _find_caption_table(path)
    bad_rows = BadRows(str(table_path), options.on_bad_rows)
    frame = _common.read_table_file(table_path, bad_rows, options.encoding)
    if frame.empty:
        raise InputError(f"{table_path}: the captions table has no rows")
    file_column = _common.find_column(
        frame, FILE_NAMES, options.image_column, "image file", str(table_path)
    )
    if file_column is None:
        raise InputError(
            f"{table_path}: no image file column (looked for {', '.join(FILE_NAMES)}); "
            "name it with --image-column"
        )

    images = {p.name: p for p in tiff_files(path)}
    if not images:
        raise InputError(f"{path}: no .tif or .tiff files in the folder")

    frame = pd.DataFrame(frame).reset_index(drop=True)
    names = frame[file_column].astype("string").fillna("").map(lambda v: Path(v).name)
    footprints, times, extra = _describe_images(images)
    for position, name in enumerate(names):
        if name not in images:
            bad_rows.add(
                position,
                f"row {position + 1}",
                "image-not-found",
                f"{file_column}={name!r} is not a GeoTIFF in {path}",
            )

    if _common.find_column(frame, ("time", "datetime", "date"), options.time_column, "time", ""):
        tiff_time = None
    else:
        tiff_time = pd.Series([times.get(n) for n in names], dtype="string")
        frame["time"] = tiff_time
    frame[IMAGE] = [str(images[n]) if n in images else None for n in names]
    frame[IMAGE_ID] = names.to_numpy()
    frame["crs"] = [extra.get(n, {}).get("crs") for n in names]

    table_options = ReadOptions(**{**options.__dict__, "image_column": IMAGE})
    samples = frame_to_samples(frame, str(table_path), table_options, bad_rows)
    samples = samples.set_geometry(
        gpd.GeoSeries(
            [footprints.get(Path(str(v)).name) if v else None for v in samples[IMAGE]],
            index=samples.index,
            crs=CRS,
        )
    )
    findings = bad_rows.findings()
    uncaptioned = sorted(set(images) - set(names))
    if uncaptioned:
        findings.append(
            Finding(
                severity="info",
                code="image-without-caption",
                message=f"GeoTIFFs in {path} without a caption",
                count=len(uncaptioned),
                examples=uncaptioned[:MAX_EXAMPLES],
                analyzer="dataset",
            )
        )
    empty = empty_caption_finding(samples)
    if empty:
        findings.append(empty)
    if tiff_time is not None and samples[TIME].isna().all():
        findings.append(
            Finding(
                severity="info",
                code="time-not-found",
                message=f"no GeoTIFF carries an acquisition time tag ({', '.join(TIME_TAGS)})",
                count=len(samples),
                analyzer="dataset",
            )
        )
    rows_read = len(frame) + bad_rows.unparsed
    return SampleSet(samples, str(path), "geotiff-dir", rows_read, findings)


def _find_caption_table(folder: Path) -> Path:
    found = [folder / name for name in CAPTION_TABLE_NAMES if (folder / name).is_file()]
    if len(found) != 1:
        raise InputError(
            f"{folder}: expected exactly one captions table named "
            f"{' or '.join(CAPTION_TABLE_NAMES)} in the folder (found {len(found)}); "
            "name it with --captions FILE"
        )
    return found[0]


def _describe_images(
    images: dict[str, Path],
) -> tuple[dict[str, shapely.Geometry], dict[str, str], dict[str, dict[str, int | None]]]:
    """Read footprint, acquisition time tag and EPSG code of every GeoTIFF."""
    footprints: dict[str, shapely.Geometry] = {}
    times: dict[str, str] = {}
    extra: dict[str, dict[str, int | None]] = {}
    for name, path in images.items():
        try:
            with rasterio.open(path) as source:
                if source.crs is None:
                    raise InputError(f"{path}: the GeoTIFF has no CRS, so it has no footprint")
                # Densify the edges first: a straight UTM edge is curved in lon/lat.
                left, bottom, right, top = source.bounds
                box = shapely.segmentize(
                    shapely.box(left, bottom, right, top), max((right - left) / 16, 1e-9)
                )
                footprint = rasterio.warp.transform_geom(
                    source.crs, CRS, shapely.geometry.mapping(box), antimeridian_cutting=True
                )
                footprints[name] = shapely.geometry.shape(footprint)
                tags = source.tags()
                for tag in TIME_TAGS:
                    if tags.get(tag):
                        times[name] = _normalise_tiff_time(tags[tag])
                        break
                extra[name] = {"crs": source.crs.to_epsg()}
        except rasterio.errors.RasterioIOError as error:
            raise InputError(f"{path}: not a readable GeoTIFF ({error})") from None
    return footprints, times, extra


def _normalise_tiff_time(value: str) -> str:
    """Turn the TIFF `YYYY:MM:DD HH:MM:SS` form into ISO 8601; leave others as they are."""
    value = value.strip()
    if len(value) >= 10 and value[4] == ":" and value[7] == ":":
        return value[:4] + "-" + value[5:7] + "-" + value[8:10] + value[10:].replace(" ", "T", 1)
    return value
