import json
import shutil

import pandas as pd
import pyproj
import pytest
import rasterio
import shapely

from eoaudit import ReadOptions, read_dataset
from eoaudit.errors import InputError
from eoaudit.readers import detect_format


def test_sydney_karpathy_json(shared_data):
    path = shared_data / "ucm-sydney-captions" / "dataset_sydney_modified.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    raw = [s["raw"] for image in data["images"] for s in image["sentences"]]

    dataset = read_dataset(path)
    samples = dataset.samples
    assert detect_format(path) == "karpathy"
    assert len(samples) == len(raw) == 3065
    assert samples["caption"].tolist() == raw
    assert samples["image_id"].nunique() == len(data["images"]) == 613
    assert samples.groupby("image_id").size().max() == 5
    assert samples["sample_id"].is_unique
    assert set(samples["split"]) == {"train", "val", "test"}


def test_karpathy_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(InputError, match="not in the Karpathy caption layout"):
        read_dataset(path)


@pytest.fixture()
def terramesh_dir(shared_data, tmp_path):
    folder = tmp_path / "rgb"
    shutil.copytree(shared_data / "terramesh-examples" / "S2RGB", folder)
    captions = pd.DataFrame(
        {
            "file": ["282D_485L_3_3.tif", "282D_485L_3_3.tif", "609U_541L_3_0.tif"],
            "caption": ["A coastline with forest.", "Sea and sand.", "Snow everywhere."],
        }
    )
    captions.to_csv(folder / "captions.csv", index=False)
    return folder


def test_geotiff_dir_footprints_and_times(terramesh_dir):
    assert detect_format(terramesh_dir) == "geotiff-dir"
    dataset = read_dataset(terramesh_dir)
    samples = dataset.samples
    assert len(samples) == 3
    assert samples["image_id"].tolist() == [
        "282D_485L_3_3.tif",
        "282D_485L_3_3.tif",
        "609U_541L_3_0.tif",
    ]
    # Centres stated in the data's SOURCE.md, independent of the GeoTIFF bounds.
    assert samples.geometry.iloc[0].contains(shapely.Point(-48.106, -25.316))
    assert samples.geometry.iloc[2].contains(shapely.Point(-83.952, 54.780))
    assert samples["time"].iloc[0] == pd.Timestamp("2021-07-23T13:22:41", tz="UTC")
    assert samples["time"].iloc[2] == pd.Timestamp("2020-01-11T16:46:49", tz="UTC")
    assert samples["crs"].tolist() == [32722, 32722, 32616]
    codes = {f.code for f in dataset.findings}
    assert "image-without-caption" in codes


def test_geotiff_footprint_area_matches_pixel_grid(terramesh_dir):
    samples = read_dataset(terramesh_dir).samples
    with rasterio.open(terramesh_dir / "282D_485L_3_3.tif") as source:
        expected_area = source.width * source.res[0] * source.height * source.res[1]
    projected = pyproj.Transformer.from_crs(4326, 32722, always_xy=True)
    area = shapely.transform(samples.geometry.iloc[0], projected.transform, interleaved=False).area
    assert area == pytest.approx(expected_area, rel=1e-4)


def test_geotiff_dir_caption_for_missing_file_is_bad_row(terramesh_dir):
    frame = pd.read_csv(terramesh_dir / "captions.csv")
    frame.loc[len(frame)] = ["nope.tif", "ghost"]
    frame.to_csv(terramesh_dir / "captions.csv", index=False)
    dataset = read_dataset(terramesh_dir)
    assert len(dataset.samples) == 3
    finding = next(f for f in dataset.findings if f.code == "bad-rows-image-not-found")
    assert finding.count == 1
    with pytest.raises(InputError, match=r"row 4: file='nope\.tif'"):
        read_dataset(terramesh_dir, ReadOptions(on_bad_rows="error"))


def test_geotiff_dir_without_captions_table(shared_data, tmp_path):
    folder = tmp_path / "rgb"
    shutil.copytree(shared_data / "terramesh-examples" / "S2RGB", folder)
    with pytest.raises(InputError, match="expected exactly one captions table"):
        read_dataset(folder)
