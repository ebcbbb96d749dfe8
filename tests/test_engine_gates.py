import importlib
import inspect
import pkgutil

import geopandas as gpd
import pandas as pd
import pytest
import shapely

import eoaudit.analyzers
from eoaudit import AuditOptions, ReadOptions, read_dataset, run_audit
from eoaudit.analyzers import Analyzer, registered_analyzers
from eoaudit.errors import InputError, UsageError
from eoaudit.gates import Gate, evaluate_gates, parse_gates
from eoaudit.results import AuditResult, Metric
from eoaudit.samples import SampleSet


def test_every_analyzer_class_is_registered():
    registry = registered_analyzers()
    for module_info in pkgutil.iter_modules(eoaudit.analyzers.__path__):
        module = importlib.import_module(f"eoaudit.analyzers.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, Analyzer)
                and cls is not Analyzer
                and cls.__module__ == module.__name__
            ):
                assert registry.get(cls.name) is cls, f"{cls.__qualname__} is not registered"


def test_every_analyzer_module_defines_an_analyzer():
    defining = {cls.__module__ for cls in registered_analyzers().values()}
    for module_info in pkgutil.iter_modules(eoaudit.analyzers.__path__):
        if module_info.name != "base" and not module_info.name.startswith("_"):
            assert f"eoaudit.analyzers.{module_info.name}" in defining


def small_dataset() -> SampleSet:
    times = pd.to_datetime(["2020-01-05", None, "2021-07-01", "2020-03-03", None], utc=True)
    geometry = [shapely.Point(1, 2), None, shapely.box(0, 0, 0.02, 0.02), None, shapely.Point(5, 5)]
    samples = gpd.GeoDataFrame(
        {
            "sample_id": [f"s{i}" for i in range(5)],
            "caption": ["a", "", "c", "d", "e"],
            "time": times,
            "image": ["x.tif", None, None, "y.tif", None],
        },
        geometry=geometry,
        crs="EPSG:4326",
    )
    samples.index = samples["sample_id"].to_numpy()
    return SampleSet(samples, "memory", "table", rows_read=6)


def test_dataset_metrics_independent_of_chunk_size():
    dataset = small_dataset()
    whole = run_audit(dataset, AuditOptions(chunk_size=100)).result
    tiny = run_audit(dataset, AuditOptions(chunk_size=1)).result
    two = run_audit(dataset, AuditOptions(chunk_size=2)).result
    values = {k: m.value for k, m in whole.metrics.items()}
    assert values == {k: m.value for k, m in tiny.metrics.items()}
    assert values == {k: m.value for k, m in two.metrics.items()}


def test_dataset_metrics_count_fields():
    result = run_audit(small_dataset()).result
    metrics = result.metrics
    assert metrics["dataset.samples"].value == 5
    assert metrics["dataset.bad_rows"].value == 1
    assert metrics["dataset.bad_row_rate"].value == pytest.approx(1 / 6)
    assert metrics["dataset.located_share"].value == pytest.approx(3 / 5)
    assert metrics["dataset.footprint_share"].value == pytest.approx(1 / 5)
    assert metrics["dataset.dated_share"].value == pytest.approx(3 / 5)
    assert metrics["dataset.image_share"].value == pytest.approx(2 / 5)
    assert metrics["dataset.caption_share"].value == pytest.approx(4 / 5)
    assert result.analyzers["dataset"].settings["time_range"] == [
        "2020-01-05T00:00:00+00:00",
        "2021-07-01T00:00:00+00:00",
    ]


def test_results_round_trip_through_json():
    result = run_audit(small_dataset()).result
    figures = {k: f.png for a in result.analyzers.values() for k, f in a.figures.items()}
    again = AuditResult.from_dict(result.to_dict(), figures)
    assert again.to_dict() == result.to_dict()


def test_results_of_another_schema_version_are_rejected():
    data = run_audit(small_dataset()).result.to_dict()
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="schema version 99"):
        AuditResult.from_dict(data, {})


def test_unknown_analyzer_name():
    with pytest.raises(UsageError, match="unknown analyzer"):
        run_audit(small_dataset(), AuditOptions(analyzers=["nope"]))


def test_skipped_analyzer_reports_reason():
    class NeedsTime(Analyzer[int]):
        name = "needs-time-test"
        title = "Needs time"
        requires = ("caption", "time")

        def map_chunk(self, chunk):
            raise AssertionError("must not run")

        def merge(self, left, right):
            return left + right

        def finalize(self, state, result):
            pass

    samples = small_dataset().samples.assign(time=pd.NaT)
    reason = NeedsTime(eoaudit.analyzers.AuditContext(rules={})).skip_reason(samples)
    assert reason == "no time"


def test_subset_keeps_order_and_size(shared_data):
    path = shared_data / "landsat30-au" / "captioning_ft_full.csv"
    dataset = read_dataset(path, ReadOptions())
    audit = run_audit(dataset, AuditOptions(sample=20, seed=3))
    ids = audit.samples["sample_id"].tolist()
    assert len(ids) == 20
    assert ids == sorted(ids)
    assert audit.result.dataset["subset"] == {"size": 20, "seed": 3}


def metric(value):
    return {"dataset.samples": Metric("dataset.samples", value, "samples", "neutral", "")}


@pytest.mark.parametrize(
    ("comparison", "threshold", "value", "status"),
    [
        (">", 0, 5, "pass"),
        (">", 5, 5, "fail"),
        (">=", 5, 5, "pass"),
        ("<", 5, 5, "fail"),
        ("<=", 5, 5, "pass"),
        ("==", 5, 5, "pass"),
        ("!=", 5, 5, "fail"),
    ],
)
def test_gate_comparisons(comparison, threshold, value, status):
    outcome = evaluate_gates(
        [Gate("dataset.samples", comparison, threshold, "error")], metric(value)
    )
    assert outcome[0].status == status
    assert outcome[0].blocks_release is (status == "fail")


def test_gate_on_undefined_metric_is_not_evaluated():
    outcome = evaluate_gates([Gate("dataset.samples", ">", 0, "error")], metric(None))
    assert outcome[0].status == "not-evaluated"
    assert not outcome[0].blocks_release


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "expected a mapping with a 'gates' list"),
        ("gates: [{metric: samples, comparison: '>', threshold: 0}]", "is not a key like"),
        (
            "gates: [{metric: a.b, comparison: '>', threshold: high}]",
            "threshold 'high' is not a number",
        ),
        (
            "gates: [{metric: a.b, comparison: '>', threshold: 1, severity: fatal}]",
            "severity 'fatal'",
        ),
        (
            "gates: [{metric: a.b, comparison: '>', threshold: 1, colour: red}]",
            "unknown field(s) colour",
        ),
    ],
)
def test_gates_file_errors(text, message):
    import yaml

    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_gates(yaml.safe_load(text), "gates.yaml")


def test_packaged_gates_parse():
    from eoaudit.ruleset import load_rules

    gates = parse_gates(load_rules()["gates"], "rules/gates.yaml")
    assert gates
    assert all("." in gate.metric for gate in gates)
