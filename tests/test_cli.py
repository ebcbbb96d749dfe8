import json
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner

from eoaudit.analyzers import registered_analyzers
from eoaudit.cli import main

LANDSAT_REGEX = r"image_path=(\d{4}-\d{2}-\d{2})-raw"


@pytest.fixture(scope="module")
def landsat_csv(shared_data) -> Path:
    return shared_data / "landsat30-au" / "captioning_ft_full.csv"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_landsat_command_from_the_issue(landsat_csv, tmp_path):
    out = tmp_path / "OUT"
    result = invoke(
        "run", "--dataset", str(landsat_csv), "--time-regex", LANDSAT_REGEX, "--out", str(out), "-q"
    )
    assert result.exit_code == 0, result.output
    assert f"Report: {out / 'report.html'}" in result.output
    assert {p.name for p in out.iterdir()} >= {"report.html", "results.json", "samples.parquet"}

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["schema_version"] == 1
    assert results["dataset"]["samples"] == 1005
    metrics = results["analyzers"]["dataset"]["metrics"]
    assert metrics["dataset.located_share"]["value"] == 1.0
    assert metrics["dataset.dated_share"]["value"] == 1.0
    assert results["passed"] is True

    samples = gpd.read_parquet(out / "samples.parquet")
    assert len(samples) == 1005
    assert samples["time"].notna().all()
    assert samples.geometry.notna().all()


def write_gates(path: Path, comparison: str, threshold: float, severity: str = "error") -> Path:
    path.write_text(
        "gates:\n"
        f"  - metric: dataset.samples\n    comparison: '{comparison}'\n"
        f"    threshold: {threshold}\n    severity: {severity}\n"
        "  - metric: nothing.here\n    comparison: '>'\n    threshold: 0\n",
        encoding="utf-8",
    )
    return path


def test_failing_gate_exits_1_and_writes_junit(landsat_csv, tmp_path):
    gates = write_gates(tmp_path / "gates.yaml", ">", 5000)
    junit = tmp_path / "gates.xml"
    out = tmp_path / "out"
    result = invoke(
        "run",
        "--dataset",
        str(landsat_csv),
        "--gates",
        str(gates),
        "--junit",
        str(junit),
        "--out",
        str(out),
        "-q",
    )
    assert result.exit_code == 1
    assert "dataset.samples > 5000: fail, value 1005" in result.output

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "2"
    assert suite.get("failures") == "1"
    assert suite.get("skipped") == "1"
    cases = suite.findall("testcase")
    assert cases[0].find("failure") is not None
    assert cases[1].find("skipped") is not None

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["passed"] is False
    assert [g["status"] for g in results["gates"]] == ["fail", "not-evaluated"]


def test_failing_warning_gate_exits_0(landsat_csv, tmp_path):
    gates = write_gates(tmp_path / "gates.yaml", ">", 5000, severity="warning")
    result = invoke(
        "run",
        "--dataset",
        str(landsat_csv),
        "--gates",
        str(gates),
        "--out",
        str(tmp_path / "o"),
        "-q",
    )
    assert result.exit_code == 0
    assert "warning: gate dataset.samples > 5000" in result.output


def test_report_command_rerenders_from_results(landsat_csv, tmp_path):
    out = tmp_path / "out"
    invoke("run", "--dataset", str(landsat_csv), "--out", str(out), "-q")
    original = (out / "report.html").read_text(encoding="utf-8")
    (out / "report.html").unlink()

    result = invoke("report", str(out))
    assert result.exit_code == 0, result.output
    rerendered = (out / "report.html").read_text(encoding="utf-8")
    assert rerendered == original


def test_report_command_without_results(tmp_path):
    result = invoke("report", str(tmp_path))
    assert result.exit_code == 2
    assert "no results.json here" in result.output


def test_sample_and_seed_give_reproducible_subsets(landsat_csv, tmp_path):
    ids = []
    for name in ("a", "b", "c"):
        seed = "1" if name != "c" else "2"
        out = tmp_path / name
        result = invoke(
            "run",
            "--dataset",
            str(landsat_csv),
            "--sample",
            "50",
            "--seed",
            seed,
            "--out",
            str(out),
            "-q",
        )
        assert result.exit_code == 0
        ids.append(gpd.read_parquet(out / "samples.parquet")["sample_id"].tolist())
    assert len(ids[0]) == 50
    assert ids[0] == ids[1]
    assert ids[0] != ids[2]
    assert ids[0] == sorted(ids[0])  # original order is kept


def test_unknown_analyzer_is_a_usage_error(landsat_csv, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "run", "--dataset", str(landsat_csv), "--analyzers", "dataset,bogus", "--out", str(out)
    )
    assert result.exit_code == 2
    assert "unknown analyzer(s) bogus" in result.output
    assert not out.exists()


def test_analyzers_selection_runs_only_those(landsat_csv, tmp_path):
    out = tmp_path / "out"
    invoke("run", "--dataset", str(landsat_csv), "--analyzers", "dataset", "--out", str(out), "-q")
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results["analyzers"]) == ["dataset"]


def test_options_from_eoaudit_toml(landsat_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eoaudit.toml").write_text(
        f"time-regex = '{LANDSAT_REGEX}'\nout = \"from-config\"\nsample = 10\nquiet = true\n",
        encoding="utf-8",
    )
    result = invoke("run", "--dataset", str(landsat_csv))
    assert result.exit_code == 0, result.output
    samples = gpd.read_parquet(tmp_path / "from-config" / "samples.parquet")
    assert len(samples) == 10
    assert samples["time"].notna().all()


def test_options_from_pyproject_tool_table(landsat_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.eoaudit]\nout = "pp"\nsample = 7\n', encoding="utf-8"
    )
    result = invoke("run", "--dataset", str(landsat_csv), "-q")
    assert result.exit_code == 0, result.output
    assert len(gpd.read_parquet(tmp_path / "pp" / "samples.parquet")) == 7


def test_unknown_config_key_is_an_input_error(landsat_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eoaudit.toml").write_text("colour = 'red'\n", encoding="utf-8")
    result = invoke("run", "--dataset", str(landsat_csv))
    assert result.exit_code == 2
    assert "unknown option 'colour'" in result.output


def test_help_documents_every_option_with_default_or_unit():
    result = CliRunner().invoke(main, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    command = main.commands["run"]
    for parameter in command.params:
        if not parameter.opts:
            continue
        assert parameter.opts[0] in result.output
        assert parameter.help, f"{parameter.name} has no help text"
    assert "[default: eoaudit-report]" in result.output
    assert "[default: 10000; x>=1]" in result.output


def test_failed_run_keeps_previous_report(landsat_csv, tmp_path):
    out = tmp_path / "out"
    invoke("run", "--dataset", str(landsat_csv), "--out", str(out), "-q")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = invoke("run", "--dataset", str(tmp_path / "missing.csv"), "--out", str(out))
    assert result.exit_code == 2
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
    assert not [p for p in out.rglob("*.tmp")]


def test_progress_bars_go_to_stderr_unless_quiet(landsat_csv, tmp_path):
    runner = CliRunner()
    loud = runner.invoke(main, ["run", "--dataset", str(landsat_csv), "--out", str(tmp_path / "a")])
    quiet = runner.invoke(
        main, ["run", "--dataset", str(landsat_csv), "--out", str(tmp_path / "b"), "-q"]
    )
    assert "partitions" in loud.stderr
    assert "partitions" not in quiet.stderr
    assert "partitions" not in loud.stdout


def test_analyzers_command_lists_registry():
    result = invoke("analyzers")
    for name in registered_analyzers():
        assert name in result.output


def test_columns_from_finalize_reach_samples_parquet(shared_data, tmp_path):
    path = shared_data / "ucm-sydney-captions" / "dataset_sydney_modified.json"
    out = tmp_path / "out"
    options = ["--chunk-size", "500", "--finalize-memory", "64MB", "--out", str(out), "-q"]
    result = invoke("run", "--dataset", str(path), *options)
    assert result.exit_code == 0, result.output

    samples = gpd.read_parquet(out / "samples.parquet")
    normalised = (
        samples["caption"]
        .str.lower()
        .str.replace(r"[^\w\s]", " ", regex=True)
        .str.split()
        .str.join(" ")
    )
    assert samples["vocabulary.exact_duplicate"].sum() == normalised.duplicated().sum()
    assert "vocabulary.near_duplicate_cluster" in samples
