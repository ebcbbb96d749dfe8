"""Measure how much two CPU-bound processes slow each other down on this machine.

A pure-Python loop runs alone, then twice at once in two processes. The ratio
is the best speed-up any two-worker run can expect here.

    python benchmarks/parallel_baseline.py
"""

import multiprocessing
import time

ITERATIONS = 30_000_000


def burn(iterations: int) -> float:
    """Run a loop of integer arithmetic and return its wall time in seconds."""
    start = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i
    return time.perf_counter() - start


if __name__ == "__main__":
    alone = burn(ITERATIONS)
    with multiprocessing.Pool(2) as pool:
        together = pool.map(burn, [ITERATIONS, ITERATIONS])
    print(f"one process: {alone:.2f} s")
    print(f"two processes at once: {together[0]:.2f} s, {together[1]:.2f} s")
    print(
        f"slowdown: {max(together) / alone:.2f}x, best two-worker speed-up: "
        f"{2 * alone / max(together):.2f}x"
    )
