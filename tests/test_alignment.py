"""Alignment analyzer: retrieval ranks, a tiny trained CLIP end to end, chunking, cache, report."""

from __future__ import annotations

import html.parser
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_alignment_fixtures import (  # noqa: F401 (single_thread_torch is autouse)
    geotiff_dataset,
    single_thread_torch,
    tiny_open_clip_config,
)

from eoaudit.analyzers.alignment import (
    NO_MODEL,
    NOT_INSTALLED,
    image_column,
    score_pool,
    split_sentences,
)
from eoaudit.chip_loading import ChipTransform
from eoaudit.engine import AuditOptions, run_audit
from eoaudit.readers import ReadOptions, read_dataset
from eoaudit.report import render_report
from eoaudit.ruleset import load_rules
from eoaudit.samples import SampleSet

COLOURS = {
    "red": (200, 30, 30),
    "green": (30, 160, 40),
    "blue": (30, 40, 200),
    "yellow": (220, 210, 40),
    "white": (240, 240, 240),
    "black": (15, 15, 15),
}
CAPTIONS = {
    "red": "red roofs",
    "green": "green forest",
    "blue": "blue water",
    "yellow": "yellow sand",
    "white": "white snow",
    "black": "black lava",
}
SWAPPED = {0: 3, 3: 0, 7: 10, 10: 7}
"""Sample positions whose captions are exchanged in the generated dataset."""


def _unit(vectors: list[list[float]]) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float64)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_score_pool_known_ranks() -> None:
    # Image i is the unit vector e_i. Caption similarities with the images are
    # the caption vector's entries, so the ranks can be read off directly.
    images = np.eye(4)
    texts = np.array(
        [
            [0.9, 0.1, 0.0, 0.0],  # own image first: rank 1
            [0.5, 0.2, 0.3, 0.4],  # images 0, 2 and 3 beat its own: rank 4
            [0.0, 0.0, 0.6, 0.7],  # image 3 beats its own: rank 2
            [0.0, 0.5, 0.0, 0.8],  # rank 1
        ]
    )
    scores = score_pool(texts, images, ["a", "b", "c", "d"])
    np.testing.assert_array_equal(scores.rank_image, [1, 4, 2, 1])
    # Image j's own caption competes with the other captions' entry j: column 0
    # (0.9 against 0.5, 0.0, 0.0) gives 1; column 1 (0.2 against 0.1, 0.0, 0.5) gives 2;
    # column 2 (0.6 against 0.0, 0.3, 0.0) gives 1; column 3 (0.8 against 0.0, 0.4, 0.7) gives 1.
    np.testing.assert_array_equal(scores.rank_caption, [1, 2, 1, 1])
    np.testing.assert_array_equal(scores.best_other, [-1, 0, 3, -1])
    np.testing.assert_allclose(scores.cosine, [0.9, 0.2, 0.6, 0.8])
    # Caption 2 prefers image 3, but caption 3 prefers its own image: not mutual.
    np.testing.assert_array_equal(scores.mutual, [False, False, False, False])


def test_score_pool_mutual_swap_and_shared_image() -> None:
    images = _unit([[1, 0], [0, 1], [0, 1]])
    texts = _unit([[0.1, 1], [1, 0.1], [0.2, 1]])
    # Samples 1 and 2 share one image: they never compete with each other.
    scores = score_pool(texts, images, ["x", "y", "y"])
    np.testing.assert_array_equal(scores.rank_image, [2, 2, 1])
    np.testing.assert_array_equal(scores.best_other, [1, 0, -1])
    np.testing.assert_array_equal(scores.mutual, [True, True, False])


def test_split_sentences() -> None:
    assert split_sentences("A lake. Fields around it!  Roads?") == [
        "A lake.",
        "Fields around it!",
        "Roads?",
    ]
    assert split_sentences("no full stop") == ["no full stop"]
    assert split_sentences("Version 2.5 of a map.") == ["Version 2.5 of a map."]


def _colour_chip(colour: tuple[int, int, int], rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.array(colour, dtype=np.int16)[:, None, None]
    noise = rng.integers(-20, 21, (3, size, size))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train a tiny OpenCLIP on colour chips and their colour captions for a few seconds."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    config = tiny_open_clip_config(
        folder, "tiny-colour-clip", image_size=32, patch=16, context_length=16
    )
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-colour-clip", pretrained=None)
    tokenizer = open_clip.get_tokenizer("tiny-colour-clip")
    transform = ChipTransform(
        "rgb", tuple(model.visual.image_mean), tuple(model.visual.image_std), image_size=32
    )
    names = list(COLOURS)
    tokens = tokenizer([CAPTIONS[name] for name in names])
    rng = np.random.default_rng(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    labels = torch.arange(len(names))
    model.train()
    for _ in range(150):
        pixels = torch.stack(
            [transform(_colour_chip(COLOURS[name], rng, 48), "train") for name in names]
        )
        image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp() * image @ text.T
        loss = (
            torch.nn.functional.cross_entropy(logits, labels)
            + torch.nn.functional.cross_entropy(logits.T, labels)
        ) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    checkpoint = folder / "tiny-colour-clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return {"config": config, "checkpoint": checkpoint, "model": model, "tokenizer": tokenizer}


@pytest.fixture(scope="module")
def colour_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleSet]:
    """Twelve 264 px RGB GeoTIFF samples, colours in turn, four captions swapped."""
    folder = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(1)
    names = list(COLOURS)
    chips = {}
    captions = []
    for position in range(12):
        colour = names[position % len(names)]
        file = f"chip{position:02d}.tif"
        chips[file] = _colour_chip(COLOURS[colour], rng, 264)
        caption_colour = names[SWAPPED.get(position, position) % len(names)]
        captions.append((file, CAPTIONS[caption_colour]))
    geotiff_dataset(folder, chips, captions)
    return folder, read_dataset(folder, ReadOptions(format="geotiff-dir"))


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Flatten a nested results structure into `{path: leaf}`."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _flatten(item, f"{path}/{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{path}[{i}]").items()
        }
    return {path: value}


def _assert_same_results(left: Any, right: Any) -> None:
    """Check equal structure and leaves, floats within 1e-6."""
    flat_left, flat_right = _flatten(left), _flatten(right)
    assert flat_left.keys() == flat_right.keys()
    for path, value in flat_left.items():
        if isinstance(value, float):
            assert flat_right[path] == pytest.approx(value, abs=1e-6), path
        else:
            assert flat_right[path] == value, path


def _rules_dir(folder: Path, **changes: Any) -> Path:
    rules = dict(load_rules()["alignment"])
    rules.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alignment.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    return folder


def _options(trained: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "clip_model": str(trained["config"]),
        "clip_checkpoint": str(trained["checkpoint"]),
        "device": "cpu",
        "decode_workers": 0,
        **extra,
    }


def _run(
    dataset: SampleSet,
    trained: dict[str, Any],
    rules_dir: Path,
    chunk_size: int = 10_000,
    cache_dir: Path | None = None,
    **extra: Any,
) -> Any:
    return run_audit(
        dataset,
        AuditOptions(
            analyzers=["alignment"],
            rules_dir=rules_dir,
            chunk_size=chunk_size,
            cache_dir=cache_dir,
            analyzer_options=_options(trained, **extra),
        ),
    )


def test_trained_clip_ranks_matched_above_swapped(
    trained_clip: dict[str, Any], colour_dataset: tuple[Path, SampleSet], tmp_path: Path
) -> None:
    _, dataset = colour_dataset
    audit = _run(dataset, trained_clip, _rules_dir(tmp_path / "rules", pool_size=6))
    columns = audit.samples
    swapped = np.array([position in SWAPPED for position in range(len(columns))])
    cosine = columns["alignment.cosine"].to_numpy()

    assert cosine[~swapped].min() > cosine[swapped].max()
    assert (columns["alignment.rank_image"][~swapped] == 1).all()
    assert (columns["alignment.rank_image"][swapped] > 1).all()
    ids = columns["sample_id"].tolist()
    for position, partner in SWAPPED.items():
        assert columns["alignment.swap_with"].iloc[position] == ids[partner]

    metrics = audit.result.metrics
    assert metrics["alignment.pairs_scored"].value == 12
    assert metrics["alignment.recall_at_1"].value == pytest.approx(8 / 12)
    assert metrics["alignment.swap_candidates"].value == 4
    assert metrics["alignment.mutual_swaps"].value == 4
    assert metrics["alignment.truncated_rate"].value == 0
    clipscore = 2.5 * np.maximum(cosine, 0)
    np.testing.assert_allclose(columns["alignment.clipscore"], clipscore)
    assert metrics["alignment.clipscore_mean"].value == pytest.approx(clipscore.mean())
    assert metrics["alignment.clipscore_p05"].value == pytest.approx(np.percentile(clipscore, 5))
    # The distribution measures come from DuckDB over the spilled rows; numpy checks them.
    assert metrics["alignment.clipscore_median"].value == pytest.approx(np.median(clipscore))
    assert metrics["alignment.cosine_mean"].value == pytest.approx(cosine.mean())
    q1, q3 = np.percentile(cosine, [25, 75])
    outliers = np.mean(cosine < q1 - 1.5 * (q3 - q1))
    assert metrics["alignment.low_outlier_rate"].value == pytest.approx(outliers)
    ranks = columns["alignment.rank_caption"].to_numpy(dtype=float)
    assert metrics["alignment.median_rank_caption"].value == np.median(ranks)
    assert metrics["alignment.image_recall_at_5"].value == pytest.approx(np.mean(ranks <= 5))

    codes = {f.code: f for f in audit.result.analyzers["alignment"].findings}
    below = cosine < np.percentile(cosine, 5)
    assert codes["low-alignment-score"].count == int(below.sum())
    assert set(codes["low-alignment-score"].examples) == set(columns["sample_id"][below])
    assert codes["possible-caption-swap"].count == 4
    assert set(codes["possible-caption-swap"].examples) == {
        f"{ids[p]} (fits {ids[q]})" for p, q in SWAPPED.items()
    }


def test_results_do_not_depend_on_chunk_size(
    trained_clip: dict[str, Any], colour_dataset: tuple[Path, SampleSet], tmp_path: Path
) -> None:
    _, dataset = colour_dataset
    rules = _rules_dir(tmp_path / "rules", pool_size=3, report_pairs=4)
    runs = [_run(dataset, trained_clip, rules, chunk_size=size) for size in (3, 6, 9, 1000)]
    columns = ["sample_id"] + [c for c in runs[0].samples.columns if c.startswith("alignment.")]
    first = runs[0]
    # The model's float32 output varies in the last bits with the batch it ran
    # in (chunks of 3 give batches of 3), so floats are compared within 1e-6.
    for other in runs[1:]:
        pd.testing.assert_frame_equal(
            first.samples[columns].reset_index(drop=True),
            other.samples[columns].reset_index(drop=True),
            check_exact=False,
            rtol=1e-6,
        )
        _assert_same_results(
            first.result.to_dict()["analyzers"]["alignment"],
            other.result.to_dict()["analyzers"]["alignment"],
        )
    assert first.result.metrics["alignment.short_pools"].value == 0
    # Pools of three hold three colours, so each caption has two competitors.
    assert first.result.metrics["alignment.pairs_scored"].value == 12


def test_pools_cut_by_partitions_are_reported(
    trained_clip: dict[str, Any], colour_dataset: tuple[Path, SampleSet], tmp_path: Path
) -> None:
    _, dataset = colour_dataset
    rules = _rules_dir(tmp_path / "rules", pool_size=6)
    audit = _run(dataset, trained_clip, rules, chunk_size=4)
    # Partitions of 4 samples hold one pool of 4 each instead of pools of 6.
    assert audit.result.metrics["alignment.short_pools"].value == 3
    codes = {f.code: f for f in audit.result.analyzers["alignment"].findings}
    assert codes["retrieval-pools-cut"].count == 3


def test_cache_skips_embedding_on_rerun(
    trained_clip: dict[str, Any], colour_dataset: tuple[Path, SampleSet], tmp_path: Path
) -> None:
    folder, original = colour_dataset
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    dataset = read_dataset(copy, ReadOptions(format="geotiff-dir"))
    rules = _rules_dir(tmp_path / "rules", pool_size=6)
    cache = tmp_path / "cache"
    first = _run(dataset, trained_clip, rules, cache_dir=cache)

    databases = list((cache / "alignment").glob("*.sqlite"))
    assert len(databases) == 1
    with sqlite3.connect(databases[0]) as connection:
        kinds = dict(connection.execute("SELECT kind, count(*) FROM embedding GROUP BY kind"))
    assert kinds == {"image": 12, "text": 6}

    # Without the image files, only the cache can supply the image embeddings.
    for tif in copy.glob("*.tif"):
        tif.unlink()
    second = _run(dataset, trained_clip, rules, cache_dir=cache)
    columns = ["alignment.cosine", "alignment.rank_image", "alignment.rank_caption"]
    pd.testing.assert_frame_equal(
        first.samples[columns].reset_index(drop=True),
        second.samples[columns].reset_index(drop=True),
    )
    assert second.result.metrics["alignment.pairs_not_scored"].value == 0
    assert original is not dataset


def test_unreadable_chip_is_counted(
    trained_clip: dict[str, Any], colour_dataset: tuple[Path, SampleSet], tmp_path: Path
) -> None:
    folder, _ = colour_dataset
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    dataset = read_dataset(copy, ReadOptions(format="geotiff-dir"))
    (copy / "chip05.tif").unlink()
    audit = _run(dataset, trained_clip, _rules_dir(tmp_path / "rules", pool_size=6))

    assert audit.result.metrics["alignment.pairs_scored"].value == 11
    finding = next(
        f for f in audit.result.analyzers["alignment"].findings if "unreadable" in f.code
    )
    assert finding.count == 1
    assert "chip05.tif: image file not found" in finding.examples[0]
    assert pd.isna(audit.samples["alignment.cosine"].iloc[5])


def test_sentence_scoring_means_sentence_cosines(
    trained_clip: dict[str, Any], tmp_path: Path
) -> None:
    rng = np.random.default_rng(2)
    chip = _colour_chip(COLOURS["blue"], rng, 264)
    caption = "blue water. white snow! red roofs"
    folder = geotiff_dataset(
        tmp_path / "data", {"a.tif": chip, "b.tif": chip[::-1].copy()}, [("a.tif", caption)] * 2
    )
    dataset = read_dataset(folder, ReadOptions(format="geotiff-dir"))
    rules = _rules_dir(tmp_path / "rules", pool_size=2)
    audit = _run(dataset, trained_clip, rules, sentence_scoring=True)

    model, tokenizer = trained_clip["model"], trained_clip["tokenizer"]
    mean = torch.tensor(model.visual.image_mean)[:, None, None]
    std = torch.tensor(model.visual.image_std)[:, None, None]
    centre = torch.from_numpy(chip[:, 20:244, 20:244].astype(np.float32) / 255)[None]
    small = torch.nn.functional.interpolate(
        centre, size=(32, 32), mode="bicubic", align_corners=False, antialias=True
    )
    with torch.no_grad():
        image = torch.nn.functional.normalize(model.encode_image((small - mean) / std), dim=-1)
        sentences = ["blue water.", "white snow!", "red roofs"]
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(sentences)), dim=-1)
    expected = float((text @ image[0]).mean())
    assert audit.samples["alignment.cosine"].iloc[0] == pytest.approx(expected, abs=1e-5)


def test_long_caption_counts_as_truncated(trained_clip: dict[str, Any], tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    # 20 one-token words and the start and end tokens: over the model's 16-token context.
    long_caption = "green forest " * 10
    folder = geotiff_dataset(
        tmp_path / "data",
        {"a.tif": _colour_chip(COLOURS["green"], rng, 264)},
        [("a.tif", long_caption), ("a.tif", "green forest")],
    )
    dataset = read_dataset(folder, ReadOptions(format="geotiff-dir"))
    audit = _run(dataset, trained_clip, _rules_dir(tmp_path / "rules", pool_size=2))

    assert audit.samples["alignment.truncated"].tolist() == [True, False]
    assert audit.result.metrics["alignment.truncated_rate"].value == pytest.approx(0.5)
    codes = [f.code for f in audit.result.analyzers["alignment"].findings]
    assert "caption-truncated" in codes


class _ImageCollector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and values.get("id"):
            self.section = str(values["id"])
        if tag == "img" and self.section == "analyzer-alignment":
            self.images.append(values)

    def handle_data(self, data: str) -> None:
        if self.section == "analyzer-alignment":
            self.text.append(data)


def test_report_shows_lowest_pairs_with_thumbnails(
    trained_clip: dict[str, Any], colour_dataset: tuple[Path, SampleSet], tmp_path: Path
) -> None:
    _, dataset = colour_dataset
    audit = _run(dataset, trained_clip, _rules_dir(tmp_path / "rules", pool_size=6, report_pairs=3))
    page = _ImageCollector()
    page.feed(render_report(audit.result))

    thumbnails = [i for i in page.images if "thumbnail" in (i.get("class") or "")]
    assert len(thumbnails) == 3
    assert all(str(i["src"]).startswith("data:image/png;base64,") for i in thumbnails)
    text = " ".join(page.text)
    lowest = audit.samples.sort_values("alignment.cosine").head(3)
    assert len(set(lowest["caption"])) == 3
    for caption in lowest["caption"]:
        assert caption in text
    assert "Retrieval within pools" in text


def test_skipped_without_model(colour_dataset: tuple[Path, SampleSet]) -> None:
    _, dataset = colour_dataset
    audit = run_audit(dataset, AuditOptions(analyzers=["alignment"]))
    result = audit.result.analyzers["alignment"]
    assert result.status == "skipped"
    assert result.reason == NO_MODEL


def test_skipped_when_torch_cannot_be_imported(colour_dataset: tuple[Path, SampleSet]) -> None:
    folder, _ = colour_dataset
    # A finder placed first on sys.meta_path makes torch and open_clip fail to
    # import, as if they were not installed.
    code = f"""
import importlib.abc
import sys


class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "open_clip"):
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None


sys.meta_path.insert(0, Missing())
from eoaudit.analyzers import AuditContext, registered_analyzers
import eoaudit.cli
from eoaudit.readers import ReadOptions, read_dataset
from eoaudit.ruleset import load_rules
samples = read_dataset({str(folder)!r}, ReadOptions(format="geotiff-dir")).samples
analyzer = registered_analyzers()["alignment"](
    AuditContext(rules=load_rules(), options={{"clip_hf_folder": "model"}})
)
print(analyzer.skip_reason(samples))
assert "torch" not in sys.modules
"""
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == NOT_INSTALLED


def test_image_column_follows_model_modality() -> None:
    both = pd.DataFrame(
        {"image": ["a"], "image_s2l2a": ["zarr-zip://l2a"], "image_s2rgb": ["zarr-zip://rgb"]}
    )
    assert image_column(both, "multispectral") == "image_s2l2a"
    assert image_column(both, "open_clip") == "image_s2rgb"
    assert image_column(both, "hf") == "image_s2rgb"
    only_l2a = pd.DataFrame({"image": ["a"], "image_s2l2a": ["x"], "image_s2rgb": [None]})
    assert image_column(only_l2a, "hf") == "image"
