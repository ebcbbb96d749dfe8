"""Benchmark: WorldCover class fractions for SSL4EO-size footprints, eoaudit against exactextract.

Reads the real 2021 v200 tile N00E006 (São Tomé) from ../shared/data and
places random footprints of 264 x 264 px at 10 m (2640 m squares in UTM zone
32N, reprojected to EPSG:4326) over the island and its coastal water. Both
tools compute the area-weighted share of each raster value under the same
polygons from the same tile, in one process on one core. Each repetition
opens the tile anew, so every run starts with a cold block cache.

Run from the repository root:

    .venv/bin/python benchmarks/hallucination.py --footprints 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from exactextract import exact_extract
from shapely.geometry import Polygon, box

from eoaudit.worldcover import RASTER_VALUES, WorldCoverSource, read_class_areas

REPOSITORY = Path(__file__).resolve().parents[1]
TILE_FOLDER = REPOSITORY.parent / "shared" / "data" / "esa-worldcover"
TILE = TILE_FOLDER / "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
CHIP_METRES = 2640


def footprints(count: int, seed: int) -> list[Polygon]:
    """Return `count` SSL4EO-size footprints with random south-west corners near São Tomé."""
    rng = np.random.default_rng(seed)
    to_utm = pyproj.Transformer.from_crs(4326, 32632, always_xy=True)
    to_wgs84 = pyproj.Transformer.from_crs(32632, 4326, always_xy=True)
    polygons = []
    for lon, lat in zip(
        rng.uniform(6.40, 6.78, count), rng.uniform(0.01, 0.45, count), strict=True
    ):
        x, y = to_utm.transform(lon, lat)
        square = shapely.segmentize(box(x, y, x + CHIP_METRES, y + CHIP_METRES), 660)
        polygons.append(
            shapely.transform(
                square, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1]))
            )
        )
    return polygons


def run_eoaudit(polygons: list[Polygon], buffer_m: float) -> tuple[float, list[np.ndarray]]:
    """Return the seconds taken and the areas per raster value of each polygon."""
    source = WorldCoverSource(str(TILE_FOLDER))
    start = time.perf_counter()
    areas = [read_class_areas(source, polygon, buffer_m, 0).footprint for polygon in polygons]
    elapsed = time.perf_counter() - start
    source.close()
    return elapsed, areas


def run_exactextract(polygons: list[Polygon]) -> tuple[float, list[dict[int, float]]]:
    """Return the seconds taken and the share of each raster value of each polygon.

    exactextract leaves out nodata pixels (value 0), so its shares are over the
    pixels with a class.
    """
    frame = gpd.GeoDataFrame(geometry=polygons, crs="EPSG:4326")
    start = time.perf_counter()
    table = exact_extract(str(TILE), frame, ["unique", "frac"], output="pandas")
    elapsed = time.perf_counter() - start
    shares = [
        {int(v): float(f) for v, f in zip(row.unique, row.frac, strict=True)}
        for row in table.itertuples()
    ]
    return elapsed, shares


def max_difference(ours: list[np.ndarray], theirs: list[dict[int, float]]) -> float:
    """Return the largest difference in share (0..1) over the classes, footprints with a class."""
    largest = 0.0
    for areas, shares in zip(ours, theirs, strict=True):
        classes = areas[1:]
        if classes.sum() == 0:
            continue
        for value, area in zip(RASTER_VALUES[1:], classes, strict=True):
            largest = max(largest, abs(area / classes.sum() - shares.get(value, 0.0)))
    return largest


def main() -> None:
    """Time both tools and print footprints per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--footprints", type=int, default=1000, help="footprints per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool; the best is kept")
    parser.add_argument("--seed", type=int, default=0, help="seed of the footprint positions")
    arguments = parser.parse_args()

    polygons = footprints(arguments.footprints, arguments.seed)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"tile: {TILE.name}; footprints: {len(polygons)} of 2640 m (264 px at 10 m)")

    timings: dict[str, list[float]] = {"eoaudit": [], "eoaudit+buffer": [], "exactextract": []}
    ours: list[np.ndarray] = []
    theirs: list[dict[int, float]] = []
    for _ in range(arguments.repeats):
        elapsed, ours = run_eoaudit(polygons, 0)
        timings["eoaudit"].append(elapsed)
        elapsed, _ = run_eoaudit(polygons, 100)
        timings["eoaudit+buffer"].append(elapsed)
        elapsed, theirs = run_exactextract(polygons)
        timings["exactextract"].append(elapsed)

    rates = {name: len(polygons) / min(values) for name, values in timings.items()}
    print(f"eoaudit (footprint only):          {rates['eoaudit']:8.1f} footprints/s")
    print(f"eoaudit (footprint + 100 m buffer): {rates['eoaudit+buffer']:8.1f} footprints/s")
    print(f"exactextract 'unique','frac':       {rates['exactextract']:8.1f} footprints/s")
    print(f"ratio eoaudit / exactextract:       {rates['eoaudit'] / rates['exactextract']:8.2f}")
    print(f"largest share difference:           {100 * max_difference(ours, theirs):8.5f} pp")


if __name__ == "__main__":
    main()
