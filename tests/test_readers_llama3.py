import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from helpers import write_ssl4eo_zarr_zip

from eoaudit import ReadOptions, read_dataset
from eoaudit.errors import InputError
from eoaudit.images import parse_image_ref, read_chip, read_zarr_metadata
from eoaudit.readers import detect_format, llama3_ssl4eo

CHUNK = "ssl4eos12_val_seasonal_data_000001"


@pytest.fixture(scope="module")
def metadata_path(shared_data):
    return shared_data / "ssl4eo-s12-v1.1-meta" / "val_metadata.parquet"


@pytest.fixture(scope="module")
def fixture_dir(test_data):
    return test_data / "llama3_ssl4eo"


def test_chunk_folder_joins_metadata_on_padded_ids(fixture_dir, metadata_path):
    raw = pd.concat(
        [pd.read_csv(p) for p in sorted(fixture_dir.glob("*_seasonal_data_*.csv"))],
        ignore_index=True,
    )
    assert detect_format(fixture_dir) == "llama3-ssl4eo"
    dataset = read_dataset(fixture_dir, ReadOptions(metadata=metadata_path))
    samples = dataset.samples
    assert len(samples) == len(raw) == 512

    # The integer 2582 with time_id 1 is the v1.1 acquisition '0002582_1'.
    expected_ids = [f"{s:07d}_{t}" for s, t in zip(raw["sample_id"], raw["time_id"], strict=True)]
    assert samples["sample_id"].tolist() == expected_ids
    assert samples["location_id"].tolist() == [f"{s:07d}" for s in raw["sample_id"]]

    metadata = gpd.read_parquet(metadata_path)
    for sample_id in ("0002582_1", expected_ids[-1]):
        row = metadata.loc[sample_id]
        sample = samples.loc[sample_id]
        assert sample.geometry.equals(row.geometry)
        assert sample["time"] == pd.Timestamp(row["time"], tz="UTC")
        assert sample["tile_id"] == row["tile_id"]
    assert {"question_1", "question_2", "question_3", "classes", "tags", "names"} <= set(samples)
    assert not [f for f in dataset.findings if f.code == "metadata-unmatched"]


def test_metadata_index_matches_full_read(metadata_path, tmp_path, monkeypatch):
    """Every acquisition looked up through the sorted index equals the row GeoPandas reads."""
    copy = tmp_path / "meta.parquet"
    metadata = gpd.read_parquet(metadata_path)
    # A duplicated key keeps its first row, as the full-table join did.
    duplicate = metadata.iloc[[10]].assign(tile_id="second copy")
    gpd.GeoDataFrame(pd.concat([metadata, duplicate]), crs=metadata.crs).to_parquet(copy)
    monkeypatch.setattr(llama3_ssl4eo, "INDEX_ROW_GROUP", 500)
    llama3_ssl4eo._metadata_index.cache_clear()
    stat = copy.stat()
    index = llama3_ssl4eo._metadata_index(copy, stat.st_size, stat.st_mtime_ns)
    llama3_ssl4eo._metadata_index.cache_clear()

    keys = (metadata["sample_id"].str.zfill(7) + "_" + metadata["time_id"].astype(str)).tolist()
    rng = np.random.default_rng(3)
    chosen = [keys[i] for i in rng.choice(len(keys), 700, replace=False)] + ["9999999_0"]
    found = index.lookup(chosen)

    assert len(index.largest) == -(-(len(keys) + 1) // 500)
    assert sorted(found.index) == sorted(chosen[:-1])
    expected = metadata.set_index(pd.Index(keys)).loc[found.index]
    assert all(a.equals(b) for a, b in zip(found["_geometry"], expected.geometry, strict=True))
    assert (
        found["_time"].to_numpy() == pd.to_datetime(expected["time"], utc=True).to_numpy()
    ).all()
    assert (found["tile_id"].to_numpy() == expected["tile_id"].to_numpy()).all()
    assert index.lookup([keys[10]])["tile_id"].item() == metadata["tile_id"].iloc[10]


def test_split_parquet_reads_like_chunks(fixture_dir, metadata_path):
    assert detect_format(fixture_dir / "val.parquet") == "llama3-ssl4eo"
    from_chunks = read_dataset(fixture_dir, ReadOptions(metadata=metadata_path)).samples
    from_parquet = read_dataset(
        fixture_dir / "val.parquet", ReadOptions(metadata=metadata_path)
    ).samples
    assert from_parquet["sample_id"].tolist() == from_chunks["sample_id"].tolist()
    assert from_parquet["caption"].tolist() == from_chunks["caption"].tolist()
    assert from_parquet.geometry.equals(from_chunks.geometry)


def test_unmatched_captions_are_kept_and_counted(fixture_dir, metadata_path, tmp_path):
    folder = tmp_path / "captions"
    folder.mkdir()
    frame = pd.read_csv(fixture_dir / f"{CHUNK}.csv")
    frame.loc[:2, "sample_id"] = [9999991, 9999992, 9999993]
    frame.to_csv(folder / f"{CHUNK}.csv", index=False)

    dataset = read_dataset(folder, ReadOptions(metadata=metadata_path))
    assert len(dataset.samples) == 256
    finding = next(f for f in dataset.findings if f.code == "metadata-unmatched")
    assert finding.count == 3
    assert finding.examples == ["9999991_0", "9999992_1", "9999993_2"]
    assert dataset.samples.loc["9999991_0"].geometry is None
    assert dataset.samples.geometry.notna().sum() == 253


def test_without_metadata_samples_have_no_footprints(fixture_dir):
    dataset = read_dataset(fixture_dir)
    assert dataset.samples.geometry.isna().all()
    assert "metadata-not-given" in {f.code for f in dataset.findings}


def test_non_integer_sample_id_is_a_bad_row(fixture_dir, tmp_path):
    folder = tmp_path / "captions"
    folder.mkdir()
    frame = pd.read_csv(fixture_dir / f"{CHUNK}.csv")
    frame["sample_id"] = frame["sample_id"].astype(str)
    frame.loc[5, "sample_id"] = "abc"
    frame.to_csv(folder / f"{CHUNK}.csv", index=False)
    with pytest.raises(InputError, match=f"{CHUNK}.csv row 6: sample_id='abc'"):
        read_dataset(folder, ReadOptions(on_bad_rows="error"))
    dataset = read_dataset(folder)
    assert len(dataset.samples) == 255


@pytest.fixture()
def chips_dir(fixture_dir, metadata_path, tmp_path):
    """Zarr Zip chips for the first 8 locations of chunk 000001, written by zarr 3 as format 2."""
    metadata = gpd.read_parquet(metadata_path)
    rows = metadata[metadata["file"] == f"{CHUNK}.zarr.zip"]
    locations = list(dict.fromkeys(rows["sample_id"]))[:8]
    centres, epsg_codes, times = [], [], []
    for location in locations:
        acquisitions = rows[rows["sample_id"] == location].sort_values("time_id")
        centroid = acquisitions.geometry.iloc[0].centroid
        centres.append((centroid.y, centroid.x))
        epsg_codes.append(int(acquisitions["tile_crs"].iloc[0]))
        times.append(acquisitions["time"].to_numpy())
    masks = np.zeros((len(locations), 4, 16, 16), dtype=np.uint8)
    masks[0, 1, :4, :] = 1  # a quarter of location 0, time 1 is cloud
    masks[2, 3, :, :] = 3  # all of location 2, time 3 is cloud shadow
    folder = tmp_path / "images"
    (folder / "S2L2A").mkdir(parents=True)
    write_ssl4eo_zarr_zip(
        folder / "S2L2A" / f"{CHUNK}.zarr.zip",
        locations,
        centres,
        epsg_codes,
        np.array(times),
        cloud_masks=masks,
    )
    return folder, locations, centres, epsg_codes


def test_zarr_zip_opens_with_zarr3_as_format2(chips_dir):
    folder, locations, centres, epsg_codes = chips_dir
    table = read_zarr_metadata(folder / "S2L2A" / f"{CHUNK}.zarr.zip")
    assert len(table) == 8 * 4
    assert table["sample_id"].iloc[0] == f"{locations[0]}_0"
    assert table["center_lat"].iloc[0] == pytest.approx(centres[0][0])
    assert table["crs"].iloc[4] == epsg_codes[1]


def test_chips_add_image_refs_centres_and_cloud_fraction(fixture_dir, metadata_path, chips_dir):
    folder, locations, centres, epsg_codes = chips_dir
    dataset = read_dataset(fixture_dir, ReadOptions(metadata=metadata_path, images=folder))
    samples = dataset.samples

    first = samples.loc[f"{locations[0]}_1"]
    assert first["center_lat"] == pytest.approx(centres[0][0])
    assert first["center_lon"] == pytest.approx(centres[0][1])
    assert first["crs"] == epsg_codes[0]
    assert first["cloud_fraction"] == pytest.approx(0.25)
    assert samples.loc[f"{locations[2]}_3", "cloud_fraction"] == pytest.approx(1.0)
    assert samples.loc[f"{locations[2]}_0", "cloud_fraction"] == pytest.approx(0.0)

    ref = parse_image_ref(first["image"])
    assert (ref.sample, ref.time) == (locations[0], 1)
    chip = read_chip(first["image"])
    assert chip.shape == (12, 16, 16)

    # 8 of the 128 locations of the two chunks have chips.
    with_chips = samples["image"].notna().sum()
    assert with_chips == 8 * 4
    finding = next(f for f in dataset.findings if f.code == "chip-missing")
    assert finding.count == 512 - 32


def test_chips_give_footprints_without_metadata(fixture_dir, chips_dir, tmp_path):
    folder, locations, centres, epsg_codes = chips_dir
    dataset = read_dataset(fixture_dir, ReadOptions(images=folder))
    footprint = dataset.samples.loc[f"{locations[0]}_0"].geometry
    # The chip is 16 x 16 pixels of 10 m around the centre: 160 m square.
    to_utm = pyproj.Transformer.from_crs(4326, epsg_codes[0], always_xy=True)
    projected = shapely.transform(footprint, to_utm.transform, interleaved=False)
    assert projected.area == pytest.approx(160.0 * 160.0, rel=1e-3)
    assert footprint.contains(shapely.Point(centres[0][1], centres[0][0]))
    assert dataset.samples.loc[f"{locations[0]}_0", "time"].year in (2019, 2020, 2021)


def test_images_folder_without_modalities_is_rejected(fixture_dir, tmp_path):
    with pytest.raises(InputError, match="no S2L2A or S2RGB folder"):
        read_dataset(fixture_dir, ReadOptions(images=tmp_path))


def test_copy_of_fixture_is_untouched_by_reading(fixture_dir, metadata_path, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(fixture_dir, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    read_dataset(copy, ReadOptions(metadata=metadata_path))
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
