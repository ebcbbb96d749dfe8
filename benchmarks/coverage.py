"""Benchmark: join generated footprints to countries, continents and climate groups.

Generates N square footprints of 2.64 km (the SSL4EO-S12 chip size) scattered around
random land points, with acquisition times and short captions with season words,
then runs the coverage analyzer over them the way the engine does: chunk by chunk
(`map_chunk`), merging the states, and `finalize` with its figures.

    .venv/bin/python benchmarks/coverage.py --footprints 1000000

Prints the wall time of generation and of the analyzer, the analyzer's CPU time (on a
shared machine the wall time also counts waiting for a core), and the peak resident
memory of the process, which includes the generated GeoDataFrame and every analyzer
module that `eoaudit.analyzers` imports.
"""

from __future__ import annotations

import argparse
import resource
import time

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from eoaudit import reference
from eoaudit.analyzers import AuditContext
from eoaudit.analyzers.coverage import CoverageAnalyzer
from eoaudit.results import AnalyzerResult
from eoaudit.ruleset import load_rules

CHIP_DEG = 2.64 / 111.32
CAPTIONS = (
    "a winter scene with snow-covered fields",
    "green fields and a river in summer",
    "a town with roads and buildings",
    "autumn colours in a forest",
    "dry season grassland",
)


def generate(count: int, seed: int) -> gpd.GeoDataFrame:
    """Return `count` footprints around land centres, with times and captions."""
    rng = np.random.default_rng(seed)
    centres = reference.continents().sample_points(2000, rng=rng).explode(index_parts=False)
    cx = centres.x.to_numpy()
    cy = centres.y.to_numpy()
    pick = rng.integers(0, len(cx), count)
    lon = np.clip(cx[pick] + rng.normal(0, 0.5, count), -179.9, 179.9)
    lat = np.clip(cy[pick] + rng.normal(0, 0.5, count), -89.9, 89.9)
    half = CHIP_DEG / 2
    footprints = shapely.box(lon - half, lat - half, lon + half, lat + half)
    start = pd.Timestamp("2019-01-01", tz="UTC")
    times = start + pd.to_timedelta(rng.integers(0, 3 * 365, count), unit="D")
    ids = np.char.add("s", np.arange(count).astype(str))
    frame = gpd.GeoDataFrame(
        {
            "sample_id": ids,
            "caption": np.asarray(CAPTIONS, dtype=object)[rng.integers(0, len(CAPTIONS), count)],
            "time": times,
            "image": None,
            "location_id": np.char.add("l", (np.arange(count) // 4).astype(str)),
        },
        geometry=footprints,
        crs="EPSG:4326",
    )
    frame.index = pd.Index(ids)
    return frame


def run(samples: gpd.GeoDataFrame, chunk_size: int) -> AnalyzerResult:
    """Run the coverage analyzer over the samples chunk by chunk."""
    context = AuditContext(rules=load_rules(), sample_count=len(samples))
    analyzer = CoverageAnalyzer(context)
    state = None
    for start in range(0, len(samples), chunk_size):
        partial = analyzer.map_chunk(samples.iloc[start : start + chunk_size]).state
        state = partial if state is None else analyzer.merge(state, partial)
    result = AnalyzerResult(name=analyzer.name, title=analyzer.title)
    assert state is not None
    analyzer.finalize(state, result)
    return result


def main() -> None:
    """Parse options, generate, run and print the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--footprints", type=int, default=1_000_000, help="footprints to generate")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="samples per chunk")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()

    clock = time.perf_counter()
    samples = generate(args.footprints, args.seed)
    generated = time.perf_counter() - clock

    clock = time.perf_counter()
    cpu_clock = time.process_time()
    result = run(samples, args.chunk_size)
    analysed = time.perf_counter() - clock
    analysed_cpu = time.process_time() - cpu_clock
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"footprints: {args.footprints:,}  chunk size: {args.chunk_size:,}")
    print(f"generation: {generated:.1f} s")
    print(f"coverage analyzer (joins, counts, finalize with figures): {analysed:.1f} s wall")
    print(f"  CPU time of this process meanwhile: {analysed_cpu:.1f} s")
    print(f"peak resident memory of the process: {peak_mib:,.0f} MiB")
    located = result.metrics["coverage.samples_located"].value
    countries = result.metrics["coverage.countries_covered"].value
    print(f"samples located: {located:,}  countries covered: {countries}")


if __name__ == "__main__":
    main()
