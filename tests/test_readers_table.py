import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from eoaudit import ReadOptions, read_dataset
from eoaudit.errors import InputError
from eoaudit.readers import detect_format

LANDSAT_REGEX = ("image_path", r"(\d{4}-\d{2}-\d{2})-raw")


@pytest.fixture(scope="module")
def landsat(shared_data: Path):
    path = shared_data / "landsat30-au" / "captioning_ft_full.csv"
    return read_dataset(path, ReadOptions(time_regex=LANDSAT_REGEX))


def test_landsat_loads_all_rows_with_points_and_dates(landsat, shared_data):
    raw = pd.read_csv(shared_data / "landsat30-au" / "captioning_ft_full.csv")
    samples = landsat.samples
    assert landsat.format == "table"
    assert len(samples) == len(raw) == 1005
    assert samples.geometry.notna().all()
    assert (samples.geom_type == "Point").all()
    assert samples["time"].notna().all()
    assert str(samples["time"].dt.tz) == "UTC"
    assert samples.crs.to_epsg() == 4326


def test_landsat_ids_captions_and_passthrough(landsat, shared_data):
    raw = pd.read_csv(shared_data / "landsat30-au" / "captioning_ft_full.csv")
    samples = landsat.samples
    assert samples["sample_id"].tolist() == raw["image_id"].tolist()
    assert samples["caption"].tolist() == raw["caption"].tolist()
    assert samples["geohash"].tolist() == raw["geohash"].tolist()
    assert samples["image"].tolist() == raw["image_path"].tolist()


def test_landsat_dates_match_image_paths(landsat, shared_data):
    raw = pd.read_csv(shared_data / "landsat30-au" / "captioning_ft_full.csv")
    # Dates written independently from the path text: ...-2020-01-07-raw.png
    expected = raw["image_path"].str.slice(-18, -8)
    assert samples_dates(landsat.samples) == expected.tolist()


def samples_dates(samples):
    return samples["time"].dt.strftime("%Y-%m-%d").tolist()


def test_geohash_points_lie_in_documented_range(landsat):
    bounds = landsat.samples.total_bounds
    # Range of the decoded centres stated by the data's SOURCE.md.
    assert bounds[0] == pytest.approx(113.16, abs=0.01)
    assert bounds[1] == pytest.approx(-43.07, abs=0.01)
    assert bounds[2] == pytest.approx(153.48, abs=0.01)
    assert bounds[3] == pytest.approx(-10.70, abs=0.01)


def test_geohash_decoding_matches_reference_cell():
    # u4pruyd is the textbook example: centre about 57.649 N, 10.407 E.
    frame = pd.DataFrame({"caption": ["a"], "geohash": ["u4pruyd"]})
    samples = frame_samples(frame)
    point = samples.geometry.iloc[0]
    assert point.y == pytest.approx(57.649, abs=0.001)
    assert point.x == pytest.approx(10.407, abs=0.001)


def frame_samples(frame: pd.DataFrame, tmp: Path | None = None, **options):
    import tempfile

    folder = Path(tempfile.mkdtemp()) if tmp is None else tmp
    path = folder / "table.csv"
    frame.to_csv(path, index=False)
    return read_dataset(path, ReadOptions(**options)).samples


def test_rs5m_captions_load_without_location(shared_data):
    dataset = read_dataset(shared_data / "rs5m-samples" / "rs3_dump.csv")
    assert len(dataset.samples) == 10_000
    assert dataset.samples.geometry.isna().all()
    assert dataset.samples["time"].isna().all()
    # `name` is unique, so it becomes the sample id.
    assert dataset.samples["sample_id"].iloc[0] == "fmow_stadium_211_3_msrgb.jpg"


def test_lat_lon_columns_build_points(tmp_path):
    frame = pd.DataFrame(
        {"text": ["a", "b"], "latitude": [10.5, -33.0], "longitude": [20.25, 151.2]}
    )
    samples = frame_samples(frame, tmp_path)
    assert samples.geometry.iloc[0].equals(shapely.Point(20.25, 10.5))
    assert samples.geometry.iloc[1].equals(shapely.Point(151.2, -33.0))
    assert samples["caption"].tolist() == ["a", "b"]
    assert samples["sample_id"].tolist() == ["1", "2"]


def test_named_columns_override_detection(tmp_path):
    frame = pd.DataFrame(
        {"desc": ["x"], "key": ["k1"], "y_deg": [1.0], "x_deg": [2.0], "when": ["2021-03-04"]}
    )
    samples = frame_samples(
        frame,
        tmp_path,
        caption_column="desc",
        id_column="key",
        lat_column="y_deg",
        lon_column="x_deg",
        time_column="when",
    )
    assert samples["sample_id"].tolist() == ["k1"]
    assert samples.geometry.iloc[0].equals(shapely.Point(2.0, 1.0))
    assert samples["time"].iloc[0] == pd.Timestamp("2021-03-04", tz="UTC")


def test_dayfirst_dates(tmp_path):
    frame = pd.DataFrame({"caption": ["a", "b"], "date": ["03/04/2021", "31/12/2020"]})
    samples = frame_samples(frame, tmp_path, dayfirst=True)
    assert samples["time"].tolist() == [
        pd.Timestamp("2021-04-03", tz="UTC"),
        pd.Timestamp("2020-12-31", tz="UTC"),
    ]


def test_iso_times_with_offsets_become_utc(tmp_path):
    frame = pd.DataFrame({"caption": ["a"], "time": ["2021-06-01T12:00:00+02:00"]})
    samples = frame_samples(frame, tmp_path)
    assert samples["time"].iloc[0] == pd.Timestamp("2021-06-01T10:00:00", tz="UTC")


def test_wkt_footprints(tmp_path):
    polygon = shapely.box(10.0, 45.0, 10.03, 45.02)
    frame = pd.DataFrame({"caption": ["a"], "wkt": [polygon.wkt]})
    samples = frame_samples(frame, tmp_path)
    assert samples.geometry.iloc[0].equals(polygon)


def test_jsonl_table(tmp_path):
    path = tmp_path / "captions.jsonl"
    records = [
        {"id": "s1", "caption": "fields", "lat": 1, "lon": 2, "time": "2020-01-01"},
        {"id": "s2", "caption": "forest", "lat": 3, "lon": 4, "time": "2020-02-01"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    assert detect_format(path) == "table"
    samples = read_dataset(path).samples
    assert samples["sample_id"].tolist() == ["s1", "s2"]
    assert samples.geometry.iloc[1].equals(shapely.Point(4, 3))


def test_geoparquet_is_reprojected_to_lon_lat(tmp_path):
    point_3857 = shapely.Point(1113194.9, 0.0)  # 10 degrees east on the equator
    frame = gpd.GeoDataFrame({"caption": ["a"]}, geometry=[point_3857], crs="EPSG:3857")
    path = tmp_path / "samples.parquet"
    frame.to_parquet(path)
    samples = read_dataset(path).samples
    assert samples.geometry.iloc[0].x == pytest.approx(10.0, abs=1e-6)
    assert samples.geometry.iloc[0].y == pytest.approx(0.0, abs=1e-6)


def test_time_regex_without_group_is_rejected(tmp_path):
    frame = pd.DataFrame({"caption": ["a"], "path": ["x-2020-01-01.png"]})
    with pytest.raises(InputError, match="needs a group"):
        frame_samples(frame, tmp_path, time_regex=("path", r"\d{4}-\d{2}-\d{2}"))


def test_time_regex_on_missing_column_is_rejected(tmp_path):
    frame = pd.DataFrame({"caption": ["a"]})
    with pytest.raises(InputError, match="'image_path', which is not in the table"):
        frame_samples(frame, tmp_path, time_regex=LANDSAT_REGEX)
