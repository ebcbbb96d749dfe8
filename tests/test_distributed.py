"""Runs on a real Dask LocalCluster, a worker that dies, and a run killed and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pandas as pd
import plugins
import pytest

from eoaudit import AuditOptions, ReadOptions, run_audit
from eoaudit.sources import open_source

TESTS = Path(__file__).resolve().parent
LANDSAT_REGEX = ("image_path", r"(\d{4}-\d{2}-\d{2})-raw")

# Workers unpickle the test analyzer by value; they cannot import this folder.
cloudpickle.register_pickle_by_value(plugins)


@pytest.fixture()
def test_analyzer():
    plugins.register_test_analyzers()
    yield plugins.CaptionLengthAnalyzer.name
    plugins.unregister_test_analyzers()


def comparable(result) -> dict:
    data = result.to_dict()
    for timing in ("started", "duration_s"):
        data.pop(timing)
    return data


@pytest.fixture(scope="module")
def landsat_source(shared_data):
    path = shared_data / "landsat30-au" / "captioning_ft_full.csv"
    return open_source(path, ReadOptions(time_regex=LANDSAT_REGEX), chunk_size=150)


@pytest.fixture(scope="module")
def llama3_source(test_data, shared_data):
    metadata = shared_data / "ssl4eo-s12-v1.1-meta" / "val_metadata.parquet"
    return open_source(test_data / "llama3_ssl4eo", ReadOptions(metadata=metadata), chunk_size=100)


def test_local_cluster_equals_single_process(landsat_source, llama3_source, tmp_path):
    for source in (landsat_source, llama3_source):
        single = run_audit(source, AuditOptions(chunk_size=150))
        cluster = run_audit(source, AuditOptions(chunk_size=150, scheduler="processes", workers=2))
        assert comparable(cluster.result) == comparable(single.result)
        assert len(single.result.metrics) > 5
        assert cluster.samples.equals(single.samples)


def test_llama3_partitions_are_chunk_files(llama3_source):
    assert llama3_source.partition_keys() == [
        "ssl4eos12_val_seasonal_data_000001.csv",
        "ssl4eos12_val_seasonal_data_000002.csv",
    ]
    assert len(llama3_source.load(1).samples) == 256


def test_worker_death_is_retried(landsat_source, test_analyzer, tmp_path):
    options = {"test_crash_marker": str(tmp_path / "crashed"), "test_crash_id": "caption_gt_0400"}
    reference = run_audit(landsat_source, AuditOptions(chunk_size=150, analyzers=[test_analyzer]))
    audit = run_audit(
        landsat_source,
        AuditOptions(
            chunk_size=150,
            analyzers=[test_analyzer],
            scheduler="processes",
            workers=2,
            analyzer_options=options,
        ),
    )
    assert (tmp_path / "crashed").exists(), "the worker never crashed"
    assert audit.result.dataset["failed_partitions"] == []
    assert comparable(audit.result) == comparable(reference.result)


@pytest.mark.parametrize("scheduler", ["local", "processes"])
def test_partition_that_keeps_failing_is_a_finding(landsat_source, test_analyzer, scheduler):
    options = AuditOptions(
        chunk_size=150,
        analyzers=[test_analyzer],
        scheduler=scheduler,
        workers=2,
        analyzer_options={"test_fail_id": "caption_gt_0400"},
    )
    audit = run_audit(landsat_source, options)
    result = audit.result
    assert result.dataset["failed_partitions"] == ["rows 301-450"]
    finding = next(f for f in result.findings if f.code == "partition-failed")
    assert "rows 301-450" in finding.examples[0]
    assert "refusing partition with caption_gt_0400" in finding.examples[0]
    assert result.metrics["dataset.failed_partitions"].value == 1
    assert result.metrics["dataset.samples"].value == 1005 - 150
    assert not result.passed


SCRIPT = """
import sys
import plugins
plugins.register_test_analyzers()
from eoaudit.cli import main
main(sys.argv[1:])
"""


def run_cli_process(arguments, env):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_killed_run_resumes_to_same_results(shared_data, tmp_path):
    dataset = shared_data / "landsat30-au" / "captioning_ft_full.csv"
    log = tmp_path / "partitions.log"
    config = tmp_path / "eoaudit.toml"
    config.write_text(
        'chunk-size = 100\nquiet = true\nanalyzers = "dataset,test-length,vocabulary"\n',
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS)}

    def arguments(out, resume):
        extra = ["--resume"] if resume else []
        return [
            "--config",
            str(config),
            "run",
            "--dataset",
            str(dataset),
            "--out",
            str(out),
            *extra,
        ]

    reference_out = tmp_path / "reference"
    reference = run_cli_process(arguments(reference_out, False), env)
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()

    out = tmp_path / "out"
    slow_env = {**env, "EOAUDIT_TEST_SLEEP_S": "0.3", "EOAUDIT_TEST_LOG": str(log)}
    first = run_cli_process(arguments(out, False), slow_env)
    manifest = next_manifest(out, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    finished_before = len(json.loads(manifest.read_text(encoding="utf-8"))["partitions"])
    assert 0 < finished_before < 11
    assert not (out / "results.json").exists()

    log.unlink()
    second = run_cli_process(arguments(out, True), slow_env)
    assert second.wait(timeout=120) == 0, second.stderr.read().decode()
    rerun = log.read_text(encoding="utf-8").split()
    assert len(rerun) == 11 - finished_before

    expected = json.loads((reference_out / "results.json").read_text(encoding="utf-8"))
    resumed = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for data in (expected, resumed):
        data.pop("started")
        data.pop("duration_s")
    assert resumed == expected
    # The duplicate columns come from the spilled rows of both runs' partitions.
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "samples.parquet"), pd.read_parquet(reference_out / "samples.parquet")
    )


def next_manifest(out: Path, process, timeout_s: float = 60.0) -> Path:
    """Wait until the running process has finished at least two partitions."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for manifest in out.glob(".cache/runs/*/manifest.json"):
            try:
                done = json.loads(manifest.read_text(encoding="utf-8"))["partitions"]
            except (json.JSONDecodeError, KeyError):
                continue
            if len(done) >= 2:
                return manifest
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.stderr.read().decode()}")
        time.sleep(0.05)
    raise AssertionError("no partition finished in time")


def test_local_workers_without_malloc_trim(monkeypatch):
    # Dask's default MALLOC_TRIM_THRESHOLD_ made every partition in a worker twice as slow.
    from eoaudit.execution import make_executor

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    executor = make_executor("processes", workers=1)
    try:
        values = executor.client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
        threads = executor.client.run(os.environ.get, "OMP_NUM_THREADS")
    finally:
        executor.close()
    assert list(values.values()) == [None]
    assert list(threads.values()) == ["1"]
