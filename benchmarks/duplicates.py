"""Time the out-of-core duplicate search and measure the memory it takes.

Writes spilled vocabulary rows in the format of `VocabularyAnalyzer._spill`
(one Parquet file per partition) with seeded random keys, a share of exact
copies and of near copies (captions sharing some band hashes). Then, in a
fresh process per memory limit, it does what the engine and the vocabulary
analyzer do in finalize: combine the files into one
(:func:`eoaudit.spill.combine`) and run
:func:`eoaudit.duplicates.find_duplicates`. It samples the process's resident
memory every 0.1 s.

    python benchmarks/duplicates.py --rows 1000000 --partition-rows 256 --limits 256MB 1GB
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from eoaudit.spill import sequenced

BANDS = 8

SEARCH = """
import sys, time
from contextlib import closing
from pathlib import Path
import psutil
from eoaudit.duplicates import find_duplicates, open_spilled
from eoaudit.spill import combine, connect
folder, limit = Path(sys.argv[1]), sys.argv[2]
files = sorted(folder.glob("part-*.parquet"))
imported = psutil.Process().memory_info().rss
clock = time.perf_counter()
combined = combine(files, folder / f"combined-{limit}.parquet")
combined_s = time.perf_counter() - clock
with closing(connect(folder / f"scratch-{limit}", limit)) as db:
    open_spilled(db, [combined])
    found = find_duplicates(db, 8, 20, 5, folder / f"columns-{limit}.parquet", "vocabulary.")
seconds = time.perf_counter() - clock - combined_s
print(imported, combined_s, seconds, found.exact, found.near_clusters, found.rounds)
"""


def write_rows(folder: Path, rows: int, partition_rows: int, seed: int) -> None:
    """Write the spilled rows: 5% exact copies and 5% near copies of earlier captions."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(1, 2**63, rows, dtype=np.uint64)
    bands = rng.integers(1, 2**63, (rows, BANDS), dtype=np.uint64)
    copies = rng.choice(np.arange(1000, rows), rows // 10, replace=False)
    exact, near = copies[: len(copies) // 2], copies[len(copies) // 2 :]
    exact_sources = rng.integers(0, exact)
    keys[exact] = keys[exact_sources]
    bands[exact] = bands[exact_sources]
    near_sources = rng.integers(0, near)
    shared = rng.integers(0, BANDS, len(near))
    bands[near, shared] = bands[near_sources, shared]
    locations = rng.integers(1, rows // 4, rows, dtype=np.uint64)
    snippet = "The image shows a wide river that winds through dense green forest " * 2
    for number, start in enumerate(range(0, rows, partition_rows)):
        part = slice(start, start + partition_rows)
        count = len(keys[part])
        columns = {
            "sample_id": pa.array([f"{i:07d}_0" for i in range(start, start + count)]),
            "key": pa.array(keys[part], pa.uint64()),
            **{f"band_{b}": pa.array(bands[part, b], pa.uint64()) for b in range(BANDS)},
            "location": pa.array(locations[part], pa.uint64()),
            "snippet": pa.array([snippet[:120]] * count, pa.string()),
            "group.location_id": pa.array([f"{i // 4:07d}" for i in range(start, start + count)]),
        }
        table = sequenced(pa.table(columns), number)
        pq.write_table(table, folder / f"part-{number:06d}.vocabulary.spill.parquet")


def measure(folder: Path, limit: str) -> tuple[int, list[str]]:
    """Run the search in a new process; return its peak RSS and its output fields."""
    process = psutil.Popen(
        [sys.executable, "-c", SEARCH, str(folder), limit],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    output, errors = process.communicate()
    if process.returncode:
        sys.stderr.write(errors.decode())
    return peak, output.decode().split()


def main() -> None:
    """Parse options, write the rows once and search them under each memory limit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partition-rows", type=int, default=256)
    parser.add_argument("--limits", nargs="+", default=["256MB", "1GB"])
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        clock = time.perf_counter()
        write_rows(folder, arguments.rows, arguments.partition_rows, arguments.seed)
        files = len(list(folder.glob("part-*")))
        print(
            f"wrote {arguments.rows:,} rows in {files} files in {time.perf_counter() - clock:.1f} s"
        )
        print(
            "\n| rows | files | memory limit | combine (s) | search (s) | peak memory (MiB) "
            "| after imports (MiB) | exact duplicates | near clusters | rounds |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        mib = 2**20
        for limit in arguments.limits:
            peak, (imported, combined, seconds, exact, clusters, rounds) = measure(folder, limit)
            print(
                f"| {arguments.rows:,} | {files} | {limit} | {float(combined):.1f} "
                f"| {float(seconds):.1f} "
                f"| {peak / mib:.0f} | {int(imported) / mib:.0f} | {exact} | {clusters} "
                f"| {rounds} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
