"""Time a whole audit of a generated Llama3-SSL4EO-S12-layout dataset with 1 and 2 workers.

Runs `eoaudit run` in a subprocess per configuration and samples the resident
memory of its whole process tree (client and Dask workers) every 0.2 s with
psutil. Generate the data first with benchmarks/scale_data.py.

    python benchmarks/scale.py --data /tmp/eoaudit-scale
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

CONFIGURATIONS = {
    "1 worker (local)": ["--scheduler", "local"],
    "2 workers (processes)": ["--scheduler", "processes", "--workers", "2"],
}


def tree_rss(process: psutil.Process) -> int:
    """Return the resident memory of a process and all its children, in bytes."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def run(arguments: list[str]) -> tuple[float, int, int]:
    """Run one audit; return wall seconds, peak tree RSS in bytes and the exit code."""
    clock = time.perf_counter()
    process = psutil.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process))
        time.sleep(0.2)
    wall = time.perf_counter() - clock
    if process.returncode not in (0, 1):
        sys.stderr.write(process.stderr.read().decode())
    return wall, peak, process.returncode


def main() -> None:
    """Parse options, run each configuration and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder from scale_data.py")
    parser.add_argument("--analyzers", default="dataset,vocabulary,hallucination,coverage")
    arguments = parser.parse_args()

    data = arguments.data
    eoaudit = str(Path(sys.executable).with_name("eoaudit"))
    rows = []
    for name, extra in CONFIGURATIONS.items():
        with tempfile.TemporaryDirectory() as out:
            command = [
                eoaudit,
                "run",
                "--dataset",
                str(data / "captions"),
                "--metadata",
                str(data / "metadata.parquet"),
                "--worldcover",
                str(data / "worldcover"),
                "--analyzers",
                arguments.analyzers,
                "--out",
                out,
                "--quiet",
                *extra,
            ]
            wall, peak, code = run(command)
            samples = None
            results = Path(out) / "results.json"
            if results.is_file():
                samples = json.loads(results.read_text(encoding="utf-8"))["dataset"]["samples"]
        rows.append((name, samples, wall, peak, code))
        print(f"{name}: {samples} samples, {wall:.1f} s, peak {peak / 2**30:.2f} GiB, exit {code}")

    print("\n| configuration | samples | wall time (s) | samples/s | peak memory (GiB) |")
    print("|---|---|---|---|---|")
    for name, samples, wall, peak, _ in rows:
        rate = f"{samples / wall:,.0f}" if samples else "-"
        print(f"| {name} | {samples:,} | {wall:.1f} | {rate} | {peak / 2**30:.2f} |")
    if len(rows) == 2 and rows[1][2]:
        print(f"\nspeed-up with 2 workers: {rows[0][2] / rows[1][2]:.2f}x")


if __name__ == "__main__":
    main()
