"""Benchmark: the hallucination analyzer end to end, first run and rerun from the area cache.

The samples have SSL4EO-size footprints (2640 m) near São Tomé on the real
WorldCover tile N00E006 and captions from a fixed list. The script runs
`run_audit(..., analyzers=["hallucination"])` once with an empty cache folder,
then again with the cache the first run filled, and prints samples per second
of both runs (one process, local scheduler).

Run from the repository root:

    .venv/bin/python benchmarks/hallucination_audit.py --samples 2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import pandas as pd

from eoaudit import AuditOptions, run_audit
from eoaudit.samples import BadRows, SampleSet, build_samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hallucination import TILE_FOLDER, footprints

CAPTIONS = (
    "Dense tropical forest covers hilly terrain with no visible buildings.",
    "A small town with buildings and roads beside the sea.",
    "Farmland and scattered trees next to a river; possibly a lake in the north.",
    "Open ocean water with no land in sight.",
    "Snow-covered mountains above a glacier and bare rock.",
    "A coastline where the forest meets the sea, with a beach and a golf course.",
)


def sample_set(count: int) -> SampleSet:
    """Return `count` samples on the real tile with captions from :data:`CAPTIONS`."""
    frame = pd.DataFrame(
        {
            "sample_id": [f"s{i:06d}" for i in range(count)],
            "caption": [CAPTIONS[i % len(CAPTIONS)] for i in range(count)],
        }
    )
    geometry = gpd.GeoSeries(footprints(count, seed=1), crs="EPSG:4326")
    samples = build_samples(
        frame, geometry=geometry, source="benchmark", bad_rows=BadRows("b", "error")
    )
    return SampleSet(samples=samples, source="benchmark", format="table", rows_read=count)


def timed_run(dataset: SampleSet, cache: Path) -> float:
    """Return the seconds one audit with the hallucination analyzer takes."""
    start = time.perf_counter()
    run_audit(
        dataset,
        AuditOptions(
            analyzers=["hallucination"],
            analyzer_options={"worldcover": str(TILE_FOLDER)},
            cache_dir=cache,
            chunk_size=1000,
        ),
    )
    return time.perf_counter() - start


def main() -> None:
    """Print samples per second of a first run and a cached rerun."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="samples to audit")
    arguments = parser.parse_args()

    dataset = sample_set(arguments.samples)
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder)
        first = timed_run(dataset, cache)
        # An unchanged rerun could reuse the finished partitions of the first run.
        # Changed captions make the analyzer run again, reading areas from its cache.
        dataset.samples["caption"] = dataset.samples["caption"] + " "
        second = timed_run(dataset, cache)
    print(f"samples: {arguments.samples} on tile N00E006, {len(CAPTIONS)} distinct captions")
    print(f"first run (reads tiles):   {arguments.samples / first:8.1f} samples/s ({first:.2f} s)")
    print(
        f"rerun (area cache filled): {arguments.samples / second:8.1f} samples/s ({second:.2f} s)"
    )


if __name__ == "__main__":
    main()
