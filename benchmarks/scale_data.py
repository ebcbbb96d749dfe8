"""Generate a large dataset in the Llama3-SSL4EO-S12 layout for the scale benchmark.

Writes, under OUT:

- `captions/ssl4eos12_train_seasonal_data_NNNNNN.csv`: chunk CSVs of 256
  captions (64 locations x 4 acquisition times), columns caption,
  question_1..question_3, file, sample_id (integer), time_id, classes, tags, names;
- `metadata.parquet`: SSL4EO-S12 v1.1-style metadata GeoParquet (sample_id as
  7-digit string, time_id, time, tile_id, geometry, tile_crs, file) with
  2.64 km footprints;
- `worldcover/ESA_WorldCover_10m_2021_v200_<TILE>_Map.tif`: four full-size
  3 x 3 degree tiles (36000 x 36000 px, uint8, tiled, deflate) under the
  footprints, filled with blocky land-cover patterns.

Captions are about 100 words drawn from phrase lists, so their vocabulary and
length resemble Llama3-SSL4EO-S12 captions; they are not real captions.

    python benchmarks/scale_data.py --captions 1000000 --out /tmp/eoaudit-scale
"""

from __future__ import annotations

import argparse
import random
import time
import zlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.windows import Window

SEED = 1
ROWS_PER_CHUNK = 256
TILES = ("N45E006", "N45E009", "N42E006", "N42E009")
AREA = (6.0, 42.0, 12.0, 48.0)  # lon/lat box covered by the four tiles
TILE_PIXELS = 36000
PIXEL_DEG = 1 / 12000
FOOTPRINT_DEG = 0.0237  # 2.64 km of latitude

SUBJECTS = [
    "a dense forest",
    "agricultural fields",
    "a winding river",
    "a small town",
    "a large lake",
    "bare rocky terrain",
    "green meadows",
    "a network of roads",
    "a coastline",
    "snow-capped peaks",
    "a reservoir",
    "scattered farms",
    "a suburban area",
    "vineyards",
    "a wetland",
    "shrubland",
]
VERBS = ["covers", "dominates", "occupies", "stretches across", "surrounds", "borders", "fills"]
PLACES = [
    "the upper left corner",
    "the centre of the image",
    "the lower half",
    "the eastern edge",
    "most of the scene",
    "the northern part",
    "a narrow strip along the river",
    "the valley floor",
]
DETAILS = [
    "The colours range from deep green to light brown, suggesting a mix of vegetation types.",
    "Several roads cross the area and connect small settlements.",
    "The texture of the surface indicates irregular terrain with gentle slopes.",
    "There are no visible water bodies in this part of the image.",
    "Some white patches, possibly clouds, obscure a small part of the scene.",
    "The fields appear to be irrigated, as they are brighter than their surroundings.",
    "A few buildings are clustered near the main road.",
    "The river appears to be about 20 kilometers long within the image.",
    "Patches of darker vegetation indicate dense tree cover on the slopes.",
    "The agricultural plots are arranged in a regular grid pattern.",
]
OPENINGS = [
    "The image is a satellite view of a landscape where",
    "This satellite image shows an area in which",
    "The image shows an aerial view of a region where",
    "In this satellite image,",
]
TAGS = [
    "land",
    "natural",
    "wood",
    "water",
    "reservoir",
    "agricultural",
    "farmyard",
    "residential",
    "park",
    "river",
    "forest",
    "grass",
    "meadow",
    "school",
    "vineyard",
    "wetland",
]


def make_caption(rng: random.Random) -> str:
    """Return one caption of about 100 words."""
    sentences = [
        f"{rng.choice(OPENINGS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)}."
    ]
    for _ in range(2):
        sentences.append(
            f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(PLACES)}."
        )
    sentences.extend(rng.sample(DETAILS, 4))
    sentences.append("Overall, the image depicts a landscape shaped by land use and natural cover.")
    return " ".join(sentences)


def write_captions_and_metadata(out: Path, captions: int) -> None:
    """Write the chunk CSVs and the metadata GeoParquet."""
    rng = random.Random(SEED)
    generator = np.random.default_rng(SEED)
    locations = (captions + 3) // 4
    lon = generator.uniform(AREA[0] + 0.05, AREA[2] - 0.05, locations)
    lat = generator.uniform(AREA[1] + 0.05, AREA[3] - 0.05, locations)
    start = np.datetime64("2020-01-01T10:00:00")
    folder = out / "captions"
    folder.mkdir(parents=True, exist_ok=True)

    metadata_parts = []
    rows = []
    chunk = 1
    for location in range(locations):
        half_lat = FOOTPRINT_DEG / 2
        half_lon = half_lat / np.cos(np.radians(lat[location]))
        footprint = shapely.box(
            lon[location] - half_lon,
            lat[location] - half_lat,
            lon[location] + half_lon,
            lat[location] + half_lat,
        )
        file = f"ssl4eos12_train_seasonal_data_{chunk:06d}.zarr.zip"
        for time_id in range(4):
            if len(rows) + (chunk - 1) * ROWS_PER_CHUNK >= captions:
                break
            acquired = start + np.timedelta64(int(generator.integers(0, 700 * 24)), "h")
            tags = rng.sample(TAGS, rng.randint(2, 6))
            rows.append(
                {
                    "caption": make_caption(rng),
                    "question_1": "What is the largest body of water visible? A small lake.",
                    "question_2": "What is the most prominent agricultural feature? Fields.",
                    "question_3": "What is the most noticeable natural feature? A forest.",
                    "file": file,
                    "sample_id": location + 1,
                    "time_id": time_id,
                    "classes": ", ".join(tags[:3]),
                    "tags": ", ".join(tags),
                    "names": "",
                }
            )
            metadata_parts.append((f"{location + 1:07d}", time_id, acquired, footprint, file))
        if len(rows) == ROWS_PER_CHUNK or location == locations - 1:
            name = f"ssl4eos12_train_seasonal_data_{chunk:06d}.csv"
            pd.DataFrame.from_records(rows).to_csv(folder / name, index=False)
            rows = []
            chunk += 1

    sample_ids, time_ids, times, footprints, files = zip(*metadata_parts, strict=True)
    metadata = gpd.GeoDataFrame(
        {
            "sample_id": sample_ids,
            "time_id": time_ids,
            "time": pd.to_datetime(np.array(times)),
            "tile_id": "T32TMR",
            "tile_crs": 32632,
            "file": files,
        },
        geometry=list(footprints),
        crs="EPSG:4326",
    )
    metadata.index = [f"{s}_{t}" for s, t in zip(sample_ids, time_ids, strict=True)]
    metadata.to_parquet(out / "metadata.parquet")


def write_tiles(out: Path) -> None:
    """Write four full-size WorldCover tiles with blocky class patterns."""
    folder = out / "worldcover"
    folder.mkdir(parents=True, exist_ok=True)
    classes = np.array([10, 20, 30, 40, 50, 60, 80, 90], dtype=np.uint8)
    block = 1024
    for tile in TILES:
        path = folder / f"ESA_WorldCover_10m_2021_v200_{tile}_Map.tif"
        if path.exists():
            continue
        south = int(tile[1:3])
        west = int(tile[4:7])
        profile = {
            "driver": "GTiff",
            "width": TILE_PIXELS,
            "height": TILE_PIXELS,
            "count": 1,
            "dtype": "uint8",
            "crs": "EPSG:4326",
            "nodata": 0,
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "compress": "deflate",
            "transform": from_origin(west, south + 3, PIXEL_DEG, PIXEL_DEG),
        }
        rng = np.random.default_rng(zlib.crc32(tile.encode()))
        with rasterio.open(path, "w", **profile) as target:
            for row in range(0, TILE_PIXELS, block):
                for column in range(0, TILE_PIXELS, block):
                    height = min(block, TILE_PIXELS - row)
                    width = min(block, TILE_PIXELS - column)
                    # Patches of 128 px (about 1.3 km) of one class each.
                    patches = rng.choice(
                        classes, size=((height + 127) // 128, (width + 127) // 128)
                    )
                    data = np.kron(patches, np.ones((128, 128), dtype=np.uint8))[:height, :width]
                    target.write(data, 1, window=Window(column, row, width, height))


def main() -> None:
    """Parse options and write the dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=1_000_000, help="number of captions")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-tiles", action="store_true", help="skip the WorldCover tiles")
    arguments = parser.parse_args()

    clock = time.perf_counter()
    write_captions_and_metadata(arguments.out, arguments.captions)
    print(f"captions and metadata: {time.perf_counter() - clock:.1f} s")
    if not arguments.no_tiles:
        clock = time.perf_counter()
        write_tiles(arguments.out)
        print(f"tiles: {time.perf_counter() - clock:.1f} s")


if __name__ == "__main__":
    main()
