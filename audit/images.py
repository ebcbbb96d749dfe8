"""References to a sample's pixels, and reading SSL4EO-S12 v1.1 Zarr Zip files.

The `image` column of the sample model contains a string reference:

- a file path (GeoTIFF, PNG, JPEG ...), absolute or relative to the dataset;
- `zarr-zip://PATH?sample=0080717&time=0` for one acquisition of one location
  in an SSL4EO-S12 v1.1 Zarr Zip file (64 locations x 4 times per file).

The Zarr Zip files are Zarr format 2, written by xarray. They open here with
the zarr 3 package through its `ZipStore`.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np
import pandas as pd
import pyproj
import shapely
import zarr
from zarr.storage import ZipStore

from eoaudit.errors import InputError

ZARR_SCHEME = "zarr-zip"
CHIP_READ_ERRORS = (InputError, OSError, ValueError, KeyError, zipfile.BadZipFile)
"""Exceptions that :func:`read_chip` raises for a missing, broken or mismatched file.

rasterio, zarr, zipfile and numpy raise the ones other than InputError.
Callers that skip unreadable chips instead of stopping catch this tuple.
"""
PIXEL_SIZE_M = 10.0
"""Ground sampling distance of the SSL4EO-S12 v1.1 S2 chips (264 x 264 px)."""


@dataclass(frozen=True)
class ZarrChipRef:
    """One acquisition of one location inside a Zarr Zip file."""

    path: Path
    sample: str
    time: int

    def __str__(self) -> str:
        return f"{ZARR_SCHEME}://{quote(str(self.path))}?sample={self.sample}&time={self.time}"


def parse_image_ref(ref: str) -> ZarrChipRef | Path:
    """Parse an `image` cell into a Zarr chip reference or a file path.

    Raises:
        InputError: When a `zarr-zip://` reference lacks its sample or time.
    """
    if not ref.startswith(f"{ZARR_SCHEME}://"):
        return Path(ref)
    parts = urlsplit(ref)
    query = parse_qs(parts.query)
    try:
        return ZarrChipRef(
            Path(unquote(parts.netloc + parts.path)), query["sample"][0], int(query["time"][0])
        )
    except (KeyError, ValueError, IndexError):
        raise InputError(
            f"invalid image reference {ref!r}; expected zarr-zip://PATH?sample=ID&time=N"
        ) from None


def open_zarr_zip(path: Path) -> zarr.Group:
    """Open an SSL4EO-S12 v1.1 Zarr Zip file (Zarr format 2) read-only.

    Raises:
        InputError: When the file is missing or is not a Zarr format 2 zip.
    """
    if not path.is_file():
        raise InputError(f"{path}: Zarr Zip file not found")
    store = ZipStore(path, mode="r")
    try:
        try:
            return zarr.open_consolidated(store, zarr_format=2, mode="r")
        except (KeyError, ValueError, FileNotFoundError):
            return zarr.open_group(store, zarr_format=2, mode="r")
    except Exception as error:  # zarr raises several types for a broken store
        store.close()
        raise InputError(f"{path}: not a readable Zarr format 2 zip file ({error})") from None


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """Return a member array of a group; a subgroup of that name is a layout error."""
    member = group[name]
    if not isinstance(member, zarr.Array):
        raise InputError(f"{group.store}: {name!r} is a group, expected an array")
    return member


def read_zarr_metadata(path: Path) -> pd.DataFrame:
    """Read the per-acquisition metadata of one Zarr Zip file, without the pixels.

    Returns:
        One row per (location, time) with `sample_id` (`0080717_0`),
        `location_id`, `time_index`, `center_lat`, `center_lon`, `crs` (EPSG
        code), `time` (UTC), `cloud_fraction` (share of pixels whose cloud mask
        is non-zero; NaN without a mask) and `footprint` (EPSG:4326 polygon
        from the `x_`/`y_` pixel-centre coordinates, NaN without them).

    Raises:
        InputError: When a variable the layout requires is missing.
    """
    group = open_zarr_zip(path)
    try:
        names = set(group.array_keys())
        required = {"sample_id", "center_lat", "center_lon", "crs"}
        missing = required - names
        if missing:
            raise InputError(
                f"{path}: not an SSL4EO-S12 v1.1 Zarr file, variables {sorted(missing)} are missing"
            )
        ids = np.asarray(_array(group, "sample_id")[...]).astype(str)
        locations, times = ids.shape
        center_lat = np.asarray(_array(group, "center_lat")[...], dtype=float)
        center_lon = np.asarray(_array(group, "center_lon")[...], dtype=float)
        crs = np.asarray(_array(group, "crs")[...]).astype(int)
        acquired = (
            np.asarray(_array(group, "time_")[...]).astype("datetime64[ns]")
            if "time_" in names
            else np.full(ids.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
        )
        clouds = np.full(ids.shape, np.nan)
        if "cloud_mask" in names:
            mask = _array(group, "cloud_mask")
            for location in range(locations):
                block = np.asarray(mask[location])
                clouds[location] = (block != 0).reshape(times, -1).mean(axis=1)
        footprints = _footprints(group, names, crs, locations)
    finally:
        group.store.close()

    rows = []
    for location in range(locations):
        for time_index in range(times):
            sample_id = ids[location, time_index]
            rows.append(
                {
                    "sample_id": sample_id,
                    "location_id": sample_id.rsplit("_", 1)[0],
                    "time_index": time_index,
                    "center_lat": center_lat[location],
                    "center_lon": center_lon[location],
                    "crs": int(crs[location]),
                    "time": acquired[location, time_index],
                    "cloud_fraction": clouds[location, time_index],
                    "footprint": footprints[location],
                }
            )
    frame = pd.DataFrame(rows)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


def _footprints(
    group: zarr.Group, names: set[str], crs: np.ndarray, locations: int
) -> list[shapely.Polygon | None]:
    """Build EPSG:4326 footprints from the projected pixel-centre coordinates."""
    if not {"x_", "y_"} <= names:
        return [None] * locations
    xs = np.asarray(_array(group, "x_")[...], dtype=float)
    ys = np.asarray(_array(group, "y_")[...], dtype=float)
    half = PIXEL_SIZE_M / 2
    polygons: list[shapely.Polygon | None] = []
    for location in range(locations):
        box = shapely.box(
            xs[location].min() - half,
            ys[location].min() - half,
            xs[location].max() + half,
            ys[location].max() + half,
        )
        to_lonlat = pyproj.Transformer.from_crs(int(crs[location]), 4326, always_xy=True)
        dense = shapely.segmentize(box, max_segment_length=PIXEL_SIZE_M * 33)
        polygons.append(shapely.transform(dense, to_lonlat.transform, interleaved=False))
    return polygons


@lru_cache(maxsize=8)
def _opened_zarr(
    path: Path, size: int, mtime_ns: int, process: int
) -> tuple[zarr.Array, dict[str, tuple[int, int]]]:
    """Open a Zarr Zip once per process and return its `bands` array and acquisitions by id.

    Chips are read one at a time, so reopening the zip and reading every
    sample id for each chip would dominate; `size` and `mtime_ns` make a
    changed file a new cache entry. Up to 8 files stay open per process.

    `process` is the caller's process id. A forked DataLoader worker inherits
    this cache, and with it the parent's open file and its shared read
    position. Reads from two processes through that file then get each
    other's bytes, and zipfile reports a bad CRC. A new id opens a new file.

    Raises:
        InputError: When the file has no `bands` array.
    """
    group = open_zarr_zip(path)
    if "bands" not in set(group.array_keys()):
        group.store.close()
        raise InputError(
            f"{path}: missing 'bands' array, expected an SSL4EO-S12 v1.1 Zarr Zip file"
        )
    ids = np.asarray(_array(group, "sample_id")[...]).astype(str)
    positions = {
        str(ids[location, time]): (location, time)
        for location in range(ids.shape[0])
        for time in range(ids.shape[1])
    }
    return _array(group, "bands"), positions


def read_chip(ref: str, bands: list[int] | None = None) -> np.ndarray:
    """Read the pixels of one sample as a `(bands, height, width)` array.

    Args:
        ref: Value of the `image` column.
        bands: 0-based band positions to keep; all bands when None.

    Raises:
        InputError: When the file is missing or unreadable.
    """
    parsed = parse_image_ref(ref)
    if isinstance(parsed, ZarrChipRef):
        stat = parsed.path.stat() if parsed.path.is_file() else None
        if stat is None:
            raise InputError(f"{parsed.path}: Zarr Zip file not found")
        pixels, positions = _opened_zarr(parsed.path, stat.st_size, stat.st_mtime_ns, os.getpid())
        position = positions.get(f"{parsed.sample}_{parsed.time}")
        if position is None:
            raise InputError(f"{parsed.path}: sample {parsed.sample}_{parsed.time} not found")
        chip = np.asarray(pixels[position[0], position[1]])
        return chip if bands is None else chip[bands]

    import rasterio

    if not parsed.is_file():
        raise InputError(f"{parsed}: image file not found")
    with rasterio.open(parsed) as source:
        indexes = None if bands is None else [b + 1 for b in bands]
        return np.asarray(source.read(indexes))
