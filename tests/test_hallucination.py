"""Hallucination analyzer end to end: captions written for footprints on real and generated tiles.

The real tile N00E006 (São Tomé) has no snow and ice (70) and no moss and
lichen (100) anywhere, so claims of those are hallucinated; open sea is value
0, which the default sea rule counts as water.
"""

from __future__ import annotations

import json
import pickle
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from exactextract import exact_extract
from shapely.geometry import Polygon, box

from eoaudit import AuditOptions, run_audit
from eoaudit.engine import Audit
from eoaudit.errors import InputError
from eoaudit.report import render_report
from eoaudit.samples import BadRows, SampleSet, build_samples

REAL_TILE = "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"


def ssl4eo_footprint(lon: float, lat: float) -> Polygon:
    """Return a 2640 m UTM 32N square with its south-west corner at (lon, lat), in EPSG:4326."""
    to_utm = pyproj.Transformer.from_crs(4326, 32632, always_xy=True)
    to_wgs84 = pyproj.Transformer.from_crs(32632, 4326, always_xy=True)
    x, y = to_utm.transform(lon, lat)
    return shapely.transform(
        shapely.segmentize(box(x, y, x + 2640, y + 2640), 100),
        lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1])),
    )


# sample id: (footprint, caption, [(mention text, class value, expected verdict)])
REAL_CASES: dict[str, tuple[Any, str, list[tuple[str, int | None, str]]]] = {
    "forest": (
        ssl4eo_footprint(6.58, 0.22),
        "Dense forest on the hills; there are no buildings. A golf course may lie past the trees.",
        [
            ("forest", 10, "correct"),
            ("buildings", 50, "negated"),
            ("golf course", None, "unverifiable"),
            ("trees", 10, "correct"),
        ],
    ),
    "town": (
        ssl4eo_footprint(6.715, 0.325),
        "A town with many buildings beside the sea, next to a glacier.",
        [
            ("town", 50, "correct"),
            ("buildings", 50, "correct"),
            ("sea", 80, "correct"),
            ("glacier", 70, "hallucinated"),
        ],
    ),
    "sea": (
        ssl4eo_footprint(7.5, 1.0),
        "Open ocean with no land in sight, and a small island covered in tundra.",
        [("ocean", 80, "correct"), ("tundra", 100, "hallucinated")],
    ),
    "coast": (
        ssl4eo_footprint(6.74, 0.27),
        "The coastline where forest meets the sea, with grassland and possibly a lake.",
        [
            ("forest", 10, "correct"),
            ("sea", 80, "correct"),
            ("grassland", 30, "correct"),
            ("lake", 80, "correct"),
        ],
    ),
    "edge": (
        ssl4eo_footprint(6.5, -0.007),
        "Open water near the southern tip of an island, without any houses.",
        [("Open water", 80, "correct"), ("houses", 50, "negated")],
    ),
    "nowhere": (
        None,
        "A forest and a lake.",
        [("forest", 10, "unverifiable"), ("lake", 80, "unverifiable")],
    ),
    "far": (
        box(45.1, 45.1, 45.12, 45.12),
        "Farmland.",
        [("Farmland", 40, "unverifiable")],
    ),
}


def sample_set(cases: dict[str, tuple[Any, str, Any]], **columns: list[Any]) -> SampleSet:
    frame = pd.DataFrame(
        {
            "sample_id": list(cases),
            "caption": [caption for _, caption, _ in cases.values()],
            **columns,
        }
    )
    geometry = gpd.GeoSeries([footprint for footprint, _, _ in cases.values()], crs="EPSG:4326")
    samples = build_samples(
        frame, geometry=geometry, source="test", bad_rows=BadRows("test", "error")
    )
    return SampleSet(samples=samples, source="test", format="table", rows_read=len(frame))


def audit(dataset: SampleSet, worldcover: Path | str, **options: Any) -> Audit:
    return run_audit(
        dataset,
        AuditOptions(
            analyzers=["hallucination"],
            analyzer_options={"worldcover": str(worldcover)},
            **options,
        ),
    )


@pytest.fixture(scope="module")
def real_folder(shared_data: Path) -> Path:
    return shared_data / "esa-worldcover"


@pytest.fixture(scope="module")
def real_audit(real_folder: Path) -> Audit:
    return audit(sample_set(REAL_CASES), real_folder)


def per_sample(result: Audit) -> pd.DataFrame:
    return result.samples.set_index("sample_id")


def metric(result: Audit, name: str) -> Any:
    return result.result.metrics[f"hallucination.{name}"].value


def verdicts(result: Audit, sample_id: str) -> list[tuple[str, int | None, str]]:
    samples = per_sample(result)
    caption = samples.loc[sample_id, "caption"]
    found = json.loads(samples.loc[sample_id, "hallucination.mentions"])
    return [(caption[start:end], value, verdict) for start, end, value, verdict in found]


@pytest.mark.parametrize("sample_id", list(REAL_CASES))
def test_real_tile_verdicts(real_audit: Audit, sample_id: str) -> None:
    assert verdicts(real_audit, sample_id) == REAL_CASES[sample_id][2]


def test_real_tile_chair_metrics(real_audit: Audit) -> None:
    with_data = [
        expected for key, (_, _, expected) in REAL_CASES.items() if key not in ("nowhere", "far")
    ]
    everything = [mention for _, _, expected in REAL_CASES.values() for mention in expected]
    hallucinated = sum(v == "hallucinated" for case in with_data for _, _, v in case)
    verifiable = sum(v in ("correct", "hallucinated") for case in with_data for _, _, v in case)
    captions_hallucinated = sum(any(v == "hallucinated" for _, _, v in case) for case in with_data)
    captions_verifiable = sum(
        any(v in ("correct", "hallucinated") for _, _, v in case) for case in with_data
    )

    assert metric(real_audit, "chair_i") == pytest.approx(hallucinated / verifiable)
    assert metric(real_audit, "chair_s") == pytest.approx(
        captions_hallucinated / captions_verifiable
    )
    unverifiable = sum(v == "unverifiable" for _, _, v in everything)
    assert metric(real_audit, "unverifiable_rate") == pytest.approx(unverifiable / len(everything))
    assert metric(real_audit, "samples_without_worldcover") == 2


def test_real_tile_per_sample_columns(real_audit: Audit, real_folder: Path) -> None:
    samples = per_sample(real_audit)
    assert samples.loc["nowhere", "hallucination.worldcover_status"] == "no-data"
    assert samples.loc["far", "hallucination.worldcover_status"] == "no-data"
    assert np.isnan(samples.loc["far", "hallucination.fraction_10"])
    assert samples.loc["town", "hallucination.hallucinated"] == 1
    assert samples.loc["town", "hallucination.verifiable_mentions"] == 4

    # Built-up share of the town footprint, against exactextract on the same polygon.
    town = gpd.GeoDataFrame(geometry=[REAL_CASES["town"][0]], crs="EPSG:4326")
    table = exact_extract(str(real_folder / REAL_TILE), town, ["unique", "frac"], output="pandas")
    shares = dict(zip(table.loc[0, "unique"], table.loc[0, "frac"], strict=True))
    assert samples.loc["town", "hallucination.fraction_50"] == pytest.approx(shares[50], abs=0.005)
    fractions = samples.loc[
        "coast",
        [f"hallucination.fraction_{v}" for v in (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)],
    ]
    assert float(fractions.sum()) == pytest.approx(1.0)


def test_real_tile_omissions(real_audit: Audit, real_folder: Path) -> None:
    ids = ["forest", "town", "sea", "coast", "edge"]
    polygons = gpd.GeoDataFrame(geometry=[REAL_CASES[i][0] for i in ids], crs="EPSG:4326")
    # exactextract leaves nodata (0, open sea) out; inside the tile it counts as water here.
    table = exact_extract(
        str(real_folder / REAL_TILE), polygons, ["unique", "frac"], output="pandas"
    )
    main_total = 0
    omitted_total = 0
    for position, sample_id in enumerate(ids):
        shares = dict(zip(table.loc[position, "unique"], table.loc[position, "frac"], strict=True))
        if not shares:
            shares = {80: 1.0}
        named = {value for _, value, verdict in REAL_CASES[sample_id][2] if verdict != "negated"}
        main = {int(value) for value, share in shares.items() if share >= 0.25}
        expected = sorted(main - named)
        found = json.loads(per_sample(real_audit).loc[sample_id, "hallucination.omitted"])
        assert found == expected, sample_id
        main_total += len(main)
        omitted_total += len(expected)
    assert metric(real_audit, "omission_rate") == pytest.approx(omitted_total / main_total)


def test_real_tile_tables(real_audit: Audit) -> None:
    tables = real_audit.result.analyzers["hallucination"].tables
    bins = tables["hallucination.hallucinations_per_caption"].frame
    assert bins["captions"].tolist() == [3, 2, 0, 0]
    per_class = tables["hallucination.per_class"].frame.set_index("class")
    assert per_class.loc[70, "hallucinated"] == 1
    assert per_class.loc[100, "hallucinated"] == 1
    assert per_class.loc[70, "precision"] == 0
    # forest and coast claim tree cover, both confirmed.
    assert per_class.loc[10, "correct"] == 2
    confusion = tables["hallucination.confusion"].frame
    glacier = confusion[confusion["claimed"] == 70]
    assert glacier["captions"].sum() == 1


def test_hallucination_finding(real_audit: Audit) -> None:
    findings = {f.code: f for f in real_audit.result.analyzers["hallucination"].findings}
    assert findings["landcover-hallucinated"].count == 2
    assert set(findings["landcover-hallucinated"].examples) == {"town", "sea"}
    assert findings["worldcover-no-data"].count == 2


def test_chunk_size_does_not_change_result(real_folder: Path, real_audit: Audit) -> None:
    reference = real_audit.result.to_dict()["analyzers"]["hallucination"]
    for chunk_size in (1, 3):
        other = audit(sample_set(REAL_CASES), real_folder, chunk_size=chunk_size)
        assert other.result.to_dict()["analyzers"]["hallucination"] == reference
        columns = [c for c in other.samples.columns if c.startswith("hallucination.")]
        pd.testing.assert_frame_equal(per_sample(other)[columns], per_sample(real_audit)[columns])


def test_state_and_analyzer_pickle(real_folder: Path) -> None:
    from eoaudit.analyzers import AuditContext
    from eoaudit.analyzers.hallucination import HallucinationAnalyzer
    from eoaudit.ruleset import load_rules

    context = AuditContext(rules=load_rules(), options={"worldcover": str(real_folder)})
    analyzer = HallucinationAnalyzer(context)
    chunk = sample_set(REAL_CASES).samples
    state = analyzer.map_chunk(chunk).state
    copy = pickle.loads(pickle.dumps(analyzer))
    assert pickle.loads(pickle.dumps(state)) == state
    assert copy.map_chunk(chunk).state == state


def test_skipped_without_worldcover() -> None:
    result = run_audit(sample_set(REAL_CASES), AuditOptions(analyzers=["hallucination"]))
    section = result.result.analyzers["hallucination"]
    assert section.status == "skipped"
    assert section.reason == "no WorldCover source, pass --worldcover"


def test_bad_worldcover_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"--worldcover {tmp_path}: no tile named"):
        audit(sample_set(REAL_CASES), tmp_path)


def test_report_highlights_worst_captions(real_audit: Audit) -> None:
    class Marks(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.titles: list[str] = []
            self.bars = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "mark":
                self.titles.append(found.get("title") or "")
            if tag == "div" and "class-bar" in (found.get("class") or ""):
                self.bars += 1

    page = Marks()
    page.feed(render_report(real_audit.result))
    assert "hallucinated: class 70" in page.titles
    assert "hallucinated: class 100" in page.titles
    assert page.bars == 2


# Generated tiles: snow season, cloud bins, cache ------------------------------


def test_snow_claim_season(test_data: Path) -> None:
    footprint = box(6.5, 45.5, 6.52, 45.52)  # grassland tile N45E006
    caption = "Snow-covered fields and a meadow."
    cases = {"january": (footprint, caption, None), "july": (footprint, caption, None)}
    times = ["2021-01-15T10:00:00Z", "2021-07-15T10:00:00Z"]
    result = audit(sample_set(cases, time=times), test_data / "worldcover")
    assert verdicts(result, "january") == [
        ("Snow-covered", 70, "unverifiable"),
        ("fields", 40, "hallucinated"),
        ("meadow", 30, "correct"),
    ]
    assert verdicts(result, "july")[0] == ("Snow-covered", 70, "hallucinated")
    snow = result.result.analyzers["hallucination"].tables["hallucination.snow_claims"].frame
    assert dict(zip(snow["verdict"], snow["mentions"], strict=True)) == {
        "correct": 0,
        "hallucinated": 1,
        "unverifiable": 1,
    }


def test_rates_by_cloud_fraction(test_data: Path) -> None:
    cases = {
        "clear": (box(0.1, 0.1, 0.12, 0.12), "Buildings and a lake.", None),
        "cloudy": (box(0.2, 0.2, 0.22, 0.22), "A town.", None),
        "overcast": (box(0.3, 0.3, 0.32, 0.32), "Forest.", None),
    }
    result = audit(sample_set(cases, cloud_fraction=[0.02, 0.45, 1.0]), test_data / "worldcover")
    table = result.result.analyzers["hallucination"].tables["hallucination.by_cloud_fraction"].frame
    assert table["cloud fraction"].tolist() == ["0 to 0.1", "0.3 to 0.6", "0.6 to 1"]
    assert table["chair_i"].tolist() == [0.5, 0.0, 1.0]


def test_cache_skips_raster_reads(tmp_path: Path, test_data: Path) -> None:
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for tile in (test_data / "worldcover").glob("*_2021_*_Map.tif"):
        shutil.copy(tile, tiles / tile.name)
    template = str(tiles / "ESA_WorldCover_10m_{year}_{version}_{tile}_Map.tif")
    cases = {"town": (box(0.1, 0.1, 0.12, 0.12), "A town.", None)}
    cache = tmp_path / "cache"

    first = audit(sample_set(cases), template, cache_dir=cache)
    assert per_sample(first).loc["town", "hallucination.fraction_50"] == pytest.approx(1.0)

    # With the tiles gone, only the cache can give the fractions.
    shutil.rmtree(tiles)
    cached = audit(sample_set(cases), template, cache_dir=cache)
    assert per_sample(cached).loc["town", "hallucination.fraction_50"] == pytest.approx(1.0)
    uncached = audit(sample_set(cases), template, cache_dir=tmp_path / "empty")
    assert per_sample(uncached).loc["town", "hallucination.worldcover_status"] == "no-data"


def test_cache_not_stale_after_tile_change(tmp_path: Path, test_data: Path) -> None:
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for tile in (test_data / "worldcover").glob("*_2021_*_Map.tif"):
        shutil.copy(tile, tiles / tile.name)
    cases = {"town": (box(0.1, 0.1, 0.12, 0.12), "A town.", None)}
    cache = tmp_path / "cache"
    first = audit(sample_set(cases), tiles, cache_dir=cache)
    assert per_sample(first).loc["town", "hallucination.fraction_50"] == pytest.approx(1.0)

    # Replace N00E000 (built-up) by a copy of the tree-cover tile, renamed and re-georeferenced.
    import rasterio

    target = tiles / "ESA_WorldCover_10m_2021_v200_N00E000_Map.tif"
    with rasterio.open(target, "r+") as dataset:
        pixels = dataset.read(1)
        pixels[:] = 10
        dataset.write(pixels, 1)
    second = audit(sample_set(cases), tiles, cache_dir=cache)
    assert per_sample(second).loc["town", "hallucination.fraction_50"] == 0
    assert per_sample(second).loc["town", "hallucination.fraction_10"] == pytest.approx(1.0)
