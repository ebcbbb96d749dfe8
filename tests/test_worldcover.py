"""WorldCover tile naming, sources and class areas, checked against exactextract and known tiles.

The real tile is N00E006 (São Tomé, 2021 v200), found through the
`shared_data` fixture. The small tiles in tests/data/worldcover come from make_tiles.py there: four
one-class tiles meet at (0, 0), two meet at the antimeridian.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from exactextract import exact_extract
from shapely.geometry import Point, Polygon, box

from eoaudit.errors import InputError
from eoaudit.worldcover import (
    RASTER_VALUES,
    AreaCache,
    WorldCoverSource,
    class_fractions,
    read_class_areas,
    tile_bounds,
    tile_filename,
    tile_id,
    tile_ids_for_bounds,
    window_value_areas,
)

REAL_TILE = "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
CHIP_METRES = 2640  # 264 px at 10 m, an SSL4EO-S12 chip


def ssl4eo_footprint(lon: float, lat: float, epsg: int = 32632) -> Polygon:
    """Return a 2640 m UTM square with its south-west corner at (lon, lat), in EPSG:4326."""
    to_utm = pyproj.Transformer.from_crs(4326, epsg, always_xy=True)
    to_wgs84 = pyproj.Transformer.from_crs(epsg, 4326, always_xy=True)
    x, y = to_utm.transform(lon, lat)
    square = box(x, y, x + CHIP_METRES, y + CHIP_METRES)
    return shapely.transform(
        shapely.segmentize(square, 100),
        lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1])),
    )


# Footprints on the real tile. What each contains was read from the tile beforehand.
REAL_FOOTPRINTS = {
    "forest interior": ssl4eo_footprint(6.58, 0.22),
    "town": ssl4eo_footprint(6.715, 0.325),
    "open sea": ssl4eo_footprint(7.5, 1.0),
    "coastline": ssl4eo_footprint(6.74, 0.27),
    "tile edge": ssl4eo_footprint(6.5, -0.007),
}


@pytest.fixture(scope="module")
def real_source(shared_data: Path) -> WorldCoverSource:
    return WorldCoverSource(str(shared_data / "esa-worldcover"))


@pytest.fixture(scope="module")
def generated_tiles(test_data: Path) -> Path:
    return test_data / "worldcover"


@pytest.fixture(scope="module")
def generated_source(generated_tiles: Path) -> WorldCoverSource:
    return WorldCoverSource(str(generated_tiles))


def shares_by_value(areas: np.ndarray) -> dict[int, float]:
    total = areas.sum()
    return {value: area / total for value, area in zip(RASTER_VALUES, areas, strict=True)}


def exactextract_shares(raster: Path, polygons: list[Polygon]) -> list[dict[int, float]]:
    frame = gpd.GeoDataFrame(geometry=polygons, crs="EPSG:4326")
    table = exact_extract(str(raster), frame, ["unique", "frac"], output="pandas")
    return [
        {int(value): float(share) for value, share in zip(row.unique, row.frac, strict=True)}
        for row in table.itertuples()
    ]


# Tile names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "expected"),
    [
        (0.5, 7.0, "N00E006"),
        (-0.5, -1.0, "S03W003"),
        (2.999, 8.999, "N00E006"),
        (3.0, 9.0, "N03E009"),
        (-90.0, -180.0, "S90W180"),
        (89.9, 179.9, "N87E177"),
        (-3.0, -3.0, "S03W003"),
        (45.2, 6.1, "N45E006"),
    ],
)
def test_tile_id_south_west_corner(lat: float, lon: float, expected: str) -> None:
    assert tile_id(lat, lon) == expected


def test_tile_bounds_round_trip() -> None:
    assert tile_bounds("S03W003") == (-3, -3, 0, 0)
    assert tile_bounds("N00E006") == (6, 0, 9, 3)
    with pytest.raises(ValueError, match="invalid WorldCover tile name 'X00E006'"):
        tile_bounds("X00E006")


def test_tile_ids_for_corner_box() -> None:
    assert sorted(tile_ids_for_bounds(-0.1, -0.1, 0.1, 0.1)) == [
        "N00E000",
        "N00W003",
        "S03E000",
        "S03W003",
    ]
    assert tile_ids_for_bounds(6.1, 0.1, 6.2, 0.2) == ["N00E006"]
    # A box ending exactly on a tile edge does not reach the next tile.
    assert tile_ids_for_bounds(6.0, 0.0, 9.0, 3.0) == ["N00E006"]


def test_tile_filename_official() -> None:
    assert tile_filename("N00E006") == REAL_TILE
    assert tile_filename("S03W003", "2020") == "ESA_WorldCover_10m_2020_v100_S03W003_Map.tif"
    with pytest.raises(InputError, match="invalid WorldCover version '2019'"):
        tile_filename("N00E006", "2019")


# Sources ---------------------------------------------------------------------


def test_folder_without_tiles_rejected(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=f"{tmp_path}: no tile named ESA_WorldCover_10m_2021_v200_"
    ):
        WorldCoverSource(str(tmp_path))


def test_folder_with_other_version_hints(tmp_path: Path, generated_tiles: Path) -> None:
    name = "ESA_WorldCover_10m_2020_v100_N00E000_Map.tif"
    shutil.copy(generated_tiles / name, tmp_path / name)
    with pytest.raises(InputError, match="pass the matching --worldcover-version"):
        WorldCoverSource(str(tmp_path))
    assert WorldCoverSource(str(tmp_path), "2020").datasets(0.1, 0.1, 0.2, 0.2)


def test_missing_folder_and_vrt_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"not a folder, a \.vrt file or a template"):
        WorldCoverSource(str(tmp_path / "absent"))
    with pytest.raises(InputError, match="VRT file not found"):
        WorldCoverSource(str(tmp_path / "absent.vrt"))
    with pytest.raises(InputError, match="invalid WorldCover version '2022'"):
        WorldCoverSource(str(tmp_path), "2022")


def test_version_2020_reads_other_tiles(generated_tiles: Path) -> None:
    source = WorldCoverSource(str(generated_tiles), "2020")
    areas = read_class_areas(source, box(0.2, 0.2, 0.4, 0.4), 0, 0)
    assert shares_by_value(areas.footprint)[30] == pytest.approx(1.0)


# Real tile against exactextract ----------------------------------------------


def without_nodata(path: Path, folder: Path) -> Path:
    """Write a VRT of a tile without its nodata value, so that exactextract counts value 0."""
    with rasterio.open(path) as dataset:
        width, height = dataset.width, dataset.height
        geotransform = ", ".join(str(v) for v in dataset.transform.to_gdal())
    vrt = folder / f"{path.stem}_all_values.vrt"
    vrt.write_text(
        f"""<VRTDataset rasterXSize="{width}" rasterYSize="{height}">
  <SRS>EPSG:4326</SRS><GeoTransform>{geotransform}</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1"><SimpleSource>
    <SourceFilename relativeToVRT="0">{path}</SourceFilename><SourceBand>1</SourceBand>
    <SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>
    <DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>
  </SimpleSource></VRTRasterBand>
</VRTDataset>""",
        encoding="utf-8",
    )
    return vrt


def test_real_tile_fractions_match_exactextract(
    real_source: WorldCoverSource, shared_data: Path, tmp_path: Path
) -> None:
    names = list(REAL_FOOTPRINTS)
    polygons = [REAL_FOOTPRINTS[name] for name in names]
    raster = without_nodata(shared_data / "esa-worldcover" / REAL_TILE, tmp_path)
    expected = exactextract_shares(raster, polygons)
    for name, polygon, theirs in zip(names, polygons, expected, strict=True):
        assert sum(theirs.values()) == pytest.approx(1.0)
        ours = shares_by_value(read_class_areas(real_source, polygon, 0, 0).footprint)
        for value in RASTER_VALUES:
            difference = abs(ours[value] - theirs.get(value, 0.0))
            assert difference < 0.005, (
                f"{name}, value {value}: {ours[value]} vs {theirs.get(value)}"
            )


def test_real_tile_known_content(real_source: WorldCoverSource) -> None:
    def shares(name: str) -> dict[int, float]:
        return shares_by_value(read_class_areas(real_source, REAL_FOOTPRINTS[name], 0, 0).footprint)

    assert shares("forest interior")[10] > 0.9
    assert shares("town")[50] > 0.3
    assert shares("open sea")[0] == pytest.approx(1.0)
    coast = shares("coastline")
    assert coast[80] > 0.2
    assert coast[10] > 0.2


def test_tile_edge_counts_only_inside(real_source: WorldCoverSource) -> None:
    polygon = REAL_FOOTPRINTS["tile edge"]
    areas = read_class_areas(real_source, polygon, 0, 0)
    inside = polygon.intersection(box(6, 0, 9, 3)).area / polygon.area
    assert 0.2 < inside < 0.8
    assert areas.footprint.sum() / areas.footprint_area == pytest.approx(inside, rel=1e-6)


def test_window_read_stays_small(real_source: WorldCoverSource, shared_data: Path) -> None:
    # The tile is 36000 x 36000 px; a footprint needs a window of a few hundred.
    polygon = REAL_FOOTPRINTS["town"]
    with rasterio.open(shared_data / "esa-worldcover" / REAL_TILE) as dataset:
        window = rasterio.windows.from_bounds(*polygon.bounds, transform=dataset.transform)
    assert window.width < 400
    assert window.height < 400


# Generated tiles: several tiles, antimeridian, points -------------------------


def test_four_tiles_quarters(generated_source: WorldCoverSource) -> None:
    shares = shares_by_value(
        read_class_areas(generated_source, box(-0.25, -0.25, 0.25, 0.25), 0, 0).footprint
    )
    for value in (10, 50, 80, 40):
        assert shares[value] == pytest.approx(0.25, abs=1e-9)


def test_two_tiles_halves(generated_source: WorldCoverSource) -> None:
    shares = shares_by_value(
        read_class_areas(generated_source, box(-0.25, 0.4, 0.25, 0.6), 0, 0).footprint
    )
    assert shares[10] == pytest.approx(0.5, abs=1e-9)
    assert shares[50] == pytest.approx(0.5, abs=1e-9)


def test_four_tiles_triangle_exact(generated_source: WorldCoverSource) -> None:
    triangle = Polygon([(-0.31, -0.17), (0.43, -0.05), (-0.02, 0.38)])
    quadrants = {
        10: box(-3, 0, 0, 3),
        50: box(0, 0, 3, 3),
        80: box(-3, -3, 0, 0),
        40: box(0, -3, 3, 0),
    }
    shares = shares_by_value(read_class_areas(generated_source, triangle, 0, 0).footprint)
    for value, quadrant in quadrants.items():
        expected = triangle.intersection(quadrant).area / triangle.area
        assert shares[value] == pytest.approx(expected, abs=1e-9)


def test_random_patch_matches_exactextract(
    generated_source: WorldCoverSource, generated_tiles: Path, tmp_path: Path
) -> None:
    polygons = [
        shapely.affinity.rotate(box(1.1, 1.1, 1.37, 1.33), 17),
        Polygon([(1.2, 1.2), (1.8, 1.25), (1.5, 1.9), (1.45, 1.4)]),
    ]
    tile = generated_tiles / "ESA_WorldCover_10m_2021_v200_N00E000_Map.tif"
    expected = exactextract_shares(without_nodata(tile, tmp_path), polygons)
    for polygon, theirs in zip(polygons, expected, strict=True):
        ours = shares_by_value(read_class_areas(generated_source, polygon, 0, 0).footprint)
        for value in RASTER_VALUES:
            assert abs(ours[value] - theirs.get(value, 0.0)) < 1e-6


def test_antimeridian_footprint(generated_source: WorldCoverSource) -> None:
    wrapped = Polygon([(179.75, 1.0), (-179.75, 1.0), (-179.75, 1.5), (179.75, 1.5)])
    unwrapped = box(179.75, 1.0, 180.25, 1.5)
    for polygon in (wrapped, unwrapped):
        areas = read_class_areas(generated_source, polygon, 0, 0)
        shares = shares_by_value(areas.footprint)
        assert shares[20] == pytest.approx(0.5, abs=1e-9)
        assert shares[60] == pytest.approx(0.5, abs=1e-9)
        assert areas.footprint_area == pytest.approx(0.25)


def test_self_intersecting_footprint_repaired(generated_source: WorldCoverSource) -> None:
    # A bow tie over the tree-cover (west) and built-up (east) tiles: two triangles.
    bow_tie = Polygon([(-0.2, 0.5), (0.2, 0.9), (0.2, 0.5), (-0.2, 0.9)])
    areas = read_class_areas(generated_source, bow_tie, 0, 0)
    shares = shares_by_value(areas.footprint)
    assert shares[10] == pytest.approx(0.5, abs=1e-9)
    assert shares[50] == pytest.approx(0.5, abs=1e-9)
    assert areas.footprint_area == pytest.approx(0.08)


def test_large_window_read_decimated(generated_tiles: Path) -> None:
    polygon = shapely.affinity.rotate(box(1.05, 1.05, 1.95, 1.95), 10)
    path = generated_tiles / "ESA_WorldCover_10m_2021_v200_N00E000_Map.tif"
    with rasterio.open(path) as dataset:
        full = window_value_areas(dataset, [polygon])[0]
        decimated = window_value_areas(dataset, [polygon], max_pixels=30 * 30)[0]
    # Full resolution covers the polygon's area exactly; decimated reads keep the
    # area and estimate the shares of the random patch.
    assert full.sum() == pytest.approx(polygon.area, rel=1e-9)
    assert decimated.sum() == pytest.approx(polygon.area, rel=1e-9)
    shares_full = full / full.sum()
    shares_decimated = decimated / decimated.sum()
    assert np.abs(shares_full - shares_decimated).max() < 0.05


def test_point_read_as_square(generated_source: WorldCoverSource) -> None:
    areas = read_class_areas(generated_source, Point(0.5, -1.5), 0, 1320)
    side_lat = 2640 / 111_320
    side_lon = side_lat / np.cos(np.radians(-1.5))
    assert areas.footprint_area == pytest.approx(side_lat * side_lon, rel=0.01)
    assert shares_by_value(areas.footprint)[40] == pytest.approx(1.0)


def test_buffer_reaches_neighbour_tile(generated_source: WorldCoverSource) -> None:
    # 50 m west of the tree-cover tile; a 100 m buffer reaches into it.
    offset = 50 / 111_320
    footprint = box(offset, 0.5, offset + 0.02, 0.52)
    areas = read_class_areas(generated_source, footprint, 100, 0)
    assert shares_by_value(areas.footprint)[10] == 0
    assert shares_by_value(areas.buffered)[10] > 0


def test_no_tile_is_no_data(generated_source: WorldCoverSource) -> None:
    areas = read_class_areas(generated_source, box(45.1, 45.1, 45.2, 45.2), 0, 0)
    fractions, status = class_fractions(areas.footprint, areas.footprint_area, "open-water", 0.5)
    assert status == "no-data"
    assert np.isnan(fractions).all()


def test_partial_tile_below_min_coverage(generated_source: WorldCoverSource) -> None:
    # 30 % of this box lies on tile N00E177, the rest on N03E177, which does not exist.
    areas = read_class_areas(generated_source, box(178.0, 2.79, 178.1, 3.09), 0, 0)
    assert areas.footprint.sum() / areas.footprint_area == pytest.approx(0.7, abs=1e-9)
    _, status = class_fractions(areas.footprint, areas.footprint_area, "open-water", 0.75)
    assert status == "no-data"
    fractions, status = class_fractions(areas.footprint, areas.footprint_area, "open-water", 0.5)
    assert status == "ok"
    assert fractions[1] == pytest.approx(1.0)  # shrubland, class 20


def test_sea_rule(real_source: WorldCoverSource) -> None:
    areas = read_class_areas(real_source, REAL_FOOTPRINTS["open sea"], 0, 0)
    water, status = class_fractions(areas.footprint, areas.footprint_area, "open-water", 0.5)
    assert status == "ok"
    assert water[7] == pytest.approx(1.0)  # permanent water bodies, class 80
    _, status = class_fractions(areas.footprint, areas.footprint_area, "no-data", 0.5)
    assert status == "no-data"


# VRT and templates -----------------------------------------------------------


def write_vrt(path: Path, tiles: Path, names: list[tuple[str, int, int]]) -> None:
    """Write a VRT of 300 px test tiles placed at (column, row) offsets on a 600 px grid."""
    sources = "".join(
        f"""<SimpleSource><SourceFilename relativeToVRT="0">{tiles / name}</SourceFilename>
        <SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="300" ySize="300"/>
        <DstRect xOff="{column}" yOff="{row}" xSize="300" ySize="300"/></SimpleSource>"""
        for name, column, row in names
    )
    path.write_text(
        f"""<VRTDataset rasterXSize="600" rasterYSize="600">
  <SRS>EPSG:4326</SRS>
  <GeoTransform>-3.0, 0.01, 0.0, 3.0, 0.0, -0.01</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1"><NoDataValue>0</NoDataValue>{sources}</VRTRasterBand>
</VRTDataset>""",
        encoding="utf-8",
    )


def test_vrt_source_matches_folder(
    tmp_path: Path, generated_tiles: Path, generated_source: WorldCoverSource
) -> None:
    vrt = tmp_path / "worldcover.vrt"
    write_vrt(
        vrt,
        generated_tiles,
        [
            ("ESA_WorldCover_10m_2021_v200_N00W003_Map.tif", 0, 0),
            ("ESA_WorldCover_10m_2021_v200_N00E000_Map.tif", 300, 0),
            ("ESA_WorldCover_10m_2021_v200_S03W003_Map.tif", 0, 300),
            ("ESA_WorldCover_10m_2021_v200_S03E000_Map.tif", 300, 300),
        ],
    )
    triangle = Polygon([(-0.31, -0.17), (0.43, -0.05), (-0.02, 0.38)])
    from_vrt = read_class_areas(WorldCoverSource(str(vrt)), triangle, 0, 0)
    from_folder = read_class_areas(generated_source, triangle, 0, 0)
    np.testing.assert_allclose(from_vrt.footprint, from_folder.footprint, rtol=1e-9)


def test_path_template_matches_folder(
    generated_tiles: Path, generated_source: WorldCoverSource
) -> None:
    template = str(generated_tiles / "ESA_WorldCover_10m_{year}_{version}_{tile}_Map.tif")
    source = WorldCoverSource(template)
    triangle = Polygon([(-0.31, -0.17), (0.43, -0.05), (-0.02, 0.38)])
    np.testing.assert_allclose(
        read_class_areas(source, triangle, 0, 0).footprint,
        read_class_areas(generated_source, triangle, 0, 0).footprint,
        rtol=1e-9,
    )
    # Tiles the template names but that do not exist read as no data.
    assert source.datasets(45.1, 45.1, 45.2, 45.2) == []


# Cache -----------------------------------------------------------------------


def test_cache_round_trip(tmp_path: Path, generated_source: WorldCoverSource) -> None:
    cache = AreaCache(tmp_path / "cache" / "areas.sqlite")
    polygon = box(-0.25, -0.25, 0.25, 0.25)
    areas = read_class_areas(generated_source, polygon, 100, 0)
    key = AreaCache.key(polygon, "100|0|" + generated_source.fingerprint())
    cache.put_many({key: areas})
    found = AreaCache(tmp_path / "cache" / "areas.sqlite").get_many([key, "absent"])
    assert list(found) == [key]
    np.testing.assert_array_equal(found[key].footprint, areas.footprint)
    np.testing.assert_array_equal(found[key].buffered, areas.buffered)
    assert found[key].buffered_area == areas.buffered_area


def test_fingerprint_changes_with_tiles(tmp_path: Path, generated_tiles: Path) -> None:
    for tile in generated_tiles.glob("*_Map.tif"):
        shutil.copy(tile, tmp_path / tile.name)
    before = WorldCoverSource(str(tmp_path)).fingerprint()
    assert WorldCoverSource(str(tmp_path)).fingerprint() == before
    assert WorldCoverSource(str(tmp_path), "2020").fingerprint() != before

    changed = tmp_path / "ESA_WorldCover_10m_2021_v200_N00E000_Map.tif"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert WorldCoverSource(str(tmp_path)).fingerprint() != before
    (tmp_path / "ESA_WorldCover_10m_2021_v200_S03E000_Map.tif").unlink()
    assert WorldCoverSource(str(tmp_path)).fingerprint() != before
