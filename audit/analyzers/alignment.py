"""Alignment analyzer: how well each caption fits its image, by CLIP embeddings.

Every pair (caption, image) gets the cosine similarity of its CLIP embeddings
and its CLIPScore, 2.5 x max(cosine, 0) (Hessel et al. 2021, "CLIPScore: A
Reference-free Evaluation Metric for Image Captioning", EMNLP). Retrieval runs
within pools of `pool_size` consecutive samples: for each caption the rank of
its own image among the pool's images, and for each image the rank of its own
caption. A caption that fits another image of its pool better than its own is
a possible swap.

Pools are formed inside each partition of the engine, counting from the
partition's first sample, so every pool is scored inside one `map_chunk` and
its per-sample ranks are returned with the chunk. For samples read into
memory, partitions are slices of `--chunk-size` samples. The results then do
not depend on the chunk size as long as it is a multiple of the pool size.
Otherwise pools are cut at partition ends, and the `retrieval-pools-cut`
finding reports it. Results agree across chunk sizes up to float32 rounding,
because the model's output varies in the last bits with the batch it ran in.
Images that several captions share (the same `image`
reference) do not compete with each other.

The scores of all pairs are needed at once for percentiles, so `map_chunk`
spills one row per scored pair (:mod:`eoaudit.spill`) and `finalize`
computes the distribution measures from those rows with DuckDB; the state
keeps counts and the few pairs shown as examples.

torch and open_clip are imported only when the analyzer runs, so the package
works without the `clip` extra; the analyzer is then skipped.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import re
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa

from eoaudit.analyzers.base import Analyzer, ChunkResult, register
from eoaudit.errors import EoauditError, UsageError
from eoaudit.figures import new_figure, to_png
from eoaudit.results import AnalyzerResult, Finding
from eoaudit.samples import CAPTION, IMAGE, MAX_EXAMPLES
from eoaudit.spill import connect, parquet_list

if TYPE_CHECKING:
    from eoaudit.clip_backends import ClipBackend, ModelSpec

CLIPSCORE_WEIGHT = 2.5
"""Weight w of CLIPScore = w x max(cos, 0); Hessel et al. use 2.5."""

NOT_INSTALLED = "torch and open_clip are not installed; pip install 'eoaudit[clip]'"
NO_MODEL = (
    "no CLIP model given; pass --clip-model NAME with --clip-checkpoint FILE, "
    "--clip-hf-folder DIR, or --clip-multispectral-checkpoint FILE (weights are never downloaded)"
)
logger = logging.getLogger(__name__)

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
MODALITY_COLUMNS = {"multispectral": "image_s2l2a", "rgb": "image_s2rgb"}


def split_sentences(caption: str) -> list[str]:
    """Split a caption after `.`, `!` or `?` followed by white space; drop empty parts."""
    parts = [part.strip() for part in SENTENCE_END.split(caption.strip())]
    return [part for part in parts if part] or [caption.strip()]


@dataclass
class PoolScores:
    """Scores of the pairs of one pool, in the order given to :func:`score_pool`.

    Attributes:
        cosine: Cosine similarity of each caption with its own image.
        rank_image: 1 + the number of other distinct images the caption scores higher on.
        rank_caption: 1 + the number of other images' captions that score higher
            on the pair's image.
        best_other: Position of the image the caption fits best when that is not
            its own (rank_image > 1), else -1.
        mutual: True when the caption fits image j better and j's caption also
            fits this pair's image better than its own: a likely swap.
    """

    cosine: np.ndarray
    rank_image: np.ndarray
    rank_caption: np.ndarray
    best_other: np.ndarray
    mutual: np.ndarray


def score_pool(texts: np.ndarray, images: np.ndarray, image_keys: list[str]) -> PoolScores:
    """Score every pair of a pool against all others.

    Args:
        texts: `(n, d)` caption vectors; a caption's similarity with an image
            is the dot product (the cosine for unit vectors, the mean sentence
            cosine for means of unit sentence vectors).
        images: `(n, d)` unit image vectors, row i belonging to caption i.
        image_keys: Identity of each image; pairs with the same key share an
            image and are not counted against each other.

    Ties count in favour of the true pair.
    """
    similarity = texts.astype(np.float64) @ images.astype(np.float64).T
    own = np.diag(similarity).copy()
    keys = np.asarray(image_keys, dtype=object)
    competitor = keys[:, None] != keys[None, :]

    # Captions of one image share its vector, so the image counts once among the competitors.
    _, first = np.unique(keys.astype(str), return_index=True)
    distinct = np.zeros(len(keys), dtype=bool)
    distinct[first] = True
    beats_caption = (similarity > own[:, None]) & competitor & distinct[None, :]
    beats_image = (similarity > own[None, :]) & competitor
    rank_image = 1 + beats_caption.sum(axis=1)
    rank_caption = 1 + beats_image.sum(axis=0)

    masked = np.where(competitor, similarity, -np.inf)
    best = masked.argmax(axis=1) if len(own) else np.zeros(0, dtype=int)
    best_other = np.where(rank_image > 1, best, -1)
    mutual = np.zeros(len(own), dtype=bool)
    for i, j in enumerate(best_other):
        if j >= 0:
            mutual[i] = similarity[j, i] > own[j]
    return PoolScores(own, rank_image, rank_caption, best_other, mutual)


@dataclass
class PairExample:
    """One low-scoring pair, kept for the report with its thumbnail."""

    position: int
    sample_id: str
    caption: str
    cosine: float
    rank_image: int
    rank_caption: int
    thumbnail: str = ""


@dataclass
class SwapExample:
    """A caption that fits another image of its pool better than its own."""

    position: int
    sample_id: str
    swap_with: str
    margin: float
    mutual: bool
    caption: str


@dataclass
class AlignmentState:
    """Counts and examples of the pairs seen so far; the scores themselves are spilled.

    Attributes:
        not_scored: Count of samples left unscored, by reason.
        not_scored_examples: The first few of them, by reason.
        lowest: The lowest-scoring pairs, at most `report_pairs`.
        swaps: The possible swaps with the largest margins, at most `report_pairs`.
        context_length: The model's text context in tokens.
        short_pools: Pools with fewer than `pool_size` samples; more than one
            means pools were cut at partition ends.
    """

    not_scored: dict[str, int] = field(default_factory=dict)
    not_scored_examples: dict[str, list[str]] = field(default_factory=dict)
    lowest: list[PairExample] = field(default_factory=list)
    swaps: list[SwapExample] = field(default_factory=list)
    context_length: int = 0
    short_pools: int = 0


SPILL_SCHEMA = pa.schema(
    [
        ("cosine", pa.float64()),
        ("rank_image", pa.int64()),
        ("rank_caption", pa.int64()),
        ("pool_size", pa.int64()),
        ("mutual", pa.bool_()),
        ("truncated", pa.bool_()),
    ]
)
"""The spilled row of one scored pair: its cosine, ranks, pool's scored members and flags."""


@register
class AlignmentAnalyzer(Analyzer[AlignmentState]):
    """Score image-caption pairs with a CLIP model and find possible swaps."""

    name = "alignment"
    title = "Image-text alignment"
    requires = ("caption", "image")
    order = 30

    def _rules(self) -> dict[str, Any]:
        rules = self.context.rules.get("alignment") or {}
        return dict(rules)

    def _spec(self) -> ModelSpec | None:
        from eoaudit.clip_backends import ModelSpec

        return ModelSpec.from_options(self.context.options)

    def skip_reason(self, samples: gpd.GeoDataFrame) -> str | None:
        """Add the missing torch/open_clip install and a missing model to the base reasons."""
        reason = super().skip_reason(samples)
        if reason is not None:
            return reason
        if not all(_installed(name) for name in ("torch", "open_clip")):
            return NOT_INSTALLED
        spec = self._spec()
        if spec is None:
            return NO_MODEL
        try:
            import open_clip  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            return NOT_INSTALLED
        except RuntimeError as error:
            # A torchvision build that does not match torch fails here.
            return f"torch or open_clip failed to import ({error}); reinstall 'eoaudit[clip]'"
        column = image_column(samples, spec.kind)
        if not samples[column].notna().any():
            return f"no {column} references"
        return None

    def settings(self) -> dict[str, Any]:
        """Return the rule values and model options used."""
        rules = self._rules()
        options = self.context.options
        return {
            "pool_size": int(rules.get("pool_size", 100)),
            "low_percentile": float(rules.get("low_percentile", 5)),
            "outlier_iqr_factor": float(rules.get("outlier_iqr_factor", 1.5)),
            "crop_size": int(rules.get("crop_size", 224)),
            "sentence_scoring": bool(options.get("sentence_scoring", False)),
            "device": str(options.get("device") or "auto"),
            "precision": str(options.get("precision") or "auto"),
            **{
                key: str(options[key])
                for key in (
                    "clip_model",
                    "clip_checkpoint",
                    "clip_hf_folder",
                    "clip_multispectral_checkpoint",
                )
                if options.get(key)
            },
        }

    def map_chunk(self, chunk: gpd.GeoDataFrame) -> ChunkResult[AlignmentState]:
        """Embed the chunk's images and captions and score its pools."""
        from eoaudit.clip_backends import EmbeddingCache, embed_images, embed_texts, load_backend

        rules = self._rules()
        options = self.context.options
        spec = self._spec()
        if spec is None:
            raise UsageError(NO_MODEL)
        pool_size = _positive(rules.get("pool_size", 100), "pool_size in rules/alignment.yaml")
        report_pairs = int(rules.get("report_pairs", 12))
        batch_size = _positive(
            options.get("batch_size") or rules.get("batch_size", 64), "--batch-size"
        )
        sentence_scoring = bool(options.get("sentence_scoring", False))
        positions = self._positions(chunk, pool_size)

        backend = load_backend(
            spec,
            rules,
            str(options.get("device") or "auto"),
            str(options.get("precision") or "auto"),
        )
        transform = backend.transform(rules)
        cache = EmbeddingCache(self.context.cache_dir, spec.cache_key())
        column = image_column(chunk, spec.kind)
        refs = chunk[column].astype("string") if column in chunk else pd.Series(pd.NA, chunk.index)
        captions = chunk[CAPTION].fillna("").astype(str)

        state = AlignmentState(context_length=backend.context_length)
        has_ref = refs.notna() & refs.fillna("").str.strip().ne("")
        has_caption = captions.str.strip().ne("")
        _note(state, "no image reference", list(chunk.index[~has_ref]))
        _note(state, "empty caption", list(chunk.index[has_ref & ~has_caption]))
        candidates = has_ref & has_caption

        images = embed_images(
            backend,
            refs[candidates].tolist(),
            transform,
            cache,
            batch_size=batch_size,
            workers=loader_workers(options, backend.device.type),
            progress=options.get("progress"),
        )
        readable = candidates & refs.map(lambda r: r in images.vectors, na_action="ignore").fillna(
            False
        ).astype(bool)
        unreadable = chunk.index[candidates & ~readable]
        _note(
            state,
            "unreadable image",
            [f"{sid}: {images.errors.get(str(refs[sid]), 'unreadable')}" for sid in unreadable],
        )

        units = {
            sid: split_sentences(text) if sentence_scoring else [text.strip()]
            for sid, text in captions[readable].items()
        }
        distinct_units = list(dict.fromkeys(unit for parts in units.values() for unit in parts))
        unit_vectors = embed_texts(backend, distinct_units, cache, batch_size)
        counts = dict(zip(distinct_units, backend.token_counts(distinct_units), strict=True))

        columns, spill = _score_chunk(
            chunk,
            positions,
            readable,
            refs,
            captions,
            units,
            unit_vectors,
            counts,
            images.vectors,
            backend,
            pool_size,
            state,
        )
        self._keep_examples(state, chunk, refs, transform, report_pairs)
        return ChunkResult(state, columns, spill)

    def _positions(self, chunk: gpd.GeoDataFrame, pool_size: int) -> np.ndarray:
        """Return the chunk's positions in its partition; check that no pool leaves the chunk."""
        index = self.context.sample_columns.index
        positions = index.get_indexer(chunk.index)
        if len(positions) and (positions < 0).any():
            raise RuntimeError(
                "alignment: the chunk's samples are missing from context.sample_columns; "
                "run the analyzer through eoaudit.engine.run_audit"
            )
        if len(positions) == 0:
            return positions.astype(np.int64)
        total = max(self.context.sample_count, len(index))
        first, end = int(positions[0]), int(positions[-1]) + 1
        if first % pool_size or (end % pool_size and end != total):
            raise UsageError(
                f"the chunk size must be a multiple of the alignment pool size ({pool_size}), "
                "so that no retrieval pool spans two chunks of a partition; change --chunk-size "
                "or pool_size in rules/alignment.yaml"
            )
        return positions.astype(np.int64)

    def _keep_examples(
        self,
        state: AlignmentState,
        chunk: gpd.GeoDataFrame,
        refs: pd.Series,
        transform: Any,
        report_pairs: int,
    ) -> None:
        """Keep the chunk's lowest pairs with thumbnails; merge keeps the lowest of all."""
        from eoaudit.chip_loading import rgb_preview
        from eoaudit.images import CHIP_READ_ERRORS, read_chip

        rules = self._rules()
        state.lowest = sorted(state.lowest, key=_lowest_key)[:report_pairs]
        state.swaps = sorted(state.swaps, key=_swap_key)[:report_pairs]
        size = int(rules.get("thumbnail_px", 96))
        for example in state.lowest:
            ref = str(refs[example.sample_id])
            try:
                png = rgb_preview(read_chip(ref), size, transform)
            except (EoauditError, *CHIP_READ_ERRORS) as error:
                # The embedding may come from the cache while the file is gone.
                logger.warning("alignment: no thumbnail for %s (%s)", example.sample_id, error)
                continue
            example.thumbnail = "data:image/png;base64," + base64.b64encode(png).decode("ascii")

    def merge(self, left: AlignmentState, right: AlignmentState) -> AlignmentState:
        """Add the counts of two chunks; keep the lowest pairs and largest swaps of both."""
        limit = int(self._rules().get("report_pairs", 12))
        merged = AlignmentState(
            not_scored={
                reason: left.not_scored.get(reason, 0) + right.not_scored.get(reason, 0)
                for reason in {**left.not_scored, **right.not_scored}
            },
            not_scored_examples={
                reason: (
                    left.not_scored_examples.get(reason, [])
                    + right.not_scored_examples.get(reason, [])
                )[:MAX_EXAMPLES]
                for reason in {**left.not_scored, **right.not_scored}
            },
            lowest=sorted(left.lowest + right.lowest, key=_lowest_key)[:limit],
            swaps=sorted(left.swaps + right.swaps, key=_swap_key)[:limit],
            context_length=max(left.context_length, right.context_length),
            short_pools=left.short_pools + right.short_pools,
        )
        return merged

    def finalize(self, state: AlignmentState, result: AnalyzerResult) -> None:
        """Report scores, retrieval, truncation and findings."""
        files = self.context.spill_files.get(self.name, [])
        scratch = self.context.scratch_dir
        if scratch is None:
            raise RuntimeError(
                "alignment: finalize needs a scratch folder in AuditContext; run the analyzer "
                "through eoaudit.engine.run_audit"
            )
        rules = self._rules()
        low_percentile = float(rules.get("low_percentile", 5))
        with closing(connect(scratch, self.context.finalize_memory)) as db:
            factor = float(rules.get("outlier_iqr_factor", 1.5))
            scores = PairScores.of(db, files, low_percentile, factor)
        report = _Finalizer(state, scores, result, rules, self.context.options)
        report.run()


def _positive(value: Any, name: str) -> int:
    """Return `value` as an integer of at least 1, or raise UsageError naming the setting."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise UsageError(f"{name} must be a whole number of at least 1, got {value!r}")
    return number


def _installed(name: str) -> bool:
    """Return whether a top-level package can be found, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def image_column(samples: pd.DataFrame, kind: str) -> str:
    """Return the column with the images for a model kind.

    The llama3-ssl4eo reader adds `image_s2l2a` and `image_s2rgb`; a
    multispectral model reads the former and an RGB model the latter when
    present. Otherwise both read `image`.
    """
    modality = "multispectral" if kind == "multispectral" else "rgb"
    column = MODALITY_COLUMNS[modality]
    if column in samples and samples[column].notna().any():
        return column
    return IMAGE


def loader_workers(options: dict[str, Any], device: str) -> int:
    """Return the DataLoader worker count: `decode_workers`, else a default for the device.

    On the CPU the model needs the cores itself, so at most 4 spare cores
    decode. On a GPU decoding is the likely limit, so up to 16 spare cores do.

    NOTE: the GPU default is an estimate that has not run on a GPU;
    `benchmarks/alignment.py --device cuda` measures it.
    """
    import multiprocessing
    import os

    value = options.get("decode_workers")
    if value is not None and int(value) < 0:
        raise UsageError(f"decode_workers (--loader-workers) must be 0 or more, got {value}")
    spare = max(0, (os.cpu_count() or 1) - 1)
    workers = min(16 if device == "cuda" else 4, spare) if value is None else int(value)
    if workers and multiprocessing.current_process().daemon:
        # Partitions running in a process pool cannot start DataLoader worker processes.
        logger.info("alignment: decoding chips in the partition's own process")
        return 0
    return workers


def _note(state: AlignmentState, reason: str, examples: list[Any]) -> None:
    if examples:
        state.not_scored[reason] = state.not_scored.get(reason, 0) + len(examples)
        kept = state.not_scored_examples.setdefault(reason, [])
        kept.extend(str(e) for e in examples[: MAX_EXAMPLES - len(kept)])


_NO_RETRIEVAL: dict[str, float | int | None] = {
    "pairs": 0,
    "recall_at_1": None,
    "recall_at_5": None,
    "median_rank": None,
    "mean_pool_size": None,
}


def _clipscore(cosine: float) -> float:
    return CLIPSCORE_WEIGHT * max(cosine, 0.0)


def _lowest_key(example: PairExample) -> tuple[float, int]:
    return (example.cosine, example.position)


def _swap_key(example: SwapExample) -> tuple[float, int]:
    return (-example.margin, example.position)


def _score_chunk(
    chunk: gpd.GeoDataFrame,
    positions: np.ndarray,
    readable: pd.Series,
    refs: pd.Series,
    captions: pd.Series,
    units: dict[Any, list[str]],
    unit_vectors: dict[str, np.ndarray],
    counts: dict[str, int],
    image_vectors: dict[str, np.ndarray],
    backend: ClipBackend,
    pool_size: int,
    state: AlignmentState,
) -> tuple[pd.DataFrame, pa.Table]:
    """Score each pool of the chunk; fill `state`; return the per-sample columns and spill."""
    ids = chunk.index
    columns = pd.DataFrame(
        {
            "clipscore": pd.Series(np.nan, index=ids, dtype="float64"),
            "cosine": pd.Series(np.nan, index=ids, dtype="float64"),
            "rank_image": pd.Series(pd.NA, index=ids, dtype="Int64"),
            "rank_caption": pd.Series(pd.NA, index=ids, dtype="Int64"),
            "truncated": pd.Series(pd.NA, index=ids, dtype="boolean"),
            "swap_with": pd.Series(pd.NA, index=ids, dtype="string"),
        },
        index=ids,
    )
    pools = positions // pool_size
    mask = readable.to_numpy()
    gathered: dict[str, list[Any]] = {name: [] for name in SPILL_SCHEMA.names}
    for pool in np.unique(pools):
        if int((pools == pool).sum()) < pool_size:
            state.short_pools += 1
        members = np.flatnonzero((pools == pool) & mask)
        if len(members) == 0:
            continue
        member_ids = ids[members]
        texts = np.stack(
            [np.mean([unit_vectors[u] for u in units[sid]], axis=0) for sid in member_ids]
        )
        member_refs = [str(refs[sid]) for sid in member_ids]
        images = np.stack([image_vectors[ref] for ref in member_refs])
        scores = score_pool(texts, images, member_refs)
        truncated = np.array(
            [any(counts[u] > backend.context_length for u in units[sid]) for sid in member_ids]
        )

        columns.loc[member_ids, "cosine"] = scores.cosine
        columns.loc[member_ids, "clipscore"] = CLIPSCORE_WEIGHT * np.maximum(scores.cosine, 0.0)
        columns.loc[member_ids, "rank_image"] = scores.rank_image
        columns.loc[member_ids, "rank_caption"] = scores.rank_caption
        columns.loc[member_ids, "truncated"] = truncated
        for i, j in enumerate(scores.best_other):
            if j < 0:
                continue
            columns.loc[member_ids[i], "swap_with"] = str(member_ids[j])
            margin = float(texts[i] @ images[j] - scores.cosine[i])
            state.swaps.append(
                SwapExample(
                    int(positions[members[i]]),
                    str(member_ids[i]),
                    str(member_ids[j]),
                    margin,
                    bool(scores.mutual[i]),
                    str(captions[member_ids[i]]),
                )
            )
        for i, sid in enumerate(member_ids):
            state.lowest.append(
                PairExample(
                    int(positions[members[i]]),
                    str(sid),
                    str(captions[sid]),
                    float(scores.cosine[i]),
                    int(scores.rank_image[i]),
                    int(scores.rank_caption[i]),
                )
            )
        gathered["cosine"].append(scores.cosine)
        gathered["rank_image"].append(scores.rank_image)
        gathered["rank_caption"].append(scores.rank_caption)
        gathered["pool_size"].append(np.full(len(members), len(members)))
        gathered["mutual"].append(scores.mutual)
        gathered["truncated"].append(truncated)

    spill = pa.table(
        {
            name: pa.array(
                np.concatenate(gathered[name]) if gathered[name] else [],
                SPILL_SCHEMA.field(name).type,
            )
            for name in SPILL_SCHEMA.names
        },
        schema=SPILL_SCHEMA,
    )
    return columns, spill


HISTOGRAM_BINS = 40


@dataclass
class PairScores:
    """Distribution measures of the spilled pair rows, computed by DuckDB.

    Percentiles interpolate linearly between the two nearest ranks, as
    numpy's default does. Means use compensated summation on one thread, so
    a rerun over the same rows gives the same bits.

    Attributes:
        pairs: Scored pairs.
        clipscore_mean, clipscore_p05, clipscore_median, cosine_mean: None without pairs.
        cosine_q1, cosine_q3, cosine_low: Cosine quartiles and the `low_percentile` percentile.
        below_low: Pairs whose cosine is below `cosine_low`.
        below_fence: Pairs whose cosine is below Q1 - factor x IQR.
        histogram: CLIPScore counts in :data:`HISTOGRAM_BINS` equal bins, and the bin edges.
        retrieval: Per direction (`rank_image`, `rank_caption`): pairs in pools of 2 or
            more, their ranks at most 1 and at most 5, median rank; and `mean_pool_size`.
        swaps: Ranked pairs whose caption fits another image better.
        mutual: Those of them that are mutual swaps.
        truncated: Pairs whose caption was truncated.
    """

    pairs: int = 0
    clipscore_mean: float | None = None
    clipscore_p05: float | None = None
    clipscore_median: float | None = None
    cosine_mean: float | None = None
    cosine_q1: float = 0.0
    cosine_q3: float = 0.0
    cosine_low: float = 0.0
    below_low: int = 0
    below_fence: int = 0
    fence: float = 0.0
    histogram: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, np.int64), np.zeros(1))
    )
    retrieval: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    swaps: int = 0
    mutual: int = 0
    truncated: int = 0

    @classmethod
    def of(cls, db: Any, files: list[Path], low_percentile: float, factor: float) -> PairScores:
        """Compute the measures over the spilled rows in `files`."""
        scores = cls()
        db.execute("SET threads = 1")
        if not files:
            return scores
        db.execute(
            "CREATE OR REPLACE TEMP VIEW pairs AS SELECT *, "
            f"{CLIPSCORE_WEIGHT} * greatest(cosine, 0.0) AS clipscore "
            f"FROM read_parquet({parquet_list(files)})"
        )
        scores.pairs = int(db.execute("SELECT count(*) FROM pairs").fetchone()[0])
        if scores.pairs == 0:
            return scores

        row = db.execute(
            "SELECT fsum(clipscore) / count(*), quantile_cont(clipscore, [0.05, 0.5]), "
            "fsum(cosine) / count(*), quantile_cont(cosine, [0.25, 0.75, ?]), "
            "min(clipscore), max(clipscore), count(*) FILTER (WHERE truncated) FROM pairs",
            [low_percentile / 100],
        ).fetchone()
        scores.clipscore_mean = float(row[0])
        scores.clipscore_p05, scores.clipscore_median = (float(v) for v in row[1])
        scores.cosine_mean = float(row[2])
        scores.cosine_q1, scores.cosine_q3, scores.cosine_low = (float(v) for v in row[3])
        scores.truncated = int(row[6])
        scores.fence = scores.cosine_q1 - factor * (scores.cosine_q3 - scores.cosine_q1)

        scores.below_low, scores.below_fence = (
            int(v)
            for v in db.execute(
                "SELECT count(*) FILTER (WHERE cosine < ?), count(*) FILTER (WHERE cosine < ?) "
                "FROM pairs",
                [scores.cosine_low, scores.fence],
            ).fetchone()
        )
        scores.histogram = _histogram_counts(db, float(row[4]), float(row[5]))
        scores._retrieval(db)
        return scores

    def _retrieval(self, db: Any) -> None:
        for column in ("rank_image", "rank_caption"):
            ranked, first, top5, median, pool = db.execute(
                f"SELECT count(*), count(*) FILTER (WHERE {column} <= 1), "
                f"count(*) FILTER (WHERE {column} <= 5), quantile_cont({column}, 0.5), "
                "fsum(pool_size) / count(*) FROM pairs WHERE pool_size >= 2"
            ).fetchone()
            self.retrieval[column] = {
                "pairs": int(ranked),
                "recall_at_1": first / ranked if ranked else None,
                "recall_at_5": top5 / ranked if ranked else None,
                "median_rank": float(median) if ranked else None,
                "mean_pool_size": float(pool) if ranked else None,
            }
        self.swaps, self.mutual = (
            int(v)
            for v in db.execute(
                "SELECT count(*) FILTER (WHERE rank_image > 1), count(*) FILTER (WHERE mutual) "
                "FROM pairs WHERE pool_size >= 2"
            ).fetchone()
        )


def _histogram_counts(db: Any, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Count CLIPScores in equal bins from `low` to `high`, the last bin closed, as numpy does."""
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    counts = np.zeros(HISTOGRAM_BINS, np.int64)
    rows = db.execute(
        f"SELECT least(CAST(floor((clipscore - ?) / (? - ?) * {HISTOGRAM_BINS}) AS BIGINT), "
        f"{HISTOGRAM_BINS - 1}) AS bin, count(*) FROM pairs GROUP BY bin",
        [low, high, low],
    ).fetchall()
    for index, count in rows:
        counts[int(index)] = int(count)
    return counts, edges


class _Finalizer:
    """Turns the merged state into metrics, tables, findings and the histogram."""

    def __init__(
        self,
        state: AlignmentState,
        scores: PairScores,
        result: AnalyzerResult,
        rules: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        self.state = state
        self.scores = scores
        self.result = result
        self.rules = rules
        self.options = options

    def run(self) -> None:
        self._score_metrics()
        self._retrieval()
        self._truncation()
        self._not_scored()
        self._examples()
        self.result.settings["context_length"] = self.state.context_length
        if self.scores.pairs:
            self.result.add_figure(
                "clipscore_histogram",
                "CLIPScore of each pair (2.5 x max(cosine, 0)); dashed: the low percentile",
                self._histogram(),
            )

    def _score_metrics(self) -> None:
        add = self.result.add_metric
        scores = self.scores
        pairs = scores.pairs
        low_percentile = float(self.rules.get("low_percentile", 5))
        factor = float(self.rules.get("outlier_iqr_factor", 1.5))
        add("pairs_scored", pairs, "pairs", "neutral", "Caption-image pairs scored.")
        if pairs == 0:
            for key in ("clipscore_mean", "clipscore_p05", "clipscore_median", "cosine_mean"):
                add(key, None, "score", "higher_is_better", "Undefined: no pair was scored.")
            add("low_outlier_rate", None, "fraction", "lower_is_better", "Undefined: no pair.")
            return
        # Percentiles and the fence use the cosine: CLIPScore clips negative
        # cosines to 0, so its low tail is a run of ties.
        fence = scores.fence
        add(
            "clipscore_mean",
            scores.clipscore_mean,
            "score",
            "higher_is_better",
            "Mean CLIPScore (2.5 x max(cosine, 0)) over scored pairs; compare one model only.",
        )
        add(
            "clipscore_p05",
            scores.clipscore_p05,
            "score",
            "higher_is_better",
            "5th percentile of CLIPScore over scored pairs.",
        )
        add(
            "clipscore_median",
            scores.clipscore_median,
            "score",
            "higher_is_better",
            "Median CLIPScore over scored pairs.",
        )
        add(
            "cosine_mean",
            scores.cosine_mean,
            "cosine",
            "higher_is_better",
            "Mean cosine similarity of caption and image embeddings.",
        )
        outliers = scores.below_fence
        add(
            "low_outlier_rate",
            outliers / pairs,
            "fraction",
            "lower_is_better",
            f"Pairs whose cosine is below Q1 - {factor:g} x IQR of all pairs' cosines.",
        )

        threshold = scores.cosine_low
        low = scores.below_low
        if low:
            examples = [e.sample_id for e in self.state.lowest if e.cosine < threshold]
            self._finding(
                "info",
                "low-alignment-score",
                low,
                examples[:MAX_EXAMPLES],
                f"{low} pair(s) have a cosine below the {low_percentile:g}th percentile of all "
                f"pairs ({threshold:.4g}); review them first",
            )
        if outliers:
            examples = [e.sample_id for e in self.state.lowest if e.cosine < fence]
            self._finding(
                "warning",
                "low-alignment-outlier",
                outliers,
                examples[:MAX_EXAMPLES],
                f"{outliers} pair(s) have a cosine below Q1 - {factor:g} x IQR of all pairs "
                f"({fence:.4g}): their captions may not describe their images",
            )

    def _retrieval(self) -> None:
        add = self.result.add_metric
        state = self.state
        rows = [
            {"direction": direction, **self.scores.retrieval.get(column, _NO_RETRIEVAL)}
            for direction, column in (
                ("caption to image", "rank_image"),
                ("image to caption", "rank_caption"),
            )
        ]
        text, image = rows
        add(
            "recall_at_1",
            text["recall_at_1"],
            "fraction",
            "higher_is_better",
            "Captions whose own image ranks first among the images of their pool.",
        )
        add(
            "recall_at_5",
            text["recall_at_5"],
            "fraction",
            "higher_is_better",
            "Captions whose own image ranks in the first 5 of their pool.",
        )
        add(
            "median_rank_image",
            text["median_rank"],
            "rank",
            "lower_is_better",
            "Median rank of the true image for each caption within its pool.",
        )
        add(
            "image_recall_at_1",
            image["recall_at_1"],
            "fraction",
            "higher_is_better",
            "Images whose own caption ranks first among the captions of their pool.",
        )
        add(
            "image_recall_at_5",
            image["recall_at_5"],
            "fraction",
            "higher_is_better",
            "Images whose own caption ranks in the first 5 of their pool.",
        )
        add(
            "median_rank_caption",
            image["median_rank"],
            "rank",
            "lower_is_better",
            "Median rank of the true caption for each image within its pool.",
        )
        self.result.add_table(
            "retrieval",
            "Retrieval within pools",
            pd.DataFrame(rows),
            f"One row per direction; pools of {self.rules.get('pool_size', 100)} consecutive "
            "samples, pairs in pools with fewer than 2 scored pairs left out.",
        )

        swaps = self.scores.swaps
        mutual = self.scores.mutual
        pairs = int(text["pairs"] or 0)
        add(
            "swap_candidates",
            swaps,
            "pairs",
            "lower_is_better",
            "Pairs whose caption scores higher on another image of its pool than on its own.",
        )
        add(
            "swap_rate",
            swaps / pairs if pairs else None,
            "fraction",
            "lower_is_better",
            "Swap candidates over pairs in pools of 2 or more.",
        )
        add(
            "mutual_swaps",
            mutual,
            "pairs",
            "lower_is_better",
            "Swap candidates whose better-fitting image's caption also fits their image better.",
        )
        add(
            "short_pools",
            state.short_pools,
            "pools",
            "neutral",
            "Retrieval pools with fewer samples than pool_size.",
        )
        if state.short_pools > 1:
            self._finding(
                "info",
                "retrieval-pools-cut",
                state.short_pools,
                [],
                f"{state.short_pools} retrieval pools have fewer than "
                f"{self.rules.get('pool_size', 100)} samples because partitions end inside "
                "them; recall is higher in small pools, so use a chunk size that is a multiple "
                "of pool_size",
            )
        if swaps:
            examples = [f"{e.sample_id} (fits {e.swap_with})" for e in state.swaps]
            self._finding(
                "warning",
                "possible-caption-swap",
                swaps,
                examples[:MAX_EXAMPLES],
                f"{swaps} caption(s) score higher on another image of their pool than on "
                f"their own ({mutual} of them mutually); check for swapped captions",
            )
        if state.swaps:
            self.result.add_table(
                "swaps",
                "Possible swaps with the largest margins",
                pd.DataFrame(
                    [
                        {
                            "sample_id": e.sample_id,
                            "fits_image_of": e.swap_with,
                            "margin": e.margin,
                            "mutual": e.mutual,
                            "caption": e.caption,
                        }
                        for e in state.swaps
                    ]
                ),
                "margin: cosine with the other image minus cosine with its own.",
            )

    def _truncation(self) -> None:
        truncated = self.scores.truncated
        pairs = self.scores.pairs
        context = self.state.context_length
        self.result.add_metric(
            "truncated_captions",
            truncated,
            "captions",
            "lower_is_better",
            f"Captions (or sentences) longer than the model's {context} tokens.",
        )
        self.result.add_metric(
            "truncated_rate",
            truncated / pairs if pairs else None,
            "fraction",
            "lower_is_better",
            "Truncated captions over scored pairs.",
        )
        if truncated:
            self._finding(
                "info",
                "caption-truncated",
                truncated,
                [],
                f"{truncated} caption(s) are longer than the model's context of {context} tokens "
                "and were truncated; only their start was scored (try sentence_scoring)",
            )

    def _not_scored(self) -> None:
        total = sum(self.state.not_scored.values())
        self.result.add_metric(
            "pairs_not_scored",
            total,
            "samples",
            "lower_is_better",
            "Samples without an image reference, caption or readable chip.",
        )
        for reason, count in sorted(self.state.not_scored.items()):
            severity = "warning" if reason == "unreadable image" else "info"
            self._finding(
                severity,
                f"not-scored-{reason.replace(' ', '-')}",
                count,
                self.state.not_scored_examples.get(reason, []),
                f"{count} sample(s) were not scored: {reason}",
            )

    def _examples(self) -> None:
        lowest = pd.DataFrame(
            [
                {
                    "sample_id": e.sample_id,
                    "clipscore": _clipscore(e.cosine),
                    "cosine": e.cosine,
                    "rank_image": e.rank_image,
                    "rank_caption": e.rank_caption,
                    "caption": e.caption,
                    "thumbnail": e.thumbnail,
                }
                for e in self.state.lowest
            ],
            columns=[
                "sample_id",
                "clipscore",
                "cosine",
                "rank_image",
                "rank_caption",
                "caption",
                "thumbnail",
            ],
        )
        self.result.add_table(
            "lowest_pairs",
            "Lowest-scoring pairs",
            lowest,
            "The pairs with the lowest cosine, with a true-colour thumbnail (PNG data URI).",
            hidden=True,
        )

    def _finding(
        self, severity: Any, code: str, count: int, examples: list[str], message: str
    ) -> None:
        self.result.findings.append(Finding(severity, code, message, count, examples, "alignment"))

    def _histogram(self) -> bytes:
        figure, axes = new_figure(6.4, 2.8)
        counts, edges = self.scores.histogram
        axes.stairs(counts, edges, fill=True, color="#3b6ea5")
        low = _clipscore(self.scores.cosine_low)
        axes.axvline(low, color="#b3261e", linestyle="--")
        axes.set_xlabel("CLIPScore")
        axes.set_ylabel("pairs")
        return to_png(figure)
