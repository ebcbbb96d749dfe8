"""The sample model shared by every reader and analyzer.

Every reader returns a :class:`SampleSet` whose `samples` is a GeoDataFrame with
one row per sample (one caption) and these columns:

=============== ============================== ======================================
column          type                           meaning
=============== ============================== ======================================
``sample_id``   str, unique                    key of the sample; also the index name
``caption``     str (may be empty)             the caption text
``geometry``    Polygon or Point, EPSG:4326    footprint of the image, or its centre;
                                               missing (None) when unknown
``time``        datetime64[ns, UTC]            acquisition time; NaT when unknown
``image``       str or None                    reference to the pixels, see
                                               :mod:`eoaudit.images`
``image_id``    str (optional)                 groups the captions of one image, in
                                               formats with several captions per image
``location_id`` str (optional)                 groups the acquisitions of one place
                                               (SSL4EO-S12 has four per location)
=============== ============================== ======================================

Any other column of the source is passed through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd

from eoaudit.errors import InputError
from eoaudit.results import Finding

SAMPLE_ID = "sample_id"
CAPTION = "caption"
GEOMETRY = "geometry"
TIME = "time"
IMAGE = "image"
IMAGE_ID = "image_id"
LOCATION_ID = "location_id"

CORE_COLUMNS = (SAMPLE_ID, CAPTION, GEOMETRY, TIME, IMAGE)
CRS = "EPSG:4326"

BadRowPolicy = Literal["error", "skip"]
MAX_EXAMPLES = 5


@dataclass
class SampleSet:
    """Samples loaded by a reader, with what the reader noticed on the way.

    Attributes:
        samples: The samples, in the layout described in this module.
        source: Path of the dataset as the user gave it.
        format: Name of the reader that loaded it.
        rows_read: Rows or records found in the source, before any were skipped.
        findings: Problems the reader counted (skipped rows, unmatched metadata).
    """

    samples: gpd.GeoDataFrame
    source: str
    format: str
    rows_read: int
    findings: list[Finding] = field(default_factory=list)


@dataclass
class BadRows:
    """Collects row-level problems found while reading, by reason.

    A reader calls :meth:`add` for every bad row, then :meth:`apply`, which
    either raises on the first problem (policy `error`) or drops the rows and
    turns each reason into a finding (policy `skip`).
    """

    source: str
    policy: BadRowPolicy
    problems: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    positions: set[int] = field(default_factory=set)
    unparsed: int = 0

    def add(self, position: int, row_label: str, reason: str, detail: str) -> None:
        """Record one bad row.

        Args:
            position: 0-based position of the row in the frame being built,
                or -1 for a row that never became part of the frame (a
                malformed CSV line); those are counted in `unparsed`.
            row_label: How a user finds the row, e.g. `row 17` or `image 3.tif`.
            reason: Short kebab-case reason, e.g. `latitude-out-of-range`.
            detail: The offending value and what is wrong with it.
        """
        self.problems.setdefault(reason, []).append((row_label, detail))
        if position < 0:
            self.unparsed += 1
        else:
            self.positions.add(position)

    def raise_if_strict(self) -> None:
        """Raise InputError for the first bad row when the policy is `error`."""
        if self.policy != "error" or not self.problems:
            return
        reason, entries = next(iter(self.problems.items()))
        row_label, detail = entries[0]
        total = sum(len(e) for e in self.problems.values())
        raise InputError(
            f"{self.source}, {row_label}: {detail} ({reason}; {total} bad row(s) in all); "
            "fix the row, or pass --on-bad-rows skip to leave bad rows out and count them"
        )

    def findings(self, analyzer: str = "dataset") -> list[Finding]:
        """Return one finding per reason, for the rows that were left out."""
        found = []
        for reason, entries in self.problems.items():
            examples = [f"{label}: {detail}" for label, detail in entries[:MAX_EXAMPLES]]
            found.append(
                Finding(
                    severity="warning",
                    code=f"bad-rows-{reason}",
                    message=(
                        f"rows of {self.source} left out of the audit: {reason.replace('-', ' ')}"
                    ),
                    count=len(entries),
                    examples=examples,
                    analyzer=analyzer,
                )
            )
        return found

    def keep_mask(self, length: int) -> np.ndarray:
        """Return a boolean mask that is False at the bad rows."""
        mask = np.ones(length, dtype=bool)
        if self.positions:
            mask[sorted(self.positions)] = False
        return mask


def build_samples(
    frame: pd.DataFrame,
    *,
    geometry: gpd.GeoSeries | None,
    source: str,
    bad_rows: BadRows,
) -> gpd.GeoDataFrame:
    """Assemble the sample GeoDataFrame and apply the bad-row policy.

    `frame` must already hold `sample_id` and `caption` and, where known,
    `time` and `image`; `geometry` is aligned with it by position. Duplicate
    sample ids are bad rows: the first occurrence is kept.

    Raises:
        InputError: When a row is bad and the policy is `error`, or when no
            sample is left.
    """
    frame = frame.reset_index(drop=True)
    ids = frame[SAMPLE_ID].astype(str)
    duplicated = ids.duplicated(keep="first").to_numpy()
    first_row = {value: i for i, value in reversed(list(enumerate(ids)))}
    for position in np.flatnonzero(duplicated):
        sample_id = ids.iloc[position]
        bad_rows.add(
            int(position),
            f"row {position + 1}",
            "duplicate-sample-id",
            f"sample_id {sample_id!r} already used by row {first_row[sample_id] + 1}",
        )
    bad_rows.raise_if_strict()

    keep = bad_rows.keep_mask(len(frame))
    frame = frame.loc[keep].copy()
    if geometry is None:
        geometry = gpd.GeoSeries([None] * len(keep), crs=CRS)
    geometry = gpd.GeoSeries(geometry.reset_index(drop=True), crs=CRS).loc[keep]

    frame[SAMPLE_ID] = frame[SAMPLE_ID].astype(str)
    frame[CAPTION] = frame[CAPTION].fillna("").astype(str)
    if TIME not in frame:
        frame[TIME] = pd.NaT
    frame[TIME] = pd.to_datetime(frame[TIME], utc=True)
    if IMAGE not in frame:
        frame[IMAGE] = None
    ordered = [c for c in (SAMPLE_ID, CAPTION, TIME, IMAGE) if c in frame]
    rest = [c for c in frame.columns if c not in ordered and c != GEOMETRY]
    frame = frame[ordered + rest]

    samples = gpd.GeoDataFrame(frame, geometry=geometry.to_numpy(), crs=CRS)
    samples.index = pd.Index(samples[SAMPLE_ID].to_numpy(), name=None)
    if samples.empty:
        raise InputError(
            f"{source}: no sample left to audit ({len(keep)} row(s) read, all left out); "
            "check the bad-row findings or run with --on-bad-rows error to see the first problem"
        )
    return samples


def empty_caption_finding(samples: pd.DataFrame, analyzer: str = "dataset") -> Finding | None:
    """Return a finding for empty or whitespace-only captions, or None if there are none."""
    empty = samples[CAPTION].str.strip().eq("")
    count = int(empty.sum())
    if count == 0:
        return None
    return Finding(
        severity="warning",
        code="empty-caption",
        message="samples with an empty or whitespace-only caption",
        count=count,
        examples=samples.loc[empty, SAMPLE_ID].head(MAX_EXAMPLES).tolist(),
        analyzer=analyzer,
    )
