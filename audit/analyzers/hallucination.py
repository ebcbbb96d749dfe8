"""Hallucination analyzer: caption land-cover claims checked against ESA WorldCover.

For each sample it reads the WorldCover class fractions under the footprint
(:mod:`eoaudit.worldcover`), finds the land-cover mentions of the caption
(:mod:`eoaudit.landcover`) and gives each mention a verdict, in the manner of
the CHAIR metric (mentioned objects checked against ground-truth presence).
The first rule that applies decides:

1. `unverifiable`: a lexicon entry WorldCover cannot confirm (a golf course),
   or any mention of a sample without WorldCover data, negated or not;
2. `negated`: the mention is in a negation scope ("no visible water bodies");
3. `correct`: the class covers at least `presence_threshold` of the
   footprint grown by `buffer_m`;
4. `unverifiable`: a snow and ice claim that WorldCover does not confirm but
   seasonal snow may explain (see `snow` in `rules/hallucination.yaml`);
5. `hallucinated`: any other claim.

CHAIR-i and CHAIR-s count only `correct` and `hallucinated` mentions, each
occurrence of a mention once ("forest ... trees" is two tree-cover mentions).

Hedged mentions ("possibly a lake") get a verdict like the others; their
count is reported apart.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from eoaudit.analyzers.base import Analyzer, AuditContext, ChunkResult, register
from eoaudit.errors import InputError
from eoaudit.figures import new_figure, to_png
from eoaudit.landcover import LandcoverMatcher, Mention
from eoaudit.nlp import english_pipeline
from eoaudit.results import AnalyzerResult, Finding
from eoaudit.samples import CAPTION, CRS, TIME
from eoaudit.worldcover import (
    CLASS_COLOURS,
    CLASS_NAMES,
    CLASS_VALUES,
    AreaCache,
    ClassAreas,
    WorldCoverSource,
    class_fractions,
    read_class_areas,
)

CACHE_FILE = "worldcover-areas.sqlite"
"""File name of the class-area cache inside the audit's cache folder."""

CLOUD_FRACTION = "cloud_fraction"
"""Sample column with the share of cloudy pixels of the chip (0..1)."""

SNOW = 70
HALLUCINATION_BINS = ("0", "1", "2", "3+")
"""Bins of hallucinated mentions per caption, those of the human review of Llama3-SSL4EO-S12."""

VERDICTS = ("correct", "hallucinated", "negated", "unverifiable")


@dataclass
class Counts:
    """Mention and caption counts of one group of samples; adding two adds the groups."""

    mentions: int = 0
    verifiable: int = 0
    hallucinated: int = 0
    correct: int = 0
    negated: int = 0
    unverifiable: int = 0
    hedged: int = 0
    hedged_hallucinated: int = 0
    captions: int = 0
    captions_with_verifiable: int = 0
    captions_with_hallucination: int = 0
    main_classes: int = 0
    omitted_classes: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            **{name: getattr(self, name) + getattr(other, name) for name in self.__dict__}
        )


@dataclass
class WorstCaption:
    """A caption kept for the report's list of worst captions."""

    sample_id: str
    caption: str
    mentions: list[list[Any]]
    fractions: list[float]
    hallucinated: int
    verifiable: int

    def rank(self) -> tuple[int, float, str]:
        """Return the sort key: most hallucinated first, then highest share, then sample id."""
        share = self.hallucinated / self.verifiable if self.verifiable else 0.0
        return (-self.hallucinated, -share, self.sample_id)


@dataclass
class HallucinationState:
    """Partial result of the analyzer over some samples; merging adds or keeps the best.

    Attributes:
        counts: Counts over samples with WorldCover data.
        samples: Samples seen.
        without_worldcover: Samples with no footprint or no WorldCover data.
        without_worldcover_ids: Up to a few of those sample ids, smallest first.
        unverifiable_all: Unverifiable mentions over all samples.
        mentions_all: Mentions over all samples.
        class_claims: Per class: [claimed and present, claimed and absent,
            main but not claimed], over caption-class pairs.
        confusion: Counts by (claimed class, dominant class).
        bins: Captions with data by number of hallucinated mentions (0, 1, 2, 3+).
        cloud: Counts by cloud-fraction bin index.
        snow: Snow and ice claims by outcome.
        worst: The captions with most hallucinated mentions, best first.
    """

    counts: Counts = field(default_factory=Counts)
    samples: int = 0
    without_worldcover: int = 0
    without_worldcover_ids: list[str] = field(default_factory=list)
    unverifiable_all: int = 0
    mentions_all: int = 0
    class_claims: dict[int, list[int]] = field(default_factory=dict)
    confusion: dict[tuple[int, int], int] = field(default_factory=dict)
    bins: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    cloud: dict[int, Counts] = field(default_factory=dict)
    snow: dict[str, int] = field(default_factory=dict)
    worst: list[WorstCaption] = field(default_factory=list)


@register
class HallucinationAnalyzer(Analyzer[HallucinationState]):
    """Check land-cover claims of captions against ESA WorldCover under each footprint."""

    name = "hallucination"
    title = "Land-cover hallucinations"
    requires = ("caption", "geometry")
    order = 20

    def __init__(self, context: AuditContext) -> None:
        super().__init__(context)
        self.rules = _validated_rules(context.rules.get("hallucination") or {})
        self.matcher = LandcoverMatcher(context.rules["landcover"])
        self._source: WorldCoverSource | None = None
        self._fingerprint: str | None = None

    def skip_reason(self, samples: gpd.GeoDataFrame) -> str | None:
        """Return why the analyzer cannot run: missing columns or no WorldCover source."""
        reason = super().skip_reason(samples)
        if reason is None and not self.context.options.get("worldcover"):
            return "no WorldCover source, pass --worldcover"
        return reason

    @property
    def source(self) -> WorldCoverSource:
        """The WorldCover source of `--worldcover`, opened on first use."""
        if self._source is None:
            self._source = WorldCoverSource(
                str(self.context.options["worldcover"]),
                str(self.context.options.get("worldcover_version") or "2021"),
            )
        return self._source

    def settings(self) -> dict[str, Any]:
        """Return the rule values used, and the WorldCover source and version."""
        settings = {
            key: self.rules[key]
            for key in (
                "presence_threshold",
                "omission_threshold",
                "buffer_m",
                "point_buffer_m",
                "sea_rule",
                "min_coverage",
                "cloud_bins",
            )
        }
        settings["snow"] = self.rules["snow"]
        settings["worldcover"] = str(self.context.options.get("worldcover"))
        settings["worldcover_version"] = str(
            self.context.options.get("worldcover_version") or "2021"
        )
        return settings

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["matcher"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.matcher = LandcoverMatcher(self.context.rules["landcover"])

    # Map ---------------------------------------------------------------------

    def map_chunk(self, chunk: gpd.GeoDataFrame) -> ChunkResult[HallucinationState]:
        """Read WorldCover fractions and judge the mentions of one chunk of captions."""
        if chunk.crs is not None and chunk.crs != CRS:
            chunk = chunk.to_crs(CRS)
        fractions, statuses = self._fractions(chunk)
        captions = chunk[CAPTION].fillna("").astype(str).tolist()
        # LandcoverMatcher finds lemmas and sentences itself, so only the tokenizer runs.
        docs = list(
            english_pipeline().pipe(captions, disable=["lemmatizer", "sentencizer"], batch_size=256)
        )
        mentions = self.matcher.find_mentions_many(docs, captions)
        times = chunk[TIME] if TIME in chunk else pd.Series(pd.NaT, index=chunk.index)
        clouds = chunk[CLOUD_FRACTION] if CLOUD_FRACTION in chunk else None

        state = HallucinationState(samples=len(chunk))
        rows = []
        for position, sample_id in enumerate(chunk.index):
            footprint, buffered = fractions[position]
            status = statuses[position]
            geometry = chunk.geometry.iloc[position]
            latitude = (
                geometry.centroid.y if geometry is not None and not geometry.is_empty else None
            )
            judged = self._judge(
                mentions[position],
                footprint,
                buffered,
                status,
                latitude,
                times.iloc[position],
            )
            cloud = None if clouds is None else clouds.iloc[position]
            self._count(state, str(sample_id), captions[position], judged, footprint, status, cloud)
            rows.append(
                {
                    **{f"fraction_{value}": footprint[i] for i, value in enumerate(CLASS_VALUES)},
                    "worldcover_status": status,
                    "mentions": json.dumps(
                        [[m.start, m.end, m.class_value, verdict] for m, verdict in judged]
                    ),
                    "hallucinated": sum(v == "hallucinated" for _, v in judged),
                    "verifiable_mentions": sum(v in ("correct", "hallucinated") for _, v in judged),
                    "hedged_mentions": sum(m.hedged for m, _ in judged),
                    "omitted": json.dumps(_omitted(judged, footprint, self.rules)),
                }
            )
        columns = pd.DataFrame(rows, index=chunk.index)
        return ChunkResult(state, columns)

    def _fractions(
        self, chunk: gpd.GeoDataFrame
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
        """Return (footprint fractions, buffered fractions) and the status of each sample."""
        buffer_m = float(self.rules["buffer_m"])
        point_buffer_m = float(self.rules["point_buffer_m"])
        located = [
            geometry if geometry is not None and not geometry.is_empty else None
            for geometry in chunk.geometry
        ]
        cache = None
        if self.context.cache_dir is not None:
            cache = AreaCache(self.context.cache_dir / CACHE_FILE)
        if self._fingerprint is None:
            self._fingerprint = self.source.fingerprint()
        settings = f"{buffer_m}|{point_buffer_m}|{self._fingerprint}"
        keys = [AreaCache.key(g, settings) if g is not None else None for g in located]
        cached = cache.get_many(k for k in keys if k is not None) if cache else {}

        fresh: dict[str, ClassAreas] = {}
        fractions = []
        statuses = []
        empty = np.full(len(CLASS_VALUES), np.nan)
        for geometry, key in zip(located, keys, strict=True):
            if geometry is None or key is None:
                fractions.append((empty, empty))
                statuses.append("no-data")
                continue
            areas = cached.get(key) or fresh.get(key)
            if areas is None:
                areas = read_class_areas(self.source, geometry, buffer_m, point_buffer_m)
                fresh[key] = areas
            footprint, status = class_fractions(
                areas.footprint,
                areas.footprint_area,
                self.rules["sea_rule"],
                float(self.rules["min_coverage"]),
            )
            buffered, _ = class_fractions(
                areas.buffered, areas.buffered_area, self.rules["sea_rule"], 0.0
            )
            fractions.append((footprint, buffered))
            statuses.append(status)
        if cache is not None:
            cache.put_many(fresh)
        return fractions, statuses

    def _judge(
        self,
        mentions: list[Mention],
        footprint: np.ndarray,
        buffered: np.ndarray,
        status: str,
        latitude: float | None,
        time: Any,
    ) -> list[tuple[Mention, str]]:
        """Return each mention with its verdict."""
        presence = float(self.rules["presence_threshold"])
        judged = []
        for mention in mentions:
            if mention.class_value is None or status != "ok":
                verdict = "unverifiable"
            elif mention.negated:
                verdict = "negated"
            elif mention.class_value not in CLASS_VALUES:
                verdict = "unverifiable"
            elif buffered[CLASS_VALUES.index(mention.class_value)] >= presence:
                verdict = "correct"
            elif mention.class_value == SNOW and _seasonal_snow(latitude, time, self.rules["snow"]):
                verdict = "unverifiable"
            else:
                verdict = "hallucinated"
            judged.append((mention, verdict))
        return judged

    def _count(
        self,
        state: HallucinationState,
        sample_id: str,
        caption: str,
        judged: list[tuple[Mention, str]],
        footprint: np.ndarray,
        status: str,
        cloud: Any,
    ) -> None:
        """Add one sample's verdicts to the state."""
        state.mentions_all += len(judged)
        state.unverifiable_all += sum(v == "unverifiable" for _, v in judged)
        if status != "ok":
            state.without_worldcover += 1
            state.without_worldcover_ids = sorted([*state.without_worldcover_ids, sample_id])[:5]
            return

        counts = _sample_counts(judged, footprint, self.rules)
        state.counts += counts
        state.bins[min(counts.hallucinated, 3)] += 1
        if cloud is not None and not pd.isna(cloud):
            index = _cloud_bin(float(cloud), self.rules["cloud_bins"])
            state.cloud[index] = state.cloud.get(index, Counts()) + counts

        claimed = {
            int(m.class_value)
            for m, v in judged
            if v in ("correct", "hallucinated") and m.class_value is not None
        }
        present = {int(m.class_value) for m, v in judged if v == "correct" and m.class_value}
        main = _main_classes(footprint, float(self.rules["omission_threshold"]))
        dominant = CLASS_VALUES[int(np.nanargmax(footprint))]
        for value in claimed | main:
            entry = state.class_claims.setdefault(value, [0, 0, 0])
            if value in claimed:
                entry[0 if value in present else 1] += 1
            elif value in main:
                entry[2] += 1
        for value in claimed:
            pair = (value, dominant)
            state.confusion[pair] = state.confusion.get(pair, 0) + 1

        snow_claims = [v for m, v in judged if m.class_value == SNOW and not m.negated]
        for verdict in snow_claims:
            state.snow[verdict] = state.snow.get(verdict, 0) + 1

        if counts.hallucinated:
            worst = WorstCaption(
                sample_id,
                caption,
                [[m.start, m.end, m.class_value, v] for m, v in judged],
                [float(f) for f in footprint],
                counts.hallucinated,
                counts.verifiable,
            )
            state.worst = _keep_worst([*state.worst, worst], self._worst_limit())

    def _worst_limit(self) -> int:
        return int(self.rules["report"]["worst_captions"])

    # Merge -------------------------------------------------------------------

    def merge(self, left: HallucinationState, right: HallucinationState) -> HallucinationState:
        """Add the counts of two states and keep the worst captions of both."""
        claims = {k: list(v) for k, v in left.class_claims.items()}
        for value, entry in right.class_claims.items():
            claims[value] = [
                a + b for a, b in zip(claims.get(value, [0, 0, 0]), entry, strict=True)
            ]
        confusion = dict(left.confusion)
        for pair, count in right.confusion.items():
            confusion[pair] = confusion.get(pair, 0) + count
        cloud = dict(left.cloud)
        for index, counts in right.cloud.items():
            cloud[index] = cloud.get(index, Counts()) + counts
        snow = dict(left.snow)
        for verdict, count in right.snow.items():
            snow[verdict] = snow.get(verdict, 0) + count
        return HallucinationState(
            counts=left.counts + right.counts,
            samples=left.samples + right.samples,
            without_worldcover=left.without_worldcover + right.without_worldcover,
            without_worldcover_ids=sorted(
                left.without_worldcover_ids + right.without_worldcover_ids
            )[:5],
            unverifiable_all=left.unverifiable_all + right.unverifiable_all,
            mentions_all=left.mentions_all + right.mentions_all,
            class_claims=claims,
            confusion=confusion,
            bins=[a + b for a, b in zip(left.bins, right.bins, strict=True)],
            cloud=cloud,
            snow=snow,
            worst=_keep_worst(left.worst + right.worst, self._worst_limit()),
        )

    # Finalize ----------------------------------------------------------------

    def finalize(self, state: HallucinationState, result: AnalyzerResult) -> None:
        """Report CHAIR rates, omissions, per-class tables, the confusion figure, worst captions."""
        counts = state.counts
        self.close()
        _add_metrics(result, state)
        _add_tables(result, state, self.rules)

        if counts.captions_with_hallucination:
            result.findings.append(
                Finding(
                    severity="warning",
                    code="landcover-hallucinated",
                    message=(
                        f"{counts.captions_with_hallucination} caption(s) claim a land-cover "
                        "class that ESA WorldCover does not show under the footprint"
                    ),
                    count=counts.captions_with_hallucination,
                    examples=[worst.sample_id for worst in state.worst[:5]],
                    analyzer=self.name,
                )
            )
        if state.without_worldcover:
            result.findings.append(
                Finding(
                    severity="info",
                    code="worldcover-no-data",
                    message=(
                        f"{state.without_worldcover} sample(s) have no footprint or no WorldCover "
                        "data under it; their land-cover claims are unverifiable"
                    ),
                    count=state.without_worldcover,
                    examples=state.without_worldcover_ids,
                    analyzer=self.name,
                )
            )
        if state.confusion:
            result.add_figure(
                "confusion",
                "Claimed class (rows) against the footprint's dominant WorldCover class "
                "(columns), caption-class pairs",
                _confusion_png(state.confusion),
            )

    def close(self) -> None:
        """Close the open WorldCover datasets."""
        if self._source is not None:
            self._source.close()


def _validated_rules(rules: dict[str, Any]) -> dict[str, Any]:
    """Check the values of `rules/hallucination.yaml` and return them.

    Raises:
        InputError: On a missing or out-of-range value.
    """
    where = "rules/hallucination.yaml"
    for key in ("presence_threshold", "omission_threshold", "min_coverage"):
        value = rules.get(key)
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise InputError(f"{where}: `{key}` must be a number from 0 to 1, got {value!r}")
    for key in ("buffer_m", "point_buffer_m"):
        value = rules.get(key)
        if not isinstance(value, int | float) or value < 0:
            raise InputError(f"{where}: `{key}` must be a distance in metres >= 0, got {value!r}")
    if rules.get("sea_rule") not in ("open-water", "no-data"):
        raise InputError(
            f"{where}: `sea_rule` must be open-water or no-data, got {rules.get('sea_rule')!r}"
        )
    edges = rules.get("cloud_bins")
    if not isinstance(edges, list) or len(edges) < 2 or sorted(edges) != edges:
        raise InputError(f"{where}: `cloud_bins` must be increasing edges, got {edges!r}")
    snow = rules.get("snow")
    needed = (
        "min_abs_latitude",
        "polar_abs_latitude",
        "winter_months_north",
        "winter_months_south",
    )
    if not isinstance(snow, dict) or any(key not in snow for key in needed):
        raise InputError(f"{where}: `snow` needs {', '.join(needed)}, got {snow!r}")
    report = rules.get("report")
    if not isinstance(report, dict) or not isinstance(report.get("worst_captions"), int):
        raise InputError(f"{where}: `report.worst_captions` must be an integer, got {report!r}")
    return rules


def _sample_counts(
    judged: list[tuple[Mention, str]], footprint: np.ndarray, rules: dict[str, Any]
) -> Counts:
    verdicts = [verdict for _, verdict in judged]
    hallucinated = verdicts.count("hallucinated")
    verifiable = hallucinated + verdicts.count("correct")
    main = _main_classes(footprint, float(rules["omission_threshold"]))
    return Counts(
        mentions=len(judged),
        verifiable=verifiable,
        hallucinated=hallucinated,
        correct=verdicts.count("correct"),
        negated=verdicts.count("negated"),
        unverifiable=verdicts.count("unverifiable"),
        hedged=sum(m.hedged for m, _ in judged),
        hedged_hallucinated=sum(m.hedged and v == "hallucinated" for m, v in judged),
        captions=1,
        captions_with_verifiable=int(verifiable > 0),
        captions_with_hallucination=int(hallucinated > 0),
        main_classes=len(main),
        omitted_classes=len(_omitted(judged, footprint, rules)),
    )


def _main_classes(footprint: np.ndarray, threshold: float) -> set[int]:
    return {
        value
        for value, fraction in zip(CLASS_VALUES, footprint, strict=True)
        if not math.isnan(fraction) and fraction >= threshold
    }


def _omitted(
    judged: list[tuple[Mention, str]], footprint: np.ndarray, rules: dict[str, Any]
) -> list[int]:
    """Return the main classes that no mention outside a negation names."""
    named = {m.class_value for m, _ in judged if not m.negated}
    main = _main_classes(footprint, float(rules["omission_threshold"]))
    return sorted(main - named)


def _seasonal_snow(latitude: float | None, time: Any, snow: dict[str, Any]) -> bool:
    """Return whether seasonal snow may explain a snow claim at this latitude and time."""
    if latitude is None:
        return False
    if abs(latitude) >= float(snow["polar_abs_latitude"]):
        return True
    if time is None or pd.isna(time) or abs(latitude) < float(snow["min_abs_latitude"]):
        return False
    months = snow["winter_months_north"] if latitude >= 0 else snow["winter_months_south"]
    return int(pd.Timestamp(time).month) in {int(m) for m in months}


def _cloud_bin(cloud: float, edges: list[float]) -> int:
    """Return the index of the cloud bin, the last bin including its upper edge."""
    index = int(np.searchsorted(edges, cloud, side="right")) - 1
    return min(max(index, 0), len(edges) - 2)


def _keep_worst(candidates: list[WorstCaption], limit: int) -> list[WorstCaption]:
    return heapq.nsmallest(limit, candidates, key=WorstCaption.rank)


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _add_metrics(result: AnalyzerResult, state: HallucinationState) -> None:
    counts = state.counts
    result.add_metric(
        "chair_i",
        _rate(counts.hallucinated, counts.verifiable),
        "fraction",
        "lower_is_better",
        "Hallucinated mentions over verifiable mentions (CHAIR-i), samples with WorldCover data.",
    )
    result.add_metric(
        "chair_s",
        _rate(counts.captions_with_hallucination, counts.captions_with_verifiable),
        "fraction",
        "lower_is_better",
        "Captions with at least one hallucinated mention over captions with at least one "
        "verifiable mention (CHAIR-s).",
    )
    result.add_metric(
        "omission_rate",
        _rate(counts.omitted_classes, counts.main_classes),
        "fraction",
        "lower_is_better",
        "Classes covering at least the omission threshold of a footprint that its caption "
        "never names, over all such classes.",
    )
    result.add_metric(
        "unverifiable_rate",
        _rate(state.unverifiable_all, state.mentions_all),
        "fraction",
        "neutral",
        "Unverifiable mentions over all land-cover mentions, including samples without "
        "WorldCover data.",
    )
    result.add_metric(
        "samples_without_worldcover",
        state.without_worldcover,
        "samples",
        "lower_is_better",
        "Samples with no footprint or no WorldCover data under it.",
    )
    result.add_metric(
        "hallucinated_mentions",
        counts.hallucinated,
        "mentions",
        "lower_is_better",
        "Mentions of a class covering less than the presence threshold of the buffered footprint.",
    )
    result.add_metric(
        "verifiable_mentions",
        counts.verifiable,
        "mentions",
        "neutral",
        "Mentions of a WorldCover class, outside a negation, in samples with WorldCover data.",
    )
    result.add_metric(
        "negated_mentions",
        counts.negated,
        "mentions",
        "neutral",
        "Mentions inside a negation scope, in samples with WorldCover data.",
    )
    result.add_metric(
        "hedged_hallucinated_share",
        _rate(counts.hedged_hallucinated, counts.hallucinated),
        "fraction",
        "neutral",
        "Hallucinated mentions that a hedge ('possibly', 'appears to be') qualifies.",
    )


def _add_tables(result: AnalyzerResult, state: HallucinationState, rules: dict[str, Any]) -> None:
    captions = sum(state.bins)
    result.add_table(
        "hallucinations_per_caption",
        "Captions by number of hallucinated mentions",
        pd.DataFrame(
            {
                "hallucinated mentions": list(HALLUCINATION_BINS),
                "captions": state.bins,
                "share": [_rate(count, captions) for count in state.bins],
            }
        ),
        "Captions of samples with WorldCover data; the bins of a human review of "
        "Llama3-SSL4EO-S12 (69 % none, 22 % one, 5 % two, 4 % three or more).",
    )

    rows = []
    for value in CLASS_VALUES:
        true_positive, false_positive, missed = state.class_claims.get(value, [0, 0, 0])
        rows.append(
            {
                "class": value,
                "name": CLASS_NAMES[value],
                "claimed": true_positive + false_positive,
                "correct": true_positive,
                "hallucinated": false_positive,
                "main, not claimed": missed,
                "precision": _rate(true_positive, true_positive + false_positive),
                "recall": _rate(true_positive, true_positive + missed),
            }
        )
    result.add_table(
        "per_class",
        "Claims per WorldCover class",
        pd.DataFrame(rows),
        "Caption-class pairs. Precision: confirmed claims over all claims of the class. "
        "Recall: confirmed claims over confirmed claims plus footprints where the class "
        "covers at least the omission threshold but the caption does not claim it.",
    )

    confusion = pd.DataFrame(
        [
            {
                "claimed": claimed,
                "claimed name": CLASS_NAMES[claimed],
                "dominant": dominant,
                "dominant name": CLASS_NAMES[dominant],
                "captions": count,
            }
            for (claimed, dominant), count in sorted(state.confusion.items())
        ],
        columns=["claimed", "claimed name", "dominant", "dominant name", "captions"],
    )
    result.add_table(
        "confusion",
        "Claimed class against dominant class",
        confusion,
        "Caption-class pairs by the claimed class and the class covering most of the footprint.",
        hidden=True,
    )

    edges = rules["cloud_bins"]
    cloud_rows = []
    for index in sorted(state.cloud):
        counts = state.cloud[index]
        cloud_rows.append(
            {
                "cloud fraction": f"{edges[index]:g} to {edges[index + 1]:g}",
                "captions": counts.captions,
                "chair_i": _rate(counts.hallucinated, counts.verifiable),
                "chair_s": _rate(
                    counts.captions_with_hallucination, counts.captions_with_verifiable
                ),
                "omission_rate": _rate(counts.omitted_classes, counts.main_classes),
            }
        )
    if cloud_rows:
        result.add_table(
            "by_cloud_fraction",
            "Rates by cloud fraction of the chip",
            pd.DataFrame(cloud_rows),
            "Samples with a cloud_fraction value, binned by the cloud_bins rule.",
        )

    if state.snow:
        result.add_table(
            "snow_claims",
            "Snow and ice claims",
            pd.DataFrame(
                [
                    {"verdict": verdict, "mentions": state.snow.get(verdict, 0)}
                    for verdict in ("correct", "hallucinated", "unverifiable")
                ]
            ),
            "Snow and ice mentions outside a negation. Unverifiable: WorldCover (permanent "
            "snow) does not confirm them, but latitude and acquisition month allow seasonal snow.",
        )

    result.add_table(
        "worst_captions",
        "Captions with the most hallucinated mentions",
        pd.DataFrame(
            [
                {
                    "sample_id": worst.sample_id,
                    "caption": worst.caption,
                    "hallucinated": worst.hallucinated,
                    "verifiable": worst.verifiable,
                    "mentions": worst.mentions,
                    "fractions": _fraction_bar(worst.fractions),
                }
                for worst in state.worst
            ],
            columns=["sample_id", "caption", "hallucinated", "verifiable", "mentions", "fractions"],
        ),
        "Mentions are [start, end, class value, verdict]; fractions are "
        "[class value, name, share of the footprint, legend colour] of the classes present.",
        hidden=True,
    )


def _confusion_png(confusion: dict[tuple[int, int], int]) -> bytes:
    claimed = sorted({pair[0] for pair in confusion})
    dominant = sorted({pair[1] for pair in confusion})
    matrix = np.zeros((len(claimed), len(dominant)))
    for (row, column), count in confusion.items():
        matrix[claimed.index(row), dominant.index(column)] = count
    figure, axes = new_figure(6.4, 1.2 + 0.35 * len(claimed))
    image = axes.imshow(matrix, cmap="Blues", aspect="auto")
    axes.set_xticks(
        range(len(dominant)), [CLASS_NAMES[v] for v in dominant], rotation=40, ha="right"
    )
    axes.set_yticks(range(len(claimed)), [CLASS_NAMES[v] for v in claimed])
    axes.set_xlabel("dominant WorldCover class")
    axes.set_ylabel("claimed class")
    for row in range(len(claimed)):
        for column in range(len(dominant)):
            if matrix[row, column]:
                axes.text(
                    column,
                    row,
                    f"{int(matrix[row, column])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black",
                )
    figure.colorbar(image, ax=axes, label="caption-class pairs")
    return to_png(figure)


def _fraction_bar(fractions: list[float]) -> list[list[Any]]:
    """Return [class value, name, fraction, legend colour] of the classes with a share > 0."""
    return [
        [value, CLASS_NAMES[value], fraction, CLASS_COLOURS[value]]
        for value, fraction in zip(CLASS_VALUES, fractions, strict=True)
        if fraction > 0 and not math.isnan(fraction)
    ]
