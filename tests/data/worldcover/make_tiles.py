"""Write small WorldCover test tiles in the official file name and GeoTIFF layout.

Run from the repository root: `python tests/data/worldcover/make_tiles.py`.
The output is deterministic (seeded), so rerunning it rewrites identical files.

Each tile covers its official 3 x 3 degree cell of the grid, named after its
south-west corner, in EPSG:4326 with value 0 as nodata, deflate compression,
internal tiling and the legend colour map, like the product. The one
difference is the pixel size: 0.01 degree (300 x 300 px per tile) instead of
1/12000 degree (36000 x 36000 px), which keeps all tiles together at a few
tens of kilobytes. Internal tiles are 256 px, not 1024, because a tile is only
300 px wide.

Layout (2021 v200 unless noted):

- Four tiles meet at latitude 0, longitude 0, each one class: N00W003 tree
  cover (10), N00E000 built-up (50), S03W003 permanent water (80), S03E000
  cropland (40). A footprint around (0, 0) spans all four, one around
  (1.5, 0) spans two.
- N00E000 also has a seeded random patch of classes 10..60 and 0 in
  longitude 1..2, latitude 1..2, for comparisons with exactextract.
- N00E177 (shrubland, 20) and N00W180 (bare, 60) meet at the antimeridian.
- N45E006 of grassland (30), at a latitude with winter snow, for the
  seasonal snow rule.
- A 2020 v100 tile N00E000 of grassland (30) for the version option.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

FOLDER = Path(__file__).resolve().parent
PIXEL_DEGREES = 0.01
SIZE = 300
SEED = 20260
RANDOM_PATCH = (1.0, 1.0, 2.0, 2.0)
"""West, south, east, north of the random patch in N00E000."""

COLOURS = {
    10: (0, 100, 0),
    20: (255, 187, 34),
    30: (255, 255, 76),
    40: (240, 150, 255),
    50: (250, 0, 0),
    60: (180, 180, 180),
    70: (240, 240, 240),
    80: (0, 100, 200),
    90: (0, 150, 160),
    95: (0, 207, 117),
    100: (250, 230, 160),
}

TILES = {
    ("2021", "N00W003"): 10,
    ("2021", "N00E000"): 50,
    ("2021", "S03W003"): 80,
    ("2021", "S03E000"): 40,
    ("2021", "N00E177"): 20,
    ("2021", "N00W180"): 60,
    ("2021", "N45E006"): 30,
    ("2020", "N00E000"): 30,
}


def south_west(tile: str) -> tuple[int, int]:
    """Return (latitude, longitude) of a tile name's south-west corner."""
    latitude = int(tile[1:3]) * (1 if tile[0] == "N" else -1)
    longitude = int(tile[4:7]) * (1 if tile[3] == "E" else -1)
    return latitude, longitude


def tile_pixels(year: str, tile: str, value: int, rng: np.random.Generator) -> np.ndarray:
    """Return the class values of one tile."""
    pixels = np.full((SIZE, SIZE), value, dtype=np.uint8)
    if (year, tile) == ("2021", "N00E000"):
        west, south, east, north = RANDOM_PATCH
        rows = slice(round((3 - north) / PIXEL_DEGREES), round((3 - south) / PIXEL_DEGREES))
        columns = slice(round(west / PIXEL_DEGREES), round(east / PIXEL_DEGREES))
        shape = (rows.stop - rows.start, columns.stop - columns.start)
        choices = np.array([0, 10, 20, 30, 40, 50, 60], dtype=np.uint8)
        pixels[rows, columns] = rng.choice(choices, size=shape)
    return pixels


def write_tile(year: str, tile: str, value: int, rng: np.random.Generator) -> Path:
    """Write one tile and return its path."""
    version = {"2021": "v200", "2020": "v100"}[year]
    latitude, longitude = south_west(tile)
    path = FOLDER / f"ESA_WorldCover_10m_{year}_{version}_{tile}_Map.tif"
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "width": SIZE,
        "height": SIZE,
        "crs": "EPSG:4326",
        "transform": from_origin(longitude, latitude + 3, PIXEL_DEGREES, PIXEL_DEGREES),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(tile_pixels(year, tile, value, rng), 1)
        dataset.write_colormap(1, COLOURS)
        dataset.update_tags(
            product_tile=tile,
            product_grid="3x3 degree tiling grid",
            product_crs="EPSG:4326",
            note="eoaudit test tile at 0.01 degree, not the 10 m product",
        )
    return path


def main() -> None:
    """Write every test tile."""
    rng = np.random.default_rng(SEED)
    for (year, tile), value in TILES.items():
        print(write_tile(year, tile, value, rng))


if __name__ == "__main__":
    main()
