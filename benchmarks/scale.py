"""Time a whole audit of a generated Llama3-SSL4EO-S12-layout dataset with 1 and 2 workers.

Runs `eoaudit run` in a subprocess per configuration and samples the resident
memory of its process tree every 0.2 s with psutil: the client process alone,
the largest child (a Dask worker or nanny), and the whole tree. Generate the
data first with benchmarks/scale_data.py.

    python benchmarks/scale.py --data /tmp/eoaudit-scale
    python benchmarks/scale.py --data /tmp/eoaudit-scale --only processes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

CONFIGURATIONS = {
    "1 worker (local)": ["--scheduler", "local"],
    "2 workers (processes)": ["--scheduler", "processes", "--workers", "2"],
}


@dataclass
class Peaks:
    """Peak resident memory in bytes: the client, its largest child, the whole tree."""

    client: int = 0
    child: int = 0
    tree: int = 0

    def sample(self, process: psutil.Process) -> None:
        """Read the current resident memory of the tree and keep the maxima."""
        sizes = []
        for member in [process, *process.children(recursive=True)]:
            try:
                sizes.append(member.memory_info().rss)
            except psutil.NoSuchProcess:
                sizes.append(0)
        self.client = max(self.client, sizes[0])
        self.child = max(self.child, max(sizes[1:], default=0))
        self.tree = max(self.tree, sum(sizes))


def run(arguments: list[str]) -> tuple[float, Peaks, int]:
    """Run one audit; return wall seconds, peak memory and the exit code."""
    clock = time.perf_counter()
    process = psutil.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks = Peaks()
    while process.poll() is None:
        try:
            peaks.sample(process)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    process.wait()
    wall = time.perf_counter() - clock
    if process.returncode not in (0, 1):
        sys.stderr.write(process.stderr.read().decode())
    return wall, peaks, process.returncode


def main() -> None:
    """Parse options, run each configuration and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder from scale_data.py")
    parser.add_argument("--analyzers", default="dataset,vocabulary,hallucination,coverage")
    parser.add_argument(
        "--only", choices=["local", "processes"], help="run one configuration, not both"
    )
    parser.add_argument("--finalize-memory", help="passed on to eoaudit run, e.g. 256MB")
    arguments = parser.parse_args()

    data = arguments.data
    eoaudit = str(Path(sys.executable).with_name("eoaudit"))
    rows = []
    for name, extra in CONFIGURATIONS.items():
        if arguments.only and arguments.only not in name:
            continue
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
            if arguments.finalize_memory:
                command += ["--finalize-memory", arguments.finalize_memory]
            wall, peaks, code = run(command)
            samples = None
            results = Path(out) / "results.json"
            if results.is_file():
                samples = json.loads(results.read_text(encoding="utf-8"))["dataset"]["samples"]
        rows.append((name, samples, wall, peaks, code))
        print(f"{name}: {samples} samples, {wall:.1f} s, {peaks}, exit {code}")

    print(
        "\n| configuration | samples | wall time (s) | samples/s | peak memory (GiB): "
        "client / largest worker / all processes |"
    )
    print("|---|---|---|---|---|")
    gib = 2**30
    for name, samples, wall, peaks, _ in rows:
        rate = f"{samples / wall:,.0f}" if samples else "-"
        memory = f"{peaks.client / gib:.2f} / {peaks.child / gib:.2f} / {peaks.tree / gib:.2f}"
        print(f"| {name} | {samples:,} | {wall:.1f} | {rate} | {memory} |")
    if len(rows) == 2 and rows[1][2]:
        print(f"\nspeed-up with 2 workers: {rows[0][2] / rows[1][2]:.2f}x")


if __name__ == "__main__":
    main()
