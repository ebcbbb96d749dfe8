"""Dataset analyzer: how many samples were loaded and which fields they carry.

It always runs. Its metrics tell whether the other analyzers had something to
work on (a sample set with no footprints cannot be checked for geographic
bias), and it carries the problems the reader counted while loading.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import pandas as pd

from eoaudit.analyzers.base import Analyzer, ChunkResult, register
from eoaudit.figures import new_figure, to_png
from eoaudit.results import AnalyzerResult, Finding
from eoaudit.samples import CAPTION, IMAGE, TIME


@dataclass
class DatasetCounts:
    """Counts over a set of samples; adding two gives the counts of their union."""

    samples: int = 0
    non_empty_captions: int = 0
    located: int = 0
    footprints: int = 0
    dated: int = 0
    with_image: int = 0
    first_time: pd.Timestamp | None = None
    last_time: pd.Timestamp | None = None

    def __add__(self, other: DatasetCounts) -> DatasetCounts:
        times = [t for t in (self.first_time, other.first_time) if t is not None]
        last = [t for t in (self.last_time, other.last_time) if t is not None]
        return DatasetCounts(
            samples=self.samples + other.samples,
            non_empty_captions=self.non_empty_captions + other.non_empty_captions,
            located=self.located + other.located,
            footprints=self.footprints + other.footprints,
            dated=self.dated + other.dated,
            with_image=self.with_image + other.with_image,
            first_time=min(times) if times else None,
            last_time=max(last) if last else None,
        )


@register
class DatasetAnalyzer(Analyzer[DatasetCounts]):
    """Count samples and the share that carry a footprint, a time and an image."""

    name = "dataset"
    title = "Dataset"
    requires = ()
    order = 0

    def map_chunk(self, chunk: gpd.GeoDataFrame) -> ChunkResult[DatasetCounts]:
        """Count the samples of one chunk."""
        geometry = chunk.geometry
        located = geometry.notna() & ~geometry.is_empty
        times = chunk[TIME].dropna()
        counts = DatasetCounts(
            samples=len(chunk),
            non_empty_captions=int(chunk[CAPTION].str.strip().ne("").sum()),
            located=int(located.sum()),
            footprints=int((located & geometry.geom_type.isin(["Polygon", "MultiPolygon"])).sum()),
            dated=len(times),
            with_image=int(chunk[IMAGE].notna().sum()) if IMAGE in chunk else 0,
            first_time=times.min() if len(times) else None,
            last_time=times.max() if len(times) else None,
        )
        return ChunkResult(counts)

    def merge(self, left: DatasetCounts, right: DatasetCounts) -> DatasetCounts:
        """Add the counts of two chunks."""
        return left + right

    def finalize(self, state: DatasetCounts, result: AnalyzerResult) -> None:
        """Report the counts as metrics, a table and a figure."""
        rows_read = max(self.context.rows_read, state.samples)
        left_out = rows_read - state.samples
        total = state.samples

        def share(count: int) -> float | None:
            return count / total if total else None

        result.add_metric("samples", total, "samples", "neutral", "Samples audited.")
        result.add_metric(
            "rows_read", rows_read, "rows", "neutral", "Rows or records found in the dataset."
        )
        result.add_metric(
            "bad_rows",
            left_out,
            "rows",
            "lower_is_better",
            "Rows left out of the audit because they could not be read as samples.",
        )
        result.add_metric(
            "bad_row_rate",
            left_out / rows_read if rows_read else None,
            "fraction",
            "lower_is_better",
            "Rows left out as bad, over rows read.",
        )
        shares = {
            "caption_share": (state.non_empty_captions, "a non-empty caption"),
            "located_share": (state.located, "a footprint or point"),
            "footprint_share": (state.footprints, "a footprint polygon"),
            "dated_share": (state.dated, "an acquisition time"),
            "image_share": (state.with_image, "an image reference"),
        }
        for key, (count, what) in shares.items():
            result.add_metric(
                key, share(count), "fraction", "higher_is_better", f"Samples with {what}."
            )

        result.add_table(
            "fields",
            "Fields present",
            pd.DataFrame(
                {
                    "field": [what for _, what in shares.values()],
                    "samples": [count for count, _ in shares.values()],
                    "share": [share(count) for count, _ in shares.values()],
                }
            ),
            "One row per field of the sample model: how many samples carry it.",
        )
        if state.first_time is not None and state.last_time is not None:
            result.settings["time_range"] = [
                state.first_time.isoformat(),
                state.last_time.isoformat(),
            ]
        result.findings.extend(self.context.reader_findings)
        failed = self.context.failed_partitions
        result.add_metric(
            "failed_partitions",
            len(failed),
            "partitions",
            "lower_is_better",
            "Partitions that failed on every retry; their samples are not in the results.",
        )
        if failed:
            result.findings.append(
                Finding(
                    severity="error",
                    code="partition-failed",
                    message="partitions that failed on every retry and are missing from the audit",
                    count=len(failed),
                    examples=[f"{key}: {error}" for key, error in failed[:5]],
                    analyzer=self.name,
                )
            )
        result.add_figure(
            "fields", "Share of samples carrying each field", _fields_png(shares, total)
        )


def _fields_png(shares: dict[str, tuple[int, str]], total: int) -> bytes:
    figure, axes = new_figure(6.4, 2.4)
    labels = [what for _, what in shares.values()]
    values = [count / total if total else 0.0 for count, _ in shares.values()]
    axes.barh(labels, values, color="#3b6ea5")
    axes.set_xlim(0, 1)
    axes.set_xlabel("share of samples")
    axes.invert_yaxis()
    return to_png(figure)
