"""Reference layers shipped with the package, and point lookups against them.

The files in `eoaudit/reference/` are read offline (sources and licences in
`reference/ATTRIBUTION.md`, built by `reference/make_reference.py`):

- `countries.parquet`: Natural Earth 1:110m admin-0 countries, keyed by `adm0_a3`
  (some `iso_a3` are "-99", e.g. France and Norway in this version).
- `continents.parquet`: the Natural Earth 1:110m land split into seven continents by
  the `region` of its geography-region polygons.
- `koppen_0.1deg.tif`: Köppen-Geiger main climate groups (1..5 = A..E, 0 = ocean),
  decimated to 0.1 degree.
- `koppen_land_area.csv`: land area per climate group at the full 1 km resolution.

Areas are computed in the equal-area projection EPSG:6933 (EASE-Grid 2.0 global),
never in degrees. Loaded layers are cached per process: treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from itertools import pairwise
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio
import rasterio.features
import shapely
from affine import Affine

EQUAL_AREA_CRS = "EPSG:6933"
CLIMATE_GROUPS = ("A", "B", "C", "D", "E")
CLIMATE_NAMES = {
    "A": "tropical",
    "B": "arid",
    "C": "temperate",
    "D": "continental",
    "E": "polar",
}
_M2_PER_KM2 = 1e6


def reference_path(name: str) -> Path:
    """Return the path of a shipped reference file, e.g. `countries.parquet`."""
    return Path(str(resources.files("eoaudit").joinpath("reference", name)))


def _with_land_area(layer: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    layer = layer.reset_index(drop=True)
    layer["land_area_km2"] = layer.geometry.to_crs(EQUAL_AREA_CRS).area / _M2_PER_KM2
    return layer


@lru_cache(maxsize=1)
def countries() -> gpd.GeoDataFrame:
    """Return the admin-0 countries with `adm0_a3`, `name`, `land_area_km2` and more."""
    return _with_land_area(gpd.read_parquet(reference_path("countries.parquet")))


@lru_cache(maxsize=1)
def continents() -> gpd.GeoDataFrame:
    """Return the continents' land polygons with `continent` and `land_area_km2`."""
    return _with_land_area(gpd.read_parquet(reference_path("continents.parquet")))


@dataclass(frozen=True)
class ClimateRaster:
    """The decimated Köppen-Geiger raster.

    Attributes:
        values: uint8 array, 1..5 = A..E, 0 = ocean; row 0 is the northern edge.
        resolution: Pixel size in degrees.
    """

    values: np.ndarray
    resolution: float


@lru_cache(maxsize=1)
def climate_raster() -> ClimateRaster:
    """Load the 0.1 degree climate raster (6.5 MB in memory)."""
    with rasterio.open(reference_path("koppen_0.1deg.tif")) as dataset:
        values = dataset.read(1)
        resolution = float(dataset.transform.a)
        if dataset.transform.c != -180.0 or dataset.transform.f != 90.0:
            raise ValueError(f"{dataset.name}: expected a global raster with origin (-180, 90)")
    return ClimateRaster(values, resolution)


@lru_cache(maxsize=1)
def climate_land_area() -> pd.DataFrame:
    """Return land area per climate group: columns `climate`, `land_area_km2`."""
    return pd.read_csv(reference_path("koppen_land_area.csv"))


def representative_points(geometry: gpd.GeoSeries) -> tuple[np.ndarray, np.ndarray]:
    """Return longitude and latitude of each sample's representative point.

    The representative point is the centroid of a footprint (computed in degrees,
    which is accurate enough for footprints of a few km) or the point itself.
    A footprint whose longitudes span more than 180 degrees is taken to cross the
    antimeridian: its western longitudes are shifted by 360 degrees before the
    centroid is computed, and the result is wrapped back to [-180, 180].
    Missing or empty geometries give NaN.
    """
    values = np.asarray(geometry.values, dtype=object)
    missing = shapely.is_missing(values) | shapely.is_empty(values)
    present = values.copy()
    present[missing] = None
    bounds = shapely.bounds(present)
    crossing = (bounds[:, 2] - bounds[:, 0]) > 180.0
    if crossing.any():
        present = present.copy()
        present[crossing] = shapely.transform(
            present[crossing], lambda xy: np.column_stack([xy[:, 0] % 360.0, xy[:, 1]])
        )
    centroids = shapely.centroid(present)
    lon = shapely.get_x(centroids)
    lat = shapely.get_y(centroids)
    lon = np.where(lon > 180.0, lon - 360.0, lon)
    return lon.astype(float), lat.astype(float)


def join_points(layer: gpd.GeoDataFrame, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Return, for each point, the position of the layer polygon that contains it.

    A point on a shared border (or on the antimeridian edge) touches two polygons
    and gets the first in layer order. Points in no polygon, and NaN points, get -1.
    """
    result = np.full(len(lon), -1, dtype=np.int64)
    valid = np.isfinite(lon) & np.isfinite(lat)
    if not valid.any():
        return result
    points = shapely.points(lon[valid], lat[valid])
    # Single polygons give the tree tighter boxes than whole multipolygons.
    parts, polygon_of_part = shapely.get_parts(layer.geometry.values, return_index=True)
    tree = shapely.STRtree(parts)
    point_index, part_index = tree.query(points)
    # Prepared polygons make each point-in-polygon test logarithmic in the vertices.
    shapely.prepare(parts)
    inside = shapely.intersects(parts[part_index], points[point_index])
    point_index = point_index[inside]
    polygon_index = polygon_of_part[part_index[inside]]
    first = np.full(len(points), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, point_index, polygon_index)
    first[first == np.iinfo(np.int64).max] = -1
    result[valid] = first
    return result


def climate_codes(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Return the climate value (0 ocean, 1..5 = A..E) at each point; 0 for NaN points."""
    raster = climate_raster()
    rows_count, cols_count = raster.values.shape
    valid = np.isfinite(lon) & np.isfinite(lat)
    rows = np.floor((90.0 - np.where(valid, lat, 0.0)) / raster.resolution).astype(np.int64)
    cols = np.floor((np.where(valid, lon, 0.0) + 180.0) / raster.resolution).astype(np.int64)
    rows = np.clip(rows, 0, rows_count - 1)
    cols = np.clip(cols, 0, cols_count - 1)
    codes = raster.values[rows, cols]
    return np.where(valid, codes, 0).astype(np.uint8)


@dataclass(frozen=True)
class LandGrid:
    """Square equal-area cells over the world in EPSG:6933, with their land area.

    Attributes:
        cell_m: Cell side in metres.
        columns: Cells per row.
        rows: Rows of cells.
        x_min: Western edge of the grid (metres).
        y_min: Southern edge of the grid (metres).
        land_km2: Land area of each cell, flat, index `row * columns + column`.
    """

    cell_m: float
    columns: int
    rows: int
    x_min: float
    y_min: float
    land_km2: np.ndarray

    @property
    def cell_km2(self) -> float:
        """Area of one cell in km²."""
        return self.cell_m**2 / _M2_PER_KM2

    def cells(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Return the flat cell index of each point, -1 for NaN points."""
        x, y = _to_equal_area(lon, lat)
        valid = np.isfinite(x) & np.isfinite(y)
        column = np.floor((np.where(valid, x, 0.0) - self.x_min) / self.cell_m).astype(np.int64)
        row = np.floor((np.where(valid, y, 0.0) - self.y_min) / self.cell_m).astype(np.int64)
        column = np.clip(column, 0, self.columns - 1)
        row = np.clip(row, 0, self.rows - 1)
        return np.where(valid, row * self.columns + column, -1)


_TRANSFORMER = pyproj.Transformer.from_crs("EPSG:4326", EQUAL_AREA_CRS, always_xy=True)


def _to_equal_area(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _TRANSFORMER.transform(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


@lru_cache(maxsize=4)
def land_grid(cell_km: float, subdivisions: int = 10) -> LandGrid:
    """Build the equal-area grid and the land area of each cell.

    Land area comes from the continents' land polygons, rasterised in EPSG:6933 at
    `cell_km / subdivisions` (a pixel counts as land when its centre is on land), so
    a cell's land area is exact to about one pixel along the coast.
    """
    x_max, _ = _to_equal_area(np.array([180.0]), np.array([0.0]))
    _, y_max = _to_equal_area(np.array([0.0]), np.array([90.0]))
    cell_m = float(cell_km) * 1000.0
    columns = int(np.ceil(2 * x_max[0] / cell_m))
    rows = int(np.ceil(2 * y_max[0] / cell_m))
    x_min, y_min = -columns * cell_m / 2, -rows * cell_m / 2

    pixel_m = cell_m / subdivisions
    shape = (rows * subdivisions, columns * subdivisions)
    transform = Affine(pixel_m, 0.0, x_min, 0.0, -pixel_m, -y_min)
    land = continents().geometry.to_crs(EQUAL_AREA_CRS)
    mask = rasterio.features.rasterize(
        ((geometry, 1) for geometry in land.values),
        out_shape=shape,
        transform=transform,
        dtype=np.uint8,
    )
    # Row 0 of the raster is the northern edge; grid rows count from the south.
    per_cell = mask.reshape(rows, subdivisions, columns, subdivisions).sum(axis=(1, 3))
    land_km2 = per_cell[::-1].astype(float).ravel() * pixel_m**2 / _M2_PER_KM2
    return LandGrid(cell_m, columns, rows, x_min, y_min, land_km2)


@lru_cache(maxsize=4)
def land_area_by_latitude(band_deg: float) -> np.ndarray:
    """Return land area (km²) per latitude band, from -90 upwards, bands `band_deg` wide."""
    land = shapely.union_all(continents().geometry.values)
    edges = np.arange(-90.0, 90.0 + band_deg / 2, band_deg)
    boxes = [shapely.box(-180.0, south, 180.0, north) for south, north in pairwise(edges.tolist())]
    pieces = gpd.GeoSeries(shapely.intersection(land, boxes), crs="EPSG:4326")
    return np.asarray(pieces.to_crs(EQUAL_AREA_CRS).area / _M2_PER_KM2, dtype=float)
