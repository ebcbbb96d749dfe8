"""Analyzers used only by the tests of distributed and resumed runs.

They are registered when `register_test_analyzers()` is called and removed by
`unregister_test_analyzers()`, so that other tests never run them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from eoaudit.analyzers import Analyzer, ChunkResult
from eoaudit.analyzers import base as analyzer_base


class CaptionLengthAnalyzer(Analyzer[int]):
    """Sum caption lengths; with options it can sleep, crash its worker or fail."""

    name = "test-length"
    title = "Test length"

    def map_chunk(self, chunk):
        options = self.context.options
        # A CLI run in a subprocess gets its options from the environment.
        log = options.get("test_log", os.environ.get("EOAUDIT_TEST_LOG"))
        if log:
            with Path(log).open("a", encoding="utf-8") as handle:
                handle.write(f"{chunk['sample_id'].iloc[0]}\n")
        sleep_s = float(options.get("test_sleep_s", os.environ.get("EOAUDIT_TEST_SLEEP_S", 0)))
        time.sleep(sleep_s)
        marker = options.get("test_crash_marker")
        if marker and options.get("test_crash_id") in set(chunk["sample_id"]):
            if not Path(marker).exists():
                Path(marker).write_text("crashed once", encoding="utf-8")
                os._exit(1)  # the worker process dies mid-partition
        if options.get("test_fail_id") in set(chunk["sample_id"]):
            raise ValueError(f"refusing partition with {options['test_fail_id']}")
        return ChunkResult(int(chunk["caption"].str.len().sum()))

    def merge(self, left, right):
        return left + right

    def finalize(self, state, result):
        result.add_metric("characters", state, "characters", "neutral", "Caption characters.")


def register_test_analyzers() -> None:
    analyzer_base.register(CaptionLengthAnalyzer)


def unregister_test_analyzers() -> None:
    analyzer_base._REGISTRY.pop(CaptionLengthAnalyzer.name, None)
