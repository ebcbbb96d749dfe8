"""ESA WorldCover land-cover classes under footprints, read from the official tiles.

WorldCover is a global 10 m land-cover map in 3 x 3 degree GeoTIFF tiles
(EPSG:4326, pixel 1/12000 degree). A tile is named after its south-west
corner: `ESA_WorldCover_10m_2021_v200_N00E006_Map.tif` covers latitude 0..3 N
and longitude 6..9 E. Pixel values are the class values 10 (tree cover) to
100 (moss and lichen), and 0 where there is no data, which in practice is
mostly open sea: the grid has tiles over land and coasts only.

A source is one of:

- a folder of official tiles (searched recursively by file name),
- a GDAL VRT that mosaics them (`gdalbuildvrt worldcover.vrt *_Map.tif`),
- a template of tile paths or URLs with the fields `{tile}`, `{year}` and
  `{version}`, opened through GDAL. :data:`PUBLIC_URL_TEMPLATE` reads the public
  cloud-optimised tiles over HTTP (`/vsicurl/`), one window at a time.

For each footprint, :func:`read_class_areas` returns the area of every raster
value inside the footprint and inside the footprint grown by a tolerance
buffer. A pixel counts with the exact share of its area inside the polygon,
computed from the polygon's edges (see :func:`pixel_coverage`). Areas are in
square degrees of the tile grid, as in exactextract. Across a 2.64 km
footprint the true pixel area changes by less than 0.1 % up to 65 degrees of
latitude (0.24 % at 80 degrees), so the shares are area-weighted in practice.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.io import DatasetReader
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from eoaudit.errors import InputError

logger = logging.getLogger(__name__)

VERSIONS = {"2021": "v200", "2020": "v100"}
"""Product version of each WorldCover year."""

TILE_DEGREES = 3
"""Side of a WorldCover tile in degrees."""

CLASS_VALUES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
"""WorldCover land-cover class values, in legend order."""

CLASS_NAMES = {
    10: "Tree cover",
    20: "Shrubland",
    30: "Grassland",
    40: "Cropland",
    50: "Built-up",
    60: "Bare / sparse vegetation",
    70: "Snow and ice",
    80: "Permanent water bodies",
    90: "Herbaceous wetland",
    95: "Mangroves",
    100: "Moss and lichen",
}
"""Legend names of the WorldCover classes."""

CLASS_COLOURS = {
    10: "#006400",
    20: "#FFBB22",
    30: "#FFFF4C",
    40: "#F096FF",
    50: "#FA0000",
    60: "#B4B4B4",
    70: "#F0F0F0",
    80: "#0064C8",
    90: "#0096A0",
    95: "#00CF75",
    100: "#FAE6A0",
}
"""Legend colours of the WorldCover classes."""

NO_DATA = 0
"""Raster value for no data, which inside a tile is mostly open sea."""

RASTER_VALUES = (NO_DATA, *CLASS_VALUES)
"""Order of the values in :class:`ClassAreas` arrays."""

WATER = 80
"""Class value of permanent water bodies."""

PUBLIC_URL_TEMPLATE = (
    "https://esa-worldcover.s3.eu-central-1.amazonaws.com/"
    "{version}/{year}/map/ESA_WorldCover_10m_{year}_{version}_{tile}_Map.tif"
)
"""URL template of the public cloud-optimised tiles on AWS (s3://esa-worldcover)."""

SeaRule = Literal["open-water", "no-data"]
Status = Literal["ok", "no-data"]

MAX_WINDOW_PIXELS = 4096 * 4096
"""Largest window read at full resolution: 16.8 M pixels, about 41 x 41 km at the equator."""

DEGREES_PER_METRE = 1 / 111_320
"""Degrees of latitude per metre, near enough for buffers of a few hundred metres."""


def tile_id(lat: float, lon: float) -> str:
    """Return the name of the tile that contains a point, e.g. `N00E006`.

    The name is the tile's south-west corner on the 3-degree grid: `N`/`S` and
    two digits of latitude, `E`/`W` and three digits of longitude.
    """
    south = math.floor(lat / TILE_DEGREES) * TILE_DEGREES
    west = math.floor(lon / TILE_DEGREES) * TILE_DEGREES
    return f"{'N' if south >= 0 else 'S'}{abs(south):02d}{'E' if west >= 0 else 'W'}{abs(west):03d}"


def tile_bounds(tile: str) -> tuple[float, float, float, float]:
    """Return `(west, south, east, north)` of a tile name such as `S03W003`.

    Raises:
        ValueError: When the name is not a tile name of the 3-degree grid.
    """
    if len(tile) != 7 or tile[0] not in "NS" or tile[3] not in "EW":
        raise ValueError(f"invalid WorldCover tile name {tile!r}; expected e.g. N00E006")
    south = int(tile[1:3]) * (1 if tile[0] == "N" else -1)
    west = int(tile[4:7]) * (1 if tile[3] == "E" else -1)
    return (west, south, west + TILE_DEGREES, south + TILE_DEGREES)


def tile_ids_for_bounds(west: float, south: float, east: float, north: float) -> list[str]:
    """Return the names of the tiles that a box in degrees overlaps (east of west, no wrap)."""
    epsilon = 1e-12
    first_row = math.floor(south / TILE_DEGREES)
    last_row = math.floor((north - epsilon) / TILE_DEGREES)
    first_column = math.floor(west / TILE_DEGREES)
    last_column = math.floor((east - epsilon) / TILE_DEGREES)
    names = []
    for row in range(first_row, max(first_row, last_row) + 1):
        for column in range(first_column, max(first_column, last_column) + 1):
            lat = row * TILE_DEGREES
            lon = column * TILE_DEGREES
            if -90 <= lat < 90 and -180 <= lon < 180:
                names.append(tile_id(lat, lon))
    return names


def tile_filename(tile: str, year: str = "2021") -> str:
    """Return the official file name of a map tile.

    Example: `tile_filename("N00E006")` is `ESA_WorldCover_10m_2021_v200_N00E006_Map.tif`.
    """
    return f"ESA_WorldCover_10m_{year}_{_version_of(year)}_{tile}_Map.tif"


def _version_of(year: str) -> str:
    if year not in VERSIONS:
        raise InputError(
            f"invalid WorldCover version {year!r}; use 2021 (product v200) or 2020 (v100)"
        )
    return VERSIONS[year]


@dataclass(frozen=True)
class ClassAreas:
    """Area of each raster value under one footprint, in square degrees.

    Attributes:
        footprint: Area per value of :data:`RASTER_VALUES` inside the footprint,
            over the parts that lie on a tile.
        buffered: The same inside the footprint grown by the tolerance buffer.
        footprint_area: Area of the whole footprint, with or without tiles.
        buffered_area: Area of the whole buffered footprint.
    """

    footprint: np.ndarray
    buffered: np.ndarray
    footprint_area: float
    buffered_area: float

    def to_array(self) -> np.ndarray:
        """Pack into one float64 array (the cache format)."""
        return np.concatenate(
            [self.footprint, self.buffered, [self.footprint_area, self.buffered_area]]
        ).astype(np.float64)

    @classmethod
    def from_array(cls, packed: np.ndarray) -> ClassAreas:
        """Unpack an array written by :meth:`to_array`."""
        size = len(RASTER_VALUES)
        return cls(
            packed[:size].copy(),
            packed[size : 2 * size].copy(),
            float(packed[2 * size]),
            float(packed[2 * size + 1]),
        )


def class_fractions(
    areas: np.ndarray, total_area: float, sea_rule: SeaRule, min_coverage: float
) -> tuple[np.ndarray, Status]:
    """Turn areas per raster value into fractions per land-cover class.

    Args:
        areas: Area per value of :data:`RASTER_VALUES`.
        total_area: Area of the whole polygon, tiles or not.
        sea_rule: `open-water` counts value 0 inside a tile as class 80;
            `no-data` leaves it out of the fractions.
        min_coverage: Share of the polygon that must have WorldCover data for
            the fractions to count; below it the status is `no-data`.

    Returns:
        Fractions per :data:`CLASS_VALUES` (NaN when the status is `no-data`),
        and the status.
    """
    by_class = np.asarray(areas[1:], dtype=np.float64).copy()
    if sea_rule == "open-water":
        by_class[CLASS_VALUES.index(WATER)] += areas[0]
    known = float(by_class.sum())
    if total_area <= 0 or known <= 0 or known / total_area < min_coverage:
        return np.full(len(CLASS_VALUES), np.nan), "no-data"
    return by_class / known, "ok"


class WorldCoverSource:
    """Opens WorldCover tiles from a folder, a VRT or a path or URL template.

    Open datasets are kept for the life of the object and are not pickled: a
    copy sent to another process opens its own.

    Args:
        source: Folder of tiles, `.vrt` file, or template with `{tile}`.
        version: `2021` (product v200) or `2020` (v100).

    Raises:
        InputError: When the folder or VRT does not exist, or the folder has
            no tile of the version.
    """

    def __init__(self, source: str, version: str = "2021") -> None:
        self.source = str(source)
        self.year = str(version)
        self.version = _version_of(self.year)
        self._open: dict[str, DatasetReader | None] = {}
        self.kind: Literal["folder", "vrt", "template"]
        self._tiles: dict[str, Path] = {}

        if "{tile}" in self.source:
            self.kind = "template"
        elif self.source.lower().endswith(".vrt"):
            self.kind = "vrt"
            if not Path(self.source).is_file():
                raise InputError(f"--worldcover {self.source}: VRT file not found")
        else:
            self.kind = "folder"
            self._tiles = self._index_folder(Path(self.source))

    def _index_folder(self, folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            raise InputError(
                f"--worldcover {folder}: not a folder, a .vrt file or a template with "
                "{tile}; give the folder that contains the ESA_WorldCover_10m_*_Map.tif tiles"
            )
        prefix = f"ESA_WorldCover_10m_{self.year}_{self.version}_"
        tiles = {
            path.name[len(prefix) : -len("_Map.tif")]: path
            for path in sorted(folder.rglob(f"{prefix}*_Map.tif"))
        }
        if not tiles:
            other = sorted(p.name for p in folder.rglob("ESA_WorldCover_10m_*_Map.tif"))
            hint = (
                f"; it has other tiles ({other[0]} ...), pass the matching --worldcover-version"
                if other
                else ""
            )
            raise InputError(
                f"--worldcover {folder}: no tile named {prefix}<TILE>_Map.tif found{hint}"
            )
        return tiles

    def fingerprint(self) -> str:
        """Return a string that changes when the source or its files change.

        It covers the kind, path or template, version, and for local files
        their names, sizes and modification times.
        """
        parts = [self.kind, self.source, self.year, self.version]
        if self.kind == "folder":
            for name, path in sorted(self._tiles.items()):
                stat = path.stat()
                parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
        elif self.kind == "vrt":
            stat = Path(self.source).stat()
            parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
        # NOTE: a template names remote or local files that are not listed
        # here, so replacing a tile behind a template is not noticed.
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def datasets(self, west: float, south: float, east: float, north: float) -> list[DatasetReader]:
        """Return the open datasets that overlap a box in degrees (west < east)."""
        if self.kind == "vrt":
            dataset = self._dataset("vrt", self.source)
            if dataset is None:
                return []
            left, bottom, right, top = dataset.bounds
            overlaps = west < right and east > left and south < top and north > bottom
            return [dataset] if overlaps else []

        found = []
        for tile in tile_ids_for_bounds(west, south, east, north):
            if self.kind == "folder":
                path = self._tiles.get(tile)
                dataset = self._dataset(tile, str(path)) if path else None
            else:
                location = self.source.format(tile=tile, year=self.year, version=self.version)
                dataset = self._dataset(tile, location)
            if dataset is not None:
                found.append(dataset)
        return found

    def _dataset(self, key: str, location: str) -> DatasetReader | None:
        if key in self._open:
            return self._open[key]
        dataset: DatasetReader | None
        try:
            dataset = rasterio.open(location)
        except RasterioIOError as error:
            if self.kind != "template":
                raise InputError(f"--worldcover: cannot open {location} ({error})") from None
            # A template names every tile of the grid, but the grid has tiles
            # over land and coasts only, so a missing one is expected.
            logger.info("WorldCover tile %s not available at %s: %s", key, location, error)
            dataset = None
        if dataset is not None:
            _check_tile_grid(dataset, location)
        self._open[key] = dataset
        return dataset

    def close(self) -> None:
        """Close the open datasets."""
        for dataset in self._open.values():
            if dataset is not None:
                dataset.close()
        self._open.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


def _check_tile_grid(dataset: DatasetReader, location: str) -> None:
    if dataset.crs is None or dataset.crs.to_epsg() != 4326:
        raise InputError(
            f"--worldcover: {location} is in {dataset.crs}, not EPSG:4326; "
            "use the official WorldCover tiles"
        )
    if dataset.transform.b != 0 or dataset.transform.d != 0:
        raise InputError(f"--worldcover: {location} has a rotated grid; use the official tiles")


def footprint_polygon(geometry: BaseGeometry, point_buffer_m: float) -> BaseGeometry:
    """Return the polygon to read for a sample geometry.

    A point becomes a square of side `2 * point_buffer_m` centred on it. A
    polygon that spans more than 180 degrees of longitude is taken to cross
    the antimeridian, and its negative longitudes are moved by +360 so that
    it is one piece (longitudes then reach past 180).
    """
    if geometry.geom_type == "Point":
        return _grow(geometry, point_buffer_m, square=True)
    if not geometry.is_valid:
        # A self-intersecting ring would give signed, wrong pixel coverage.
        geometry = shapely.make_valid(geometry, method="structure")
    west, _, east, _ = geometry.bounds
    if east - west > 180:
        return shapely.transform(geometry, _wrap_negative_longitudes)
    return geometry


def _wrap_negative_longitudes(coordinates: np.ndarray) -> np.ndarray:
    wrapped = coordinates.copy()
    wrapped[:, 0] = np.where(wrapped[:, 0] < 0, wrapped[:, 0] + 360, wrapped[:, 0])
    return wrapped


def _grow(geometry: BaseGeometry, metres: float, square: bool = False) -> BaseGeometry:
    """Grow a geometry by a distance in metres, in a local equal-distance frame."""
    if metres <= 0:
        return geometry
    centre = geometry.centroid
    stretch = max(math.cos(math.radians(centre.y)), 1e-6)
    local = shapely.affinity.scale(geometry, xfact=stretch, yfact=1.0, origin=centre)
    grown = local.buffer(
        metres * DEGREES_PER_METRE,
        cap_style="square" if square else "round",
        join_style="mitre" if square else "round",
        quad_segs=4,
    )
    return shapely.affinity.scale(grown, xfact=1 / stretch, yfact=1.0, origin=centre)


def read_class_areas(
    source: WorldCoverSource,
    geometry: BaseGeometry,
    buffer_m: float,
    point_buffer_m: float,
) -> ClassAreas:
    """Read the area of every raster value under a footprint and its buffered copy.

    Args:
        source: Where the tiles are.
        geometry: Footprint polygon or point, EPSG:4326.
        buffer_m: Tolerance buffer around the footprint, in metres.
        point_buffer_m: Half side of the square read around a point, in metres.
    """
    footprint = footprint_polygon(geometry, point_buffer_m)
    buffered = _grow(footprint, buffer_m)
    footprint_sums = np.zeros(len(RASTER_VALUES))
    buffered_sums = np.zeros(len(RASTER_VALUES))

    for part_footprint, part_buffered in zip(
        _parts_by_shift(footprint), _parts_by_shift(buffered), strict=True
    ):
        if part_buffered is None:
            continue
        west, south, east, north = part_buffered.bounds
        for dataset in source.datasets(west, south, east, north):
            if part_footprint is None:
                buffered_sums += window_value_areas(dataset, [part_buffered])[0]
            elif buffered is footprint:
                sums = window_value_areas(dataset, [part_footprint])[0]
                footprint_sums += sums
                buffered_sums += sums
            else:
                sums_by_polygon = window_value_areas(dataset, [part_footprint, part_buffered])
                footprint_sums += sums_by_polygon[0]
                buffered_sums += sums_by_polygon[1]

    return ClassAreas(footprint_sums, buffered_sums, footprint.area, buffered.area)


def _parts_by_shift(polygon: BaseGeometry) -> list[BaseGeometry | None]:
    """Return the polygon's part in each longitude frame (0, -360, +360), None where empty."""
    parts: list[BaseGeometry | None] = []
    for shift in (0, -360, 360):
        moved = shapely.affinity.translate(polygon, xoff=shift) if shift else polygon
        if moved.bounds[2] <= -180 or moved.bounds[0] >= 180:
            parts.append(None)
            continue
        part = (
            moved
            if -180 <= moved.bounds[0] and moved.bounds[2] <= 180
            else moved.intersection(box(-180, -90, 180, 90))
        )
        parts.append(part if not part.is_empty and part.area > 0 else None)
    return parts


def window_value_areas(
    dataset: DatasetReader, polygons: list[BaseGeometry], max_pixels: int | None = None
) -> list[np.ndarray]:
    """Read one window covering the polygons and return each polygon's area per raster value.

    The window spans the bounds of the last polygon (the largest), clipped to
    the dataset; only that window is read.

    Args:
        dataset: An open WorldCover tile or VRT.
        polygons: Polygons in the dataset's coordinates, the largest last.
        max_pixels: Largest window read at full resolution;
            :data:`MAX_WINDOW_PIXELS` when None. A larger window is read
            decimated by the smallest whole factor that fits (nearest
            neighbour, from the tile's overviews where GDAL has them).
    """
    window = _window_for(dataset, polygons[-1].bounds)
    if window is None:
        return [np.zeros(len(RASTER_VALUES)) for _ in polygons]
    limit = MAX_WINDOW_PIXELS if max_pixels is None else max_pixels
    factor = max(1, math.ceil(math.sqrt(window.width * window.height / limit)))
    # NOTE: a decimated read samples every factor-th pixel, so its shares are
    # estimates, no longer exact; only footprints far larger than a chip get it.
    shape = (max(1, int(window.height) // factor), max(1, int(window.width) // factor))
    values = dataset.read(1, window=window, out_shape=shape, resampling=Resampling.nearest)
    transform = (
        dataset.transform
        @ Affine.translation(window.col_off, window.row_off)
        @ Affine.scale(window.width / shape[1], window.height / shape[0])
    )
    pixel_area = abs(transform.a * transform.e)

    results = []
    for polygon in polygons:
        weights = pixel_coverage(polygon, transform, shape).ravel()
        # Values outside the legend are counted by bincount but not picked.
        sums = np.bincount(values.ravel(), weights=weights, minlength=256)
        results.append(sums[list(RASTER_VALUES)] * pixel_area)
    return results


def _window_for(dataset: DatasetReader, bounds: tuple[float, float, float, float]) -> Window | None:
    west, south, east, north = bounds
    inverse = ~dataset.transform
    column_start, row_start = inverse @ (west, north)
    column_end, row_end = inverse @ (east, south)
    column_start = max(0, math.floor(column_start))
    row_start = max(0, math.floor(row_start))
    column_end = min(dataset.width, math.ceil(column_end))
    row_end = min(dataset.height, math.ceil(row_end))
    if column_end <= column_start or row_end <= row_start:
        return None
    return Window(column_start, row_start, column_end - column_start, row_end - row_start)


def pixel_coverage(polygon: BaseGeometry, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Return the share of each pixel's area that lies inside a polygon (0..1), exactly.

    The method follows from Green's theorem. Take u as the column and v as the
    row coordinate, in pixel units. The area of a polygon P inside the pixel
    [c, c+1] x [r, r+1] is the sum, over the edges of P clipped to the row band
    [r, r+1], of the integral of clamp(u - c, 0, 1) dv along the edge. Pixels
    left of an edge piece get its full signed height dv and pixels right of it
    get nothing. Only the pixels that the piece crosses need the integral, so
    the work grows with the perimeter in pixels, not with the area.

    Args:
        polygon: Polygon or MultiPolygon in the coordinates of `transform`.
        transform: Affine transform of the pixel grid (not rotated).
        shape: `(rows, columns)` of the grid.
    """
    rows, columns = shape
    oriented = shapely.orient_polygons(polygon)
    rings = shapely.get_rings(shapely.get_parts(oriented))
    points, ring_of_point = shapely.get_coordinates(rings, return_index=True)
    u = (points[:, 0] - transform.c) / transform.a
    v = (points[:, 1] - transform.f) / transform.e
    same_ring = ring_of_point[:-1] == ring_of_point[1:]
    u0, v0, u1, v1 = u[:-1][same_ring], v[:-1][same_ring], u[1:][same_ring], v[1:][same_ring]
    slanted = v0 != v1
    u0, v0, u1, v1 = u0[slanted], v0[slanted], u1[slanted], v1[slanted]
    if len(u0) == 0:
        return np.zeros(shape)

    # Split every edge at the row lines it crosses, keeping rows inside the grid.
    first_row = np.clip(np.floor(np.minimum(v0, v1)), 0, rows).astype(np.intp)
    end_row = np.clip(np.ceil(np.maximum(v0, v1)), 0, rows).astype(np.intp)
    counts = np.maximum(end_row - first_row, 0)
    edge = np.repeat(np.arange(len(u0)), counts)
    row = np.repeat(first_row, counts) + _ranges(counts)
    slope = (u1 - u0) / (v1 - v0)
    top = np.maximum(np.minimum(v0, v1)[edge], row)
    bottom = np.minimum(np.maximum(v0, v1)[edge], row + 1)
    keep = bottom > top
    edge, row, top, bottom = edge[keep], row[keep], top[keep], bottom[keep]
    u_top = u0[edge] + slope[edge] * (top - v0[edge])
    u_bottom = u0[edge] + slope[edge] * (bottom - v0[edge])
    dv = np.where(v1[edge] > v0[edge], bottom - top, top - bottom)
    u_low = np.minimum(u_top, u_bottom)
    u_high = np.maximum(u_top, u_bottom)

    # Cells wholly left of a piece get its full signed height: a running sum
    # along the row of +dv at column 0 and -dv at the first crossed column.
    first_column = np.clip(np.floor(u_low), 0, columns).astype(np.intp)
    stride = columns + 1
    size = rows * stride
    coverage: np.ndarray = np.bincount(row * stride, weights=dv, minlength=size)
    coverage -= np.bincount(row * stride + first_column, weights=dv, minlength=size)
    coverage = coverage.reshape(rows, stride)
    np.cumsum(coverage, axis=1, out=coverage)

    # Cells that a piece crosses get the exact integral.
    end_column = np.clip(np.ceil(u_high), 0, columns).astype(np.intp)
    spans = np.maximum(end_column - first_column, 0)
    piece = np.repeat(np.arange(len(row)), spans)
    column = np.repeat(first_column, spans) + _ranges(spans)
    low = u_low[piece] - column
    high = u_high[piece] - column
    width = high - low
    flat = width <= 1e-12
    mean = np.where(
        flat,
        np.clip(low, 0, 1),
        (_clamp_integral(high) - _clamp_integral(low)) / np.where(flat, 1, width),
    )
    coverage += np.bincount(
        row[piece] * stride + column, weights=mean * dv[piece], minlength=size
    ).reshape(rows, stride)

    # Exterior rings run counter-clockwise in map coordinates; with rows
    # counted downwards the integral then comes out negative.
    coverage = coverage[:, :columns] * (-1.0 if transform.e < 0 else 1.0)
    return np.clip(coverage, 0.0, 1.0, out=coverage)


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Return 0..n-1 for every n in `counts`, concatenated."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.intp)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.intp) - starts


def _clamp_integral(x: np.ndarray) -> np.ndarray:
    """Return the integral from 0 to x of clamp(t, 0, 1) dt (0 for x <= 0)."""
    inner = np.clip(x, 0, 1)
    return inner * inner / 2 + np.maximum(x - 1, 0)


class AreaCache:
    """Class areas per footprint kept in an SQLite file between runs.

    Entries are keyed by the footprint's WKB, the buffers and the source
    fingerprint (:meth:`WorldCoverSource.fingerprint`), so a changed source
    or buffer never returns old areas. Old entries stay in the file.

    Args:
        path: The SQLite file; its folder is created when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS areas (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=60)) as connection, connection:
            yield connection

    @staticmethod
    def key(geometry: BaseGeometry, settings: str) -> str:
        """Return the cache key of a footprint under the given settings string."""
        digest = hashlib.sha256(shapely.to_wkb(geometry, hex=False))
        digest.update(settings.encode())
        return digest.hexdigest()

    def get_many(self, keys: Iterable[str]) -> dict[str, ClassAreas]:
        """Return the cached areas of the keys found."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, ClassAreas] = {}
        with self._connect() as connection:
            for start in range(0, len(wanted), 500):
                batch = wanted[start : start + 500]
                marks = ",".join("?" * len(batch))
                rows = connection.execute(
                    f"SELECT key, value FROM areas WHERE key IN ({marks})", batch
                )
                for key, value in rows:
                    found[key] = ClassAreas.from_array(np.frombuffer(value, dtype=np.float64))
        return found

    def put_many(self, entries: dict[str, ClassAreas]) -> None:
        """Store areas by key, replacing existing entries."""
        if not entries:
            return
        with self._connect() as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO areas (key, value) VALUES (?, ?)",
                [(key, areas.to_array().tobytes()) for key, areas in entries.items()],
            )


__all__ = [
    "CLASS_NAMES",
    "CLASS_VALUES",
    "PUBLIC_URL_TEMPLATE",
    "RASTER_VALUES",
    "AreaCache",
    "ClassAreas",
    "WorldCoverSource",
    "class_fractions",
    "footprint_polygon",
    "pixel_coverage",
    "read_class_areas",
    "tile_bounds",
    "tile_filename",
    "tile_id",
    "tile_ids_for_bounds",
    "window_value_areas",
]
