"""Each kind of bad input: a one-line error with exit code 2 and no output, or a counted finding."""

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner

from eoaudit.cli import main

HEADER = "id,caption,lat,lon,time\n"


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def assert_input_error(result, out: Path, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()
    assert len(message) == 1, result.output
    for fragment in fragments:
        assert fragment in message[0]
    assert not out.exists()


def findings_of(out: Path) -> dict[str, dict]:
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {f["code"]: f for f in results["analyzers"]["dataset"]["findings"]}


def test_missing_path(tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(tmp_path / "nope.csv"), "--out", str(out))
    assert_input_error(result, out, "nope.csv", "no such file or folder")


def test_unknown_format_option(tmp_path):
    path = write(tmp_path / "a.csv", HEADER + "1,a,1,2,2020-01-01\n")
    result = run_cli("run", "--dataset", str(path), "--format", "xml", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "'xml' is not one of" in result.output
    assert not (tmp_path / "o").exists()


def test_unknown_suffix(tmp_path):
    path = write(tmp_path / "captions.xml", "<a/>")
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--out", str(out))
    assert_input_error(result, out, "captions.xml", "pass --format")


def test_no_caption_column(tmp_path):
    path = write(tmp_path / "a.csv", "id,label\n1,forest\n")
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--out", str(out))
    assert_input_error(result, out, "a.csv", "no caption column", "--caption-column")


def test_empty_dataset(tmp_path):
    path = write(tmp_path / "a.csv", "id,caption\n")
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--out", str(out))
    assert_input_error(result, out, "a.csv", "no rows")


def test_empty_file(tmp_path):
    path = write(tmp_path / "a.csv", "")
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--out", str(out))
    assert_input_error(result, out, "a.csv", "empty")


def test_non_utf8_bytes(tmp_path):
    path = write(tmp_path / "a.csv", b"id,caption\n1,forest\n2,caf\xe9 by a lake\n")
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--out", str(out))
    assert_input_error(result, out, "a.csv, line 3", "0xe9", "--encoding")


def test_non_utf8_with_encoding_option(tmp_path):
    path = write(tmp_path / "a.csv", b"id,caption\n1,caf\xe9 by a lake\n")
    out = tmp_path / "out"
    result = run_cli(
        "run", "--dataset", str(path), "--encoding", "latin-1", "--out", str(out), "-q"
    )
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file()


def test_malformed_csv_rows_skipped_and_counted(tmp_path):
    path = write(
        tmp_path / "a.csv",
        HEADER + "1,a,1,2,2020-01-01\n2,b,1,2,2020-01-01,extra\n3,c,1,2,2020-01-01\n",
    )
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--out", str(out), "-q")
    # One bad row in three is above the default 1% gate, so the run fails the gate.
    assert result.exit_code == 1
    finding = findings_of(out)["bad-rows-malformed-csv-row"]
    assert finding["count"] == 1
    assert finding["examples"][0].startswith("line 3:")


def test_malformed_csv_rows_with_error_policy(tmp_path):
    path = write(tmp_path / "a.csv", HEADER + "1,a,1,2,2020-01-01\n2,b,1,2,2020-01-01,extra\n")
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--on-bad-rows", "error", "--out", str(out))
    assert_input_error(result, out, "a.csv, line 3", "expected 5 fields, saw 6")


def test_empty_captions_are_kept_and_counted(tmp_path):
    path = write(
        tmp_path / "a.csv", HEADER + '1,a,1,2,2020-01-01\n2,"  ",1,2,2020-01-01\n3,,1,2,\n'
    )
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--out", str(out), "-q")
    finding = findings_of(out)["empty-caption"]
    assert finding["count"] == 2
    assert finding["examples"] == ["2", "3"]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["dataset"]["samples"] == 3
    # The caption-share warning gate fails, but warnings do not fail the run.
    assert result.exit_code == 0


@pytest.mark.parametrize(
    ("row", "reason", "fragment"),
    [
        ("2,b,95.5,2,2020-01-01", "latitude-out-of-range", "lat='95.5' is outside [-90, 90]"),
        ("2,b,10,200,2020-01-01", "longitude-out-of-range", "lon='200' is outside [-180, 180]"),
        ("2,b,north,2,2020-01-01", "invalid-coordinate", "lat='north' is not a number"),
        ("2,b,1,2,2020-13-45", "unparseable-time", "time='2020-13-45' is not a date"),
        ("1,b,1,2,2020-01-01", "duplicate-sample-id", "sample_id '1' already used by row 1"),
    ],
)
def test_row_problems_skip_and_error(tmp_path, row, reason, fragment):
    path = write(tmp_path / "a.csv", HEADER + "1,a,1,2,2020-01-01\n" + row + "\n")

    strict_out = tmp_path / "strict"
    result = run_cli(
        "run", "--dataset", str(path), "--on-bad-rows", "error", "--out", str(strict_out)
    )
    assert_input_error(result, strict_out, "a.csv, row 2", fragment, "--on-bad-rows skip")

    out = tmp_path / "out"
    run_cli("run", "--dataset", str(path), "--out", str(out), "-q")
    finding = findings_of(out)[f"bad-rows-{reason}"]
    assert finding["count"] == 1
    assert fragment in finding["examples"][0]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["dataset"]["samples"] == 1
    assert results["analyzers"]["dataset"]["metrics"]["dataset.bad_rows"]["value"] == 1


def test_invalid_geometry(tmp_path):
    bowtie = "POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))"
    path = write(tmp_path / "a.csv", f'caption,wkt\na,"{bowtie}"\nb,"POINT (1 2)"\n')
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--on-bad-rows", "error", "--out", str(out))
    assert_input_error(result, out, "row 1", "invalid shape", "Self-intersection")

    run_cli("run", "--dataset", str(path), "--out", str(out), "-q")
    assert findings_of(out)["bad-rows-invalid-geometry"]["count"] == 1


def test_unparseable_wkt(tmp_path):
    path = write(tmp_path / "a.csv", 'caption,wkt\na,"POLYGON ((0 0, 1"\n')
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--on-bad-rows", "error", "--out", str(out))
    assert_input_error(result, out, "row 1", "is not WKT")


def test_all_rows_bad_leaves_nothing_to_audit(tmp_path):
    path = write(tmp_path / "a.csv", HEADER + "1,a,99,2,2020-01-01\n")
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--out", str(out))
    assert_input_error(result, out, "no sample left to audit")


def test_invalid_gates_file(tmp_path):
    path = write(tmp_path / "a.csv", HEADER + "1,a,1,2,2020-01-01\n")
    gates = write(
        tmp_path / "gates.yaml",
        "gates:\n  - metric: dataset.samples\n    comparison: '=>'\n    threshold: 1\n",
    )
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--gates", str(gates), "--out", str(out))
    assert_input_error(result, out, "gates.yaml, gate 1", "comparison '=>' is invalid")


def test_dataset_file_is_not_modified(tmp_path):
    text = HEADER + "1,a,1,2,2020-01-01\n2,b,95,2,2020-01-01\n"
    path = write(tmp_path / "a.csv", text)
    run_cli("run", "--dataset", str(path), "--out", str(tmp_path / "out"), "-q")
    assert path.read_text(encoding="utf-8") == text


def test_invalid_scheduler(tmp_path):
    path = write(tmp_path / "a.csv", HEADER + "1,a,1,2,2020-01-01\n")
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--scheduler", "threads", "--out", str(out))
    assert_input_error(result, out, "--scheduler 'threads' is invalid", "tcp://")


@pytest.mark.parametrize("size", ["lots", "512", "-1GB", "1 GB of RAM"])
def test_invalid_finalize_memory(tmp_path, size):
    path = write(tmp_path / "a.csv", HEADER + "1,a,1,2,2020-01-01\n")
    out = tmp_path / "out"
    result = run_cli("run", "--dataset", str(path), "--finalize-memory", size, "--out", str(out))
    assert_input_error(result, out, f"--finalize-memory {size!r} is invalid", "512MB")


def test_missing_metadata_file(test_data, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "val_metadata.parquet"
    result = run_cli(
        "run",
        "--dataset",
        str(test_data / "llama3_ssl4eo"),
        "--metadata",
        str(missing),
        "--out",
        str(out),
    )
    assert_input_error(result, out, "--metadata", "val_metadata.parquet: file not found")


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("plain", "no GeoParquet 'geo' metadata"),
        ("columns", "missing column(s) sample_id, time_id"),
        ("text", "not a readable GeoParquet file"),
    ],
)
def test_bad_metadata_file(test_data, shared_data, tmp_path, kind, fragment):
    """A metadata file without geo metadata, without key columns, or not Parquet at all."""
    source = shared_data / "ssl4eo-s12-v1.1-meta" / "val_metadata.parquet"
    metadata = tmp_path / "meta.parquet"
    if kind == "plain":
        pd.read_parquet(source).drop(columns="geometry").assign(geometry=b"").to_parquet(metadata)
    elif kind == "columns":
        gpd.read_parquet(source).drop(columns=["sample_id", "time_id"]).to_parquet(metadata)
    else:
        write(metadata, "sample_id,time_id\n1,0\n")
    before = metadata.read_bytes()
    out = tmp_path / "out"
    result = run_cli(
        "run",
        "--dataset",
        str(test_data / "llama3_ssl4eo"),
        "--metadata",
        str(metadata),
        "--out",
        str(out),
    )
    assert_input_error(result, out, f"--metadata {metadata}", fragment)
    assert metadata.read_bytes() == before


def test_missing_worldcover_folder(tmp_path):
    path = write(tmp_path / "a.csv", HEADER + "1,forest,1,2,2020-01-01\n")
    out = tmp_path / "out"
    missing = tmp_path / "tiles"
    result = run_cli("run", "--dataset", str(path), "--worldcover", str(missing), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert str(missing) in result.output
    assert not out.exists()


def test_missing_config_file(tmp_path):
    path = write(tmp_path / "a.csv", HEADER + "1,a,1,2,2020-01-01\n")
    result = run_cli("--config", str(tmp_path / "nope.toml"), "run", "--dataset", str(path))
    assert result.exit_code == 2
    assert "nope.toml: file not found" in result.output
