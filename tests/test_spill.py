"""Spilled rows and final-column files joined onto the per-partition sample files."""

from pathlib import Path

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shapely.geometry import Point

from eoaudit.output import combine_sample_files
from eoaudit.spill import SEQ, sequenced


def partition_file(folder: Path, index: int, ids: list[str]) -> Path:
    path = folder / f"part-{index}.parquet"
    frame = gpd.GeoDataFrame(
        {"sample_id": ids, "caption": [f"caption {i}" for i in ids]},
        geometry=[Point(0, 0)] * len(ids),
        crs="EPSG:4326",
    )
    frame.to_parquet(path, index=False)
    return path


def final_file(folder: Path, ids: list[str], values: list[int]) -> Path:
    path = folder / "final.parquet"
    pq.write_table(pa.table({"sample_id": ids, "test.value": values}), path)
    return path


def test_sequence_follows_partitions() -> None:
    first = sequenced(pa.table({"x": [1, 2, 3]}), 0).column(SEQ).to_pylist()
    second = sequenced(pa.table({"x": [4]}), 1).column(SEQ).to_pylist()

    assert first == [0, 1, 2]
    assert second[0] > first[-1]


def test_final_columns_join_partitions_in_order(tmp_path: Path) -> None:
    parts = [partition_file(tmp_path, 0, ["a", "b"]), partition_file(tmp_path, 1, ["c"])]
    final = final_file(tmp_path, ["a", "b", "c"], [10, 20, 30])
    target = tmp_path / "samples.parquet"
    combine_sample_files(parts, target, [final])

    samples = gpd.read_parquet(target)
    assert samples["sample_id"].tolist() == ["a", "b", "c"]
    assert samples["test.value"].tolist() == [10, 20, 30]


def test_final_columns_out_of_order_are_rejected(tmp_path: Path) -> None:
    parts = [partition_file(tmp_path, 0, ["a", "b"]), partition_file(tmp_path, 1, ["c"])]
    final = final_file(tmp_path, ["b", "a", "c"], [20, 10, 30])

    with pytest.raises(RuntimeError, match=r"final\.parquet: rows do not follow"):
        combine_sample_files(parts, tmp_path / "samples.parquet", [final])


def test_final_columns_too_short_are_rejected(tmp_path: Path) -> None:
    parts = [partition_file(tmp_path, 0, ["a", "b"]), partition_file(tmp_path, 1, ["c"])]
    final = final_file(tmp_path, ["a", "b"], [10, 20])

    with pytest.raises(RuntimeError, match="1 rows expected, only 0 left"):
        combine_sample_files(parts, tmp_path / "samples.parquet", [final])
