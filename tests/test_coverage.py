"""Coverage analyzer: joins on real footprints, bias measures, seasons, gaps, chunking."""

from __future__ import annotations

import math
import pickle
import re
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from scipy import stats

from eoaudit import reference
from eoaudit.analyzers import AuditContext
from eoaudit.analyzers.coverage import (
    CoverageAnalyzer,
    divergences,
    gini,
    normalised_entropy,
)
from eoaudit.engine import AuditOptions, run_audit
from eoaudit.errors import InputError
from eoaudit.readers import read_dataset
from eoaudit.readers.options import ReadOptions
from eoaudit.report import render_report
from eoaudit.results import AnalyzerResult
from eoaudit.ruleset import load_rules
from eoaudit.samples import SampleSet

NORTH_SEASONS = {
    12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring",
    6: "summer", 7: "summer", 8: "summer", 9: "autumn", 10: "autumn", 11: "autumn",
}  # fmt: skip
OPPOSITE = {"winter": "summer", "summer": "winter", "spring": "autumn", "autumn": "spring"}


def make_samples(
    geometry: list[Any] | gpd.GeoSeries,
    captions: list[str] | None = None,
    times: list[Any] | pd.Series | None = None,
    location_ids: list[str] | None = None,
) -> gpd.GeoDataFrame:
    count = len(geometry)
    ids = [f"s{i:05d}" for i in range(count)]
    frame = gpd.GeoDataFrame(
        {
            "sample_id": ids,
            "caption": captions if captions is not None else [""] * count,
            "time": pd.to_datetime(
                pd.Series(times if times is not None else [pd.NaT] * count),
                utc=True,
                format="ISO8601",
            ).to_numpy(),
            "image": None,
        },
        geometry=list(geometry),
        crs="EPSG:4326",
    )
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    if location_ids is not None:
        frame["location_id"] = location_ids
    frame.index = pd.Index(ids)
    return frame


def run_coverage(
    samples: gpd.GeoDataFrame,
    chunk_size: int = 100_000,
    sample_columns: pd.DataFrame | None = None,
    rules: dict[str, Any] | None = None,
) -> tuple[AnalyzerResult, pd.DataFrame]:
    """Run the analyzer the way the engine does: chunks, merge in order, finalize."""
    context = AuditContext(
        rules=rules if rules is not None else load_rules(),
        sample_count=len(samples),
        sample_columns=sample_columns if sample_columns is not None else pd.DataFrame(),
    )
    analyzer = CoverageAnalyzer(context)
    state = None
    columns = []
    for start in range(0, len(samples), chunk_size):
        partial = analyzer.map_chunk(samples.iloc[start : start + chunk_size])
        # States travel to other processes pickled, and the engine merges them with an
        # analyzer built anew with empty rules; do both here.
        chunk_state = pickle.loads(pickle.dumps(partial.state))
        merger = CoverageAnalyzer(AuditContext(rules={}))
        state = chunk_state if state is None else merger.merge(state, chunk_state)
        columns.append(partial.columns)
    result = AnalyzerResult(name="coverage", title="Coverage", settings=analyzer.settings())
    analyzer.finalize(state, result)
    return result, pd.concat(columns)


def first_match(points: gpd.GeoDataFrame, layer: gpd.GeoDataFrame, key: str) -> pd.Series:
    """Independent spatial join: the first layer polygon (in file order) touching each point."""
    joined = gpd.sjoin(points, layer[[key, "geometry"]], how="left", predicate="intersects")
    joined = joined.reset_index(names="point").sort_values(["point", "index_right"])
    return joined.drop_duplicates("point").set_index("point")[key].reindex(points.index)


@pytest.fixture(scope="module")
def val_footprints(shared_data: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(shared_data / "ssl4eo-s12-v1.1-meta" / "val_metadata.parquet")


@pytest.fixture(scope="module")
def val_samples(val_footprints: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    samples = make_samples(
        val_footprints.geometry.values,
        times=list(val_footprints["time"]),
        location_ids=val_footprints["sample_id"].astype(str).tolist(),
    )
    samples.index = pd.Index(val_footprints.index.astype(str))
    samples["sample_id"] = samples.index
    return samples


@pytest.fixture(scope="module")
def val_audit(val_samples: gpd.GeoDataFrame) -> tuple[AnalyzerResult, pd.DataFrame]:
    audit = run_audit(
        SampleSet(val_samples, "val_metadata.parquet", "table", len(val_samples)),
        AuditOptions(analyzers=["coverage"], chunk_size=5000),
    )
    samples = audit.samples.set_index("sample_id")
    columns = samples[[c for c in samples.columns if c.startswith("coverage.")]]
    columns.columns = [c.removeprefix("coverage.") for c in columns.columns]
    return audit.result.analyzers["coverage"], columns


@pytest.fixture(scope="module")
def val_centroids(val_footprints: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    centroids = shapely.centroid(val_footprints.geometry.values)
    return gpd.GeoDataFrame(
        geometry=centroids, crs="EPSG:4326", index=val_footprints.index.astype(str)
    )


# --- real SSL4EO-S12 footprints ---------------------------------------------------


def test_val_countries_match_spatial_join(
    shared_data: Path,
    val_audit: tuple[AnalyzerResult, pd.DataFrame],
    val_centroids: gpd.GeoDataFrame,
) -> None:
    result, columns = val_audit
    source = gpd.read_file(shared_data / "natural-earth" / "ne_110m_admin_0_countries.geojson")
    expected = first_match(val_centroids, source, "ADM0_A3")

    table = result.tables["coverage.by_country"].frame
    counted = table[table["samples"] > 0].set_index("country")["samples"].sort_index()
    assert counted.to_dict() == expected.value_counts().sort_index().to_dict()
    assert columns["country"].reindex(expected.index).fillna("-").tolist() == (
        expected.fillna("-").tolist()
    )
    at_sea = int(expected.isna().sum())
    assert int(columns["at_sea"].sum()) == at_sea
    assert result.metrics["coverage.ocean_share"].value == pytest.approx(at_sea / len(expected))
    assert result.metrics["coverage.countries_covered"].value == expected.nunique()
    assert result.metrics["coverage.land_countries_missing"].value == (
        len(source) - expected.nunique()
    )


def test_val_continents_match_spatial_join(
    val_audit: tuple[AnalyzerResult, pd.DataFrame], val_centroids: gpd.GeoDataFrame
) -> None:
    result, columns = val_audit
    layer = gpd.read_parquet(reference.reference_path("continents.parquet"))
    expected = first_match(val_centroids, layer, "continent")

    table = result.tables["coverage.by_continent"].frame.set_index("continent")["samples"]
    assert table[table > 0].sort_index().to_dict() == expected.value_counts().sort_index().to_dict()
    assert columns["continent"].reindex(expected.index).fillna("-").tolist() == (
        expected.fillna("-").tolist()
    )


def test_val_continents_agree_with_source_regions(
    shared_data: Path,
    val_audit: tuple[AnalyzerResult, pd.DataFrame],
    val_centroids: gpd.GeoDataFrame,
) -> None:
    _, columns = val_audit
    regions = gpd.read_file(
        shared_data / "natural-earth" / "ne_110m_geography_regions_polys.geojson"
    )
    continent_polygons = regions[regions["featurecla"] == "Continent"]
    inside = gpd.sjoin(
        val_centroids, continent_polygons[["region", "geometry"]], predicate="within"
    )
    # Region polygons reach past some coasts; the shipped continents are land only.
    on_land = columns["country"].reindex(inside.index).notna()
    inside = inside[on_land]
    assert len(inside) > 1000
    got = columns["continent"].reindex(inside.index)
    assert (got == inside["region"]).all()


def test_val_every_country_sample_has_continent(
    val_audit: tuple[AnalyzerResult, pd.DataFrame],
) -> None:
    _, columns = val_audit
    on_land = columns["country"].notna()
    assert columns.loc[on_land, "continent"].notna().all()
    assert columns.loc[~on_land, "continent"].isna().all()


def test_val_climate_matches_full_raster(
    shared_data: Path,
    val_audit: tuple[AnalyzerResult, pd.DataFrame],
    val_centroids: gpd.GeoDataFrame,
) -> None:
    import rasterio

    _, columns = val_audit
    path = shared_data / "koppen-geiger" / "KG_simplified_uint8.tif"
    coordinates = list(zip(val_centroids.geometry.x, val_centroids.geometry.y, strict=True))
    with rasterio.open(path) as dataset:
        full = np.array([value[0] for value in dataset.sample(coordinates)])
    letters = np.array(["-", "A", "B", "C", "D", "E"])[full]
    got = columns["climate"].reindex(val_centroids.index).fillna("-").to_numpy()
    on_land = full > 0
    # The 0.1 degree cell takes its most frequent class, so most 1 km pixels agree.
    assert (got[on_land] == letters[on_land]).mean() > 0.9
    assert (got[on_land] != "-").all()


def test_val_seasons_by_hemisphere(
    val_audit: tuple[AnalyzerResult, pd.DataFrame],
    val_footprints: gpd.GeoDataFrame,
    val_centroids: gpd.GeoDataFrame,
) -> None:
    result, columns = val_audit
    lat = val_centroids.geometry.y.to_numpy()
    months = pd.to_datetime(val_footprints["time"]).dt.month.to_numpy()
    north = np.array([NORTH_SEASONS[m] for m in months])
    expected = np.where(lat >= 0, north, [OPPOSITE[s] for s in north])
    expected = np.where(np.abs(lat) < 23.44, "tropical", expected)
    assert columns["season"].reindex(val_centroids.index).tolist() == expected.tolist()

    table = result.tables["coverage.by_season"].frame.set_index("season")
    counts = pd.Series(expected).value_counts()
    for season in ["winter", "spring", "summer", "autumn", "tropical"]:
        assert table.loc[season, "samples"] == counts.get(season, 0)
    assert result.metrics["coverage.tropics_share"].value == pytest.approx(
        (np.abs(lat) < 23.44).mean()
    )


def test_val_locations_cover_seasons(
    val_audit: tuple[AnalyzerResult, pd.DataFrame], val_footprints: gpd.GeoDataFrame
) -> None:
    result, columns = val_audit
    frame = pd.DataFrame(
        {
            "location": val_footprints["sample_id"].to_numpy(),
            "season": columns["season"].reindex(val_footprints.index.astype(str)).to_numpy(),
        }
    )
    per_location = frame.groupby("location")["season"].agg(set)
    extratropical = per_location[per_location.map(lambda s: "tropical" not in s)]
    all_four = int(extratropical.map(lambda s: len(s) == 4).sum())
    assert result.metrics["coverage.locations_repeated"].value == len(per_location)
    assert result.metrics["coverage.locations_all_seasons"].value == all_four
    assert result.metrics["coverage.all_seasons_share"].value == pytest.approx(
        all_four / len(extratropical)
    )


def test_val_grid_measures_match_formulas(
    val_audit: tuple[AnalyzerResult, pd.DataFrame], val_centroids: gpd.GeoDataFrame
) -> None:
    result, _ = val_audit
    rules = load_rules()["coverage"]["grid"]
    grid = reference.land_grid(rules["cell_km"], rules["subdivisions"])
    cell = rules["cell_km"] * 1000.0
    transformer = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True)
    x, y = transformer.transform(val_centroids.geometry.x.to_numpy(), val_centroids.geometry.y)
    column = np.floor((np.asarray(x) + grid.columns * cell / 2) / cell).astype(int)
    row = np.floor((np.asarray(y) + grid.rows * cell / 2) / cell).astype(int)
    counts = np.bincount(row * grid.columns + column, minlength=grid.land_km2.size)
    land = (grid.land_km2 > 0) & (grid.land_km2 >= rules["land_cell_min_fraction"] * cell**2 / 1e6)
    sampled = counts[land].astype(float)
    area = grid.land_km2[land]

    pairwise = np.abs(sampled[:, None] - sampled[None, :]).sum()
    expected_gini = pairwise / (2 * len(sampled) ** 2 * sampled.mean())
    p = sampled / sampled.sum()
    q = area / area.sum()
    nonzero = p > 0
    expected_entropy = -(p[nonzero] * np.log(p[nonzero])).sum() / np.log(len(p))
    expected_kl = (p[nonzero] * np.log2(p[nonzero] / q[nonzero])).sum()
    m = (p + q) / 2
    expected_js = (
        0.5 * (p[nonzero] * np.log2(p[nonzero] / m[nonzero])).sum()
        + 0.5 * (q * np.log2(q / m)).sum()
    )

    metrics = result.metrics
    assert metrics["coverage.land_cells"].value == int(land.sum())
    assert metrics["coverage.gini"].value == pytest.approx(expected_gini, rel=1e-9)
    assert metrics["coverage.entropy"].value == pytest.approx(expected_entropy, rel=1e-9)
    assert metrics["coverage.kl_land"].value == pytest.approx(expected_kl, rel=1e-9)
    assert metrics["coverage.js_land"].value == pytest.approx(expected_js, rel=1e-9)


# --- Landsat30-AU -----------------------------------------------------------------


def test_landsat30_all_in_australia(shared_data: Path) -> None:
    dataset = read_dataset(
        shared_data / "landsat30-au" / "captioning_ft_full.csv",
        ReadOptions(time_regex=("image_path", r"(\d{4}-\d{2}-\d{2})-raw")),
    )
    result, columns = run_coverage(dataset.samples)

    countries = set(columns["country"].dropna())
    assert countries == {"AUS"}
    assert set(columns["continent"].dropna()) == {"Oceania"}
    # 1:110m drops islands and simplifies coasts: the rest must lie just off Australia.
    off_shore = dataset.samples.loc[columns.index[columns["country"].isna()]]
    australia = reference.countries().query("adm0_a3 == 'AUS'").to_crs("EPSG:3577")
    distance_km = off_shore.to_crs("EPSG:3577").distance(australia.geometry.iloc[0]) / 1000
    assert (distance_km < 200).all()
    assert result.metrics["coverage.countries_covered"].value == 1
    assert result.metrics["coverage.samples_located"].value == len(dataset.samples)


# --- edge places: antimeridian, poles, sea ----------------------------------------


def test_edge_places() -> None:
    crossing = shapely.Polygon([(179.99, 66.9), (180.0, 66.9), (180.0, 67.1), (179.99, 67.1)])
    wrapped = shapely.Polygon([(179.98, 66.9), (-179.98, 66.9), (-179.98, 67.1), (179.98, 67.1)])
    samples = make_samples(
        [
            shapely.Point(180.0, 67.0),  # on the antimeridian, Chukotka
            shapely.Point(-180.0, 67.0),
            crossing,
            wrapped,  # footprint written across the antimeridian
            shapely.Point(0.0, -90.0),  # South Pole
            shapely.Point(0.0, 90.0),  # North Pole, sea ice
            shapely.Point(-30.0, 0.0),  # mid-Atlantic
            None,
        ],
        times=["2021-01-10"] * 8,
    )
    _, columns = run_coverage(samples)
    assert columns["country"].fillna("-").tolist() == [
        "RUS", "RUS", "RUS", "RUS", "ATA", "-", "-", "-",
    ]  # fmt: skip
    assert columns["continent"].fillna("-").tolist() == [
        "Asia", "Asia", "Asia", "Asia", "Antarctica", "-", "-", "-",
    ]  # fmt: skip
    assert columns["at_sea"].tolist() == [False, False, False, False, False, True, True, False]
    assert columns["climate"].iloc[4] == "E"
    assert pd.isna(columns["climate"].iloc[5])
    assert pd.isna(columns["climate"].iloc[6])
    assert columns["season"].fillna("-").tolist() == [
        "winter", "winter", "winter", "winter", "summer", "winter", "tropical", "-",
    ]  # fmt: skip


def test_wrapped_footprint_centroid_on_antimeridian() -> None:
    wrapped = shapely.Polygon([(179.0, 10.0), (-179.0, 10.0), (-179.0, 11.0), (179.0, 11.0)])
    lon, lat = reference.representative_points(gpd.GeoSeries([wrapped], crs="EPSG:4326"))
    assert abs(abs(lon[0]) - 180.0) < 1e-9
    assert lat[0] == pytest.approx(10.5)


def test_reference_areas_equal_area_projection(shared_data: Path) -> None:
    source = gpd.read_file(shared_data / "natural-earth" / "ne_110m_admin_0_countries.geojson")
    land_km2 = source.to_crs("ESRI:54009").area.sum() / 1e6  # Mollweide, also equal-area
    assert reference.continents()["land_area_km2"].sum() == pytest.approx(land_km2, rel=1e-3)
    assert reference.countries()["land_area_km2"].sum() == pytest.approx(land_km2, rel=1e-3)
    assert reference.land_grid(100.0).land_km2.sum() == pytest.approx(land_km2, rel=5e-3)
    assert reference.land_area_by_latitude(5.0).sum() == pytest.approx(land_km2, rel=1e-3)
    climate = reference.climate_land_area()["land_area_km2"].sum()
    assert climate == pytest.approx(land_km2, rel=0.03)


def test_france_keyed_by_adm0() -> None:
    samples = make_samples([shapely.Point(2.35, 48.85)])  # Paris
    _, columns = run_coverage(samples)
    assert columns["country"].tolist() == ["FRA"]
    assert columns["climate"].tolist() == ["C"]


# --- statistics -------------------------------------------------------------------


def test_gini_matches_mean_difference() -> None:
    counts = np.random.default_rng(3).poisson(2.0, 500).astype(float)
    pairwise = np.abs(counts[:, None] - counts[None, :]).sum()
    assert gini(counts) == pytest.approx(pairwise / (2 * len(counts) ** 2 * counts.mean()))
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 7])) == pytest.approx(0.75)
    assert gini(np.zeros(4)) is None


def test_entropy_and_divergences() -> None:
    assert normalised_entropy(np.ones(8)) == pytest.approx(1.0)
    assert normalised_entropy(np.array([5, 0, 0, 0])) == pytest.approx(0.0)
    area = np.array([1.0, 2.0, 3.0, 4.0])
    kl, js = divergences(area * 10, area)
    assert kl == pytest.approx(0.0, abs=1e-12)
    assert js == pytest.approx(0.0, abs=1e-12)
    kl, js = divergences(np.array([1, 0, 0, 0]), area)
    assert kl == pytest.approx(math.log2(10))
    m = (np.array([1, 0, 0, 0]) + area / 10) / 2
    expected_js = 0.5 * math.log2(1 / m[0]) + 0.5 * sum(
        q * math.log2(q / mq) for q, mq in zip(area / 10, m, strict=True)
    )
    assert js == pytest.approx(expected_js)


# --- time parts -------------------------------------------------------------------


def test_no_times_skips_time_parts() -> None:
    samples = make_samples([shapely.Point(2.35, 48.85), shapely.Point(151.2, -33.9)])
    result, columns = run_coverage(samples)
    assert "no located sample has an acquisition time" in result.settings["time_parts_skipped"]
    assert result.metrics["coverage.season_mismatch_rate"].value is None
    assert "coverage.by_season" not in result.tables
    assert columns["season"].isna().all()
    assert result.metrics["coverage.samples_located"].value == 2


def test_year_and_month_tables() -> None:
    times = ["2020-01-05", "2020-01-20", "2021-07-01", "2019-12-31T23:00:00"]
    samples = make_samples([shapely.Point(10, 50)] * 4, times=times)
    result, _ = run_coverage(samples)
    years = result.tables["coverage.by_year"].frame.set_index("year")["samples"].to_dict()
    assert years == {2019: 1, 2020: 2, 2021: 1}
    months = result.tables["coverage.by_month"].frame.set_index("month")["samples"]
    assert months["Jan"] == 2
    assert months["Jul"] == 1
    assert months["Dec"] == 1
    assert months.sum() == 4


def test_season_words_in_synthetic_captions() -> None:
    samples = make_samples(
        [shapely.Point(10, 50), shapely.Point(151.2, -33.9), shapely.Point(10, 50),
         shapely.Point(-1.5, 12.4)],
        captions=["fields in winter", "fields in winter", "no snow cover today", "dry season"],
        times=["2021-07-15", "2021-07-15", "2021-07-15", "2021-08-01"],
    )  # fmt: skip
    result, columns = run_coverage(samples)
    # July is summer in the north, so "winter" mismatches, and winter in Sydney, so it
    # agrees. Negated snow is not checked. Burkina Faso (12.4 N) is wet in August.
    assert columns["season_mismatch"].tolist() == [True, False, False, True]
    assert result.metrics["coverage.season_words_checked"].value == 3
    assert result.metrics["coverage.season_mismatch_rate"].value == pytest.approx(2 / 3)
    finding = next(f for f in result.findings if f.code == "season-word-mismatch")
    assert finding.examples == ["s00000", "s00003"]


# --- real RS5M captions -----------------------------------------------------------

MONTH_NAMES = (
    "January|February|March|April|May|June|July|August|September|October|November|December"
)
BAND_LETTERS = "CDEFGHJKLMNPQRSTUVWX"
SEASON_ISH = re.compile(
    r"\b(spring\w*|summer\w*|fall|autumn\w*|winter\w*|wintry|snow\w*|monsoon|rainy|dry season"
    r"|wet season|foliage)\b",
    re.IGNORECASE,
)


def rs5m_samples(shared_data: Path) -> tuple[gpd.GeoDataFrame, pd.Series]:
    """fMoW and BigEarthNet captions placed by their UTM zone, dated by their text.

    fMoW writes the MGRS latitude band after the zone number (`18T`); BigEarthNet
    writes the hemisphere (`29N`) and covers Europe only, so it is placed at 50 N.
    Bands G and Q straddle a tropic, so their captions are left out.
    """
    frame = pd.read_csv(shared_data / "rs5m-samples" / "rs3_dump.csv").dropna()
    frame = frame[frame["name"].str.startswith(("fmow_", "ben_"))]
    zone = frame["caption"].str.extract(r"utm zone:? (\d{1,2})([A-Z])|(\d{1,2})([A-Z]) utm zone")
    number = zone[0].fillna(zone[2]).astype(float)
    letter = zone[1].fillna(zone[3])
    date = frame["caption"].str.extract(rf"({MONTH_NAMES}) (\d{{1,2}}), (\d{{4}})")
    stated = frame["caption"].str.extract(r"\b(Spring|Summer|Fall|Autumn|Winter)\b")[0]
    season_words = frame["caption"].map(lambda text: len(SEASON_ISH.findall(text)))

    is_ben = frame["name"].str.startswith("ben_")
    band_index = letter.map(lambda c: BAND_LETTERS.find(c) if isinstance(c, str) else -1)
    lat = np.where(is_ben, 50.0, -80.0 + 8.0 * band_index + 4.0)
    lat = np.where(letter == "X", 78.0, lat)
    keep = (
        number.notna()
        & date[0].notna()
        & stated.notna()
        & (season_words == 1)
        & (is_ben | ~letter.isin(["G", "Q"]))
        & (band_index >= 0)
    )
    frame, number, date, stated = frame[keep], number[keep], date[keep], stated[keep]
    lat = lat[keep.to_numpy()]
    lon = -183.0 + 6.0 * number.to_numpy()
    times = pd.to_datetime(date[0] + " " + date[1] + " " + date[2], format="%B %d %Y", utc=True)
    samples = make_samples(
        list(shapely.points(lon, lat)), captions=frame["caption"].tolist(), times=list(times)
    )
    stated = stated.str.lower().replace({"fall": "autumn"})
    stated.index = samples.index
    return samples, stated


def test_rs5m_season_words_against_dates(shared_data: Path) -> None:
    samples, stated = rs5m_samples(shared_data)
    assert len(samples) > 3000
    result, columns = run_coverage(samples)

    lat = samples.geometry.y.to_numpy()
    months = samples["time"].dt.month.to_numpy()
    north = np.array([NORTH_SEASONS[m] for m in months])
    actual = np.where(lat >= 0, north, [OPPOSITE[s] for s in north])
    tropical = np.abs(lat) < 23.44
    expected = (stated.to_numpy() != actual) & ~tropical

    assert columns["season_mismatch"].to_numpy().tolist() == expected.tolist()
    assert expected.sum() > 0  # fMoW gives northern seasons in the south too
    checked = int((~tropical).sum())
    assert result.metrics["coverage.season_words_checked"].value == checked
    assert result.metrics["coverage.season_mismatch_rate"].value == pytest.approx(
        expected.sum() / checked
    )


# --- quality gaps between groups --------------------------------------------------


@pytest.fixture(scope="module")
def gap_input(val_samples: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    samples = val_samples.iloc[:1200].copy()
    _, columns = run_coverage(samples)
    rng = np.random.default_rng(11)
    europe = (columns["continent"] == "Europe").to_numpy()
    hallucinated = np.where(rng.random(len(samples)) < np.where(europe, 0.6, 0.1), 1, 0)
    clipscore = rng.normal(30.0, 3.0, len(samples)) - np.where(europe, 2.0, 0.0)
    measures = pd.DataFrame(
        {
            "hallucination.hallucinated": hallucinated * rng.integers(1, 4, len(samples)),
            "alignment.clipscore": clipscore,
            "vocabulary.tokens": rng.integers(20, 60, len(samples)).astype(float),
            "hallucination.fraction_50": rng.random(len(samples)) * 0.3,
        },
        index=samples.index,
    )
    measures.loc[samples.index[:5], "alignment.clipscore"] = np.nan
    return samples, measures


def test_gaps_rate_interval_and_test(gap_input: tuple[gpd.GeoDataFrame, pd.DataFrame]) -> None:
    samples, measures = gap_input
    result, columns = run_coverage(samples, sample_columns=measures)
    table = result.tables["coverage.gaps"].frame
    row = table[
        (table["column"] == "hallucination.hallucinated")
        & (table["dimension"] == "continent")
        & (table["group"] == "Europe")
    ].iloc[0]

    events = measures["hallucination.hallucinated"] > 0
    in_group = (columns["continent"] == "Europe").reindex(measures.index)
    has_group = columns["continent"].notna().reindex(measures.index)
    k, n = int(events[in_group].sum()), int(in_group.sum())
    rest_k, rest_n = int(events[has_group & ~in_group].sum()), int((has_group & ~in_group).sum())
    z = stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))

    assert row["samples"] == n
    assert row["value"] == pytest.approx(p)
    assert row["ci_low"] == pytest.approx(centre - half)
    assert row["ci_high"] == pytest.approx(centre + half)
    assert row["rest_value"] == pytest.approx(rest_k / rest_n)
    fisher = stats.fisher_exact([[k, n - k], [rest_k, rest_n - rest_k]]).pvalue
    assert row["p_value"] == pytest.approx(fisher)
    assert bool(row["worse"])
    codes = [(f.code, f.message) for f in result.findings]
    assert any(code == "quality-gap" and "Europe" in message for code, message in codes)


def test_gaps_mean_interval_and_welch(gap_input: tuple[gpd.GeoDataFrame, pd.DataFrame]) -> None:
    samples, measures = gap_input
    result, columns = run_coverage(samples, sample_columns=measures)
    table = result.tables["coverage.gaps"].frame
    row = table[
        (table["column"] == "alignment.clipscore")
        & (table["dimension"] == "continent")
        & (table["group"] == "Europe")
    ].iloc[0]

    values = measures["alignment.clipscore"]
    continent = columns["continent"].reindex(measures.index)
    group = values[(continent == "Europe") & values.notna()].to_numpy()
    rest = values[(continent != "Europe") & continent.notna() & values.notna()].to_numpy()
    half = stats.t.ppf(0.975, len(group) - 1) * group.std(ddof=1) / math.sqrt(len(group))

    assert row["samples"] == len(group)
    assert row["value"] == pytest.approx(group.mean())
    assert row["ci_low"] == pytest.approx(group.mean() - half)
    assert row["ci_high"] == pytest.approx(group.mean() + half)
    welch = stats.ttest_ind(group, rest, equal_var=False).pvalue
    assert row["p_value"] == pytest.approx(welch, rel=1e-6)


def test_gaps_benjamini_hochberg(gap_input: tuple[gpd.GeoDataFrame, pd.DataFrame]) -> None:
    samples, measures = gap_input
    result, _ = run_coverage(samples, sample_columns=measures)
    table = result.tables["coverage.gaps"].frame
    tested = table[table["p_value"].notna()]
    p = tested["p_value"].to_numpy()
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted_sorted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    adjusted = np.empty_like(p)
    adjusted[order] = adjusted_sorted
    assert tested["p_adjusted"].to_numpy() == pytest.approx(adjusted)
    small = table[table["samples"] < 30]
    assert small["p_value"].isna().all()


def test_gaps_urban_rural_from_builtup(
    gap_input: tuple[gpd.GeoDataFrame, pd.DataFrame],
) -> None:
    samples, measures = gap_input
    result, _ = run_coverage(samples, sample_columns=measures)
    table = result.tables["coverage.gaps"].frame
    urban = table[
        (table["column"] == "vocabulary.tokens") & (table["dimension"] == "urban_rural")
    ].set_index("group")["samples"]
    cut = load_rules()["coverage"]["gaps"]["urban_builtup_fraction"]
    assert urban["urban"] == int((measures["hallucination.fraction_50"] >= cut).sum())
    assert urban["rural"] == int((measures["hallucination.fraction_50"] < cut).sum())


def test_gaps_neutral_measure_gives_info(
    gap_input: tuple[gpd.GeoDataFrame, pd.DataFrame],
) -> None:
    samples, measures = gap_input
    measures = measures.copy()
    _, columns = run_coverage(samples)
    europe = (columns["continent"] == "Europe").reindex(measures.index).to_numpy()
    measures["vocabulary.tokens"] = np.where(europe, 80.0, 40.0) + np.arange(len(samples)) % 5
    result, _ = run_coverage(samples, sample_columns=measures)
    info = [f for f in result.findings if f.code == "group-difference"]
    assert any(f.severity == "info" and "continent Europe" in f.message for f in info)
    warnings_ = [f for f in result.findings if f.code == "quality-gap"]
    assert all("caption length" not in f.message for f in warnings_)


def test_gaps_single_group_not_tested() -> None:
    samples = make_samples([shapely.Point(2.35, 48.85)] * 40, times=["2021-01-05"] * 40)
    measures = pd.DataFrame(
        {"alignment.clipscore": np.linspace(20.0, 30.0, 40)}, index=samples.index
    )
    result, _ = run_coverage(samples, sample_columns=measures)
    table = result.tables["coverage.gaps"].frame
    europe = table[table["group"] == "Europe"].iloc[0]
    assert europe["samples"] == 40
    assert europe["value"] == pytest.approx(25.0)
    assert np.isnan(europe["rest_value"])
    assert table["p_value"].isna().all()
    assert not any(f.code == "quality-gap" for f in result.findings)


def test_gaps_skipped_without_columns(val_audit: tuple[AnalyzerResult, pd.DataFrame]) -> None:
    result, _ = val_audit
    assert "coverage.gaps" not in result.tables
    assert "alignment.clipscore" in result.settings["gap_parts_skipped"]


# --- chunking ---------------------------------------------------------------------


def test_chunk_size_does_not_change_results(
    gap_input: tuple[gpd.GeoDataFrame, pd.DataFrame],
) -> None:
    samples, measures = gap_input
    samples = samples.iloc[:400].copy()
    words = ["a winter field", "summer crops", "snow-covered hills", "a town", "dry season"]
    samples["caption"] = [words[i % len(words)] for i in range(len(samples))]
    measures = measures.loc[samples.index]
    single, single_columns = run_coverage(samples, chunk_size=100_000, sample_columns=measures)
    chunked, chunked_columns = run_coverage(samples, chunk_size=7, sample_columns=measures)

    assert single.metrics.keys() == chunked.metrics.keys()
    for key, metric in single.metrics.items():
        if metric.value is None:
            assert chunked.metrics[key].value is None
        else:
            assert chunked.metrics[key].value == pytest.approx(metric.value, rel=1e-12), key
    assert single.tables.keys() == chunked.tables.keys()
    for key, table in single.tables.items():
        pd.testing.assert_frame_equal(table.frame, chunked.tables[key].frame, rtol=1e-12)
    assert [(f.code, f.count, f.examples) for f in single.findings] == [
        (f.code, f.count, f.examples) for f in chunked.findings
    ]
    pd.testing.assert_frame_equal(single_columns, chunked_columns)


# --- rules and report -------------------------------------------------------------


def test_invalid_rules_name_the_file() -> None:
    rules = load_rules()
    rules["coverage"] = {**rules["coverage"], "grid": {"cell_km": -5}}
    with pytest.raises(InputError, match=r"rules/coverage.yaml: grid.cell_km must be positive"):
        run_coverage(make_samples([shapely.Point(0, 0)]), rules=rules)


class _MarkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.marks: list[str] = []
        self._in_mark = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_mark = tag == "mark"

    def handle_endtag(self, tag: str) -> None:
        self._in_mark = False

    def handle_data(self, data: str) -> None:
        if self._in_mark:
            self.marks.append(data)


def test_report_marks_mismatched_words() -> None:
    samples = make_samples(
        [shapely.Point(10, 50), shapely.Point(11, 51)],
        captions=["<b>winter</b> fields", "summer crops"],
        times=["2021-07-15", "2021-07-15"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = run_audit(
            SampleSet(samples, "synthetic", "table", len(samples)),
            AuditOptions(analyzers=["coverage"]),
        )
    html = render_report(audit.result)
    parser = _MarkCollector()
    parser.feed(html)
    assert parser.marks == ["winter"]
    assert "<b>winter</b>" not in html
