"""Benchmark of the vocabulary analyzer on synthetic Llama3-SSL4EO-S12-like captions.

Generates `--captions` seeded captions of about 100 words (see
`vocabulary_captions.py`) in chunks, runs the analyzer's `map_chunk` on each
chunk in `--workers` processes (each worker generates its chunk, as a worker
of a lazily read dataset loads its partition), merges the states in chunk
order and finalizes. It prints the analyzer's throughput, the throughput of
spaCy's bare tokenisation of the same captions (`nlp.pipe` on a blank English
pipeline, same number of processes) and their ratio, and the peak resident
memory of the main process and of the largest worker.

Usage:
    .venv/bin/python benchmarks/vocabulary.py --captions 1000000 --workers 2
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vocabulary_captions import generate_samples

from eoaudit.analyzers.base import AuditContext
from eoaudit.analyzers.vocabulary import VocabularyAnalyzer
from eoaudit.execution import settle_heap
from eoaudit.nlp import tokenizer_only
from eoaudit.results import AnalyzerResult
from eoaudit.ruleset import load_rules

_ANALYZER: VocabularyAnalyzer | None = None
_OPTIONS: dict[str, Any] = {}


def _configure(options: dict[str, Any]) -> None:
    _OPTIONS.update(options)


def _analyzer() -> VocabularyAnalyzer:
    global _ANALYZER
    if _ANALYZER is None:
        _ANALYZER = VocabularyAnalyzer(AuditContext(rules=load_rules(), options=dict(_OPTIONS)))
    return _ANALYZER


def _chunk(start: int, count: int, seed: int) -> gpd.GeoDataFrame:
    frame = generate_samples(start, count, seed)
    samples = gpd.GeoDataFrame(frame, geometry="geometry", crs="EPSG:4326")
    samples["time"] = pd.NaT
    samples["image"] = None
    samples.index = pd.Index(samples["sample_id"].to_numpy())
    return samples


def _map(task: tuple[int, int, int]) -> tuple[Any, float]:
    start, count, seed = task
    samples = _chunk(start, count, seed)
    clock = time.perf_counter()
    state = _analyzer().map_chunk(samples).state
    elapsed = time.perf_counter() - clock
    settle_heap()  # as the engine does after a worker's first partition
    return state, elapsed


def _tokenise(task: tuple[int, int, int]) -> float:
    start, count, seed = task
    captions = generate_samples(start, count, seed)["caption"].tolist()
    clock = time.perf_counter()
    for _ in tokenizer_only().pipe(captions, batch_size=256):
        pass
    return time.perf_counter() - clock


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=1_000_000, help="captions to generate")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="captions per chunk")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the caption generator")
    parser.add_argument(
        "--baseline-captions",
        type=int,
        default=200_000,
        help="captions tokenised for the spaCy baseline (its rate is per caption)",
    )
    parser.add_argument(
        "--no-landcover",
        action="store_true",
        help="run with the analyzer option landcover_terms=False",
    )
    arguments = parser.parse_args()
    options = {"landcover_terms": not arguments.no_landcover}
    _configure(options)
    size = arguments.chunk_size - arguments.chunk_size % 4 or 4
    tasks = [
        (start, min(size, arguments.captions - start), arguments.seed)
        for start in range(0, arguments.captions, size)
    ]

    analyzer = _analyzer()
    imports_mb = _peak_mb(resource.RUSAGE_SELF)
    with ProcessPoolExecutor(
        arguments.workers, initializer=_configure, initargs=(options,)
    ) as pool:
        baseline_tasks = tasks[: max(1, -(-arguments.baseline_captions // size))]
        baseline_captions = sum(count for _, count, _ in baseline_tasks)
        clock = time.perf_counter()
        list(pool.map(_tokenise, baseline_tasks))
        baseline_wall = time.perf_counter() - clock

        clock = time.perf_counter()
        state = None
        map_seconds = 0.0
        for partial, seconds in pool.map(_map, tasks):
            map_seconds += seconds
            state = partial if state is None else analyzer.merge(state, partial)
        merged = time.perf_counter()
        result = AnalyzerResult("vocabulary", "Vocabulary")
        analyzer.finalize(state, result)
        wall = time.perf_counter() - clock
        finalize_seconds = time.perf_counter() - merged

    baseline_rate = baseline_captions / baseline_wall
    rate = arguments.captions / wall
    print(f"captions:              {arguments.captions:,} in chunks of {size:,}")
    print(f"workers:               {arguments.workers}")
    print(f"options:               {options}")
    print(f"analyzer wall time:    {wall:.1f} s (finalize {finalize_seconds:.1f} s)")
    print(f"analyzer map CPU time: {map_seconds:.1f} s summed over chunks")
    print(f"analyzer throughput:   {rate:,.0f} captions/s")
    print(
        f"spaCy tokenisation:    {baseline_rate:,.0f} captions/s ({baseline_captions:,} captions)"
    )
    print(f"ratio analyzer/spaCy:  {rate / baseline_rate:.2f}")
    print(f"RSS after imports:     {imports_mb:,.0f} MB (import eoaudit and the analyzer)")
    print(f"peak RSS main:         {_peak_mb(resource.RUSAGE_SELF):,.0f} MB")
    print(f"peak RSS worker (max): {_peak_mb(resource.RUSAGE_CHILDREN):,.0f} MB")
    for key in (
        "captions",
        "tokens_mean",
        "vocabulary_size",
        "mtld",
        "distinct_2",
        "ngram_diversity",
        "template_rate",
        "exact_duplicate_rate",
        "near_duplicate_rate",
        "unsupported_claim_rate",
    ):
        print(f"  vocabulary.{key} = {result.metrics[f'vocabulary.{key}'].value}")


if __name__ == "__main__":
    main()
