"""Coverage analyzer: geographic, climatic and seasonal bias, and quality gaps between groups.

Each sample is placed by a representative point: the centroid of its footprint, or
the point itself (see :func:`eoaudit.reference.representative_points`). The point is
joined to the Natural Earth 1:110m countries (key `ADM0_A3`) and continents and to
the Köppen-Geiger main climate groups shipped in `eoaudit/reference/`. A point in no
country counts as at sea. Because the 1:110m layer leaves out small islands, samples
on them count as at sea too.

Bias is measured against where land is: each group's share of samples is divided by
its share of land area (the representation), and the samples per cell of an
equal-area grid are compared with land-area-proportional sampling. Land areas are
computed in EPSG:6933, never in degrees.

With acquisition times it adds year and month histograms, hemisphere-aware
meteorological seasons, season coverage per location, and a check of season words
in captions against the date. When other analyzers ran before it (this one runs
last), their per-sample measures are broken down by continent, climate group, season
and urban versus rural, with confidence intervals and a test of each group against
the rest.

Per chunk only joins and counts happen; the merged state contains counts, so the result
does not depend on the chunk size (sums of floating-point measures may differ in the
last bits).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import geopandas as gpd
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats
from scipy.spatial.distance import jensenshannon

from eoaudit import reference
from eoaudit.analyzers.base import Analyzer, ChunkResult, register
from eoaudit.errors import InputError
from eoaudit.figures import new_figure, to_png
from eoaudit.results import AnalyzerResult, Finding
from eoaudit.ruleset import load_rule
from eoaudit.samples import CAPTION, LOCATION_ID, SAMPLE_ID, TIME
from eoaudit.seasons import (
    ALL_SEASONS,
    SEASONS,
    TROPIC_LATITUDE,
    TROPICAL,
    SeasonLexicon,
    check_mentions,
    season_codes,
    tropical_half,
)

GAP_DIMENSIONS = ("continent", "climate", "season", "urban_rural")
HEMISPHERES = ("north", "south")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# --- settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class GapMeasure:
    """A per-sample column of another analyzer to break down by group.

    Attributes:
        column: Column name in `context.sample_columns`, e.g. `alignment.clipscore`.
        label: Name for tables and findings.
        kind: `rate` (share of samples with a value above 0) or `mean`.
        worse: `higher`, `lower` or `neither`: which direction is a quality problem.
    """

    column: str
    label: str
    kind: str
    worse: str


@dataclass(frozen=True)
class CoverageSettings:
    """The values of `rules/coverage.yaml` that the analyzer uses."""

    cell_km: float
    subdivisions: int
    land_cell_min_fraction: float
    latitude_band_deg: float
    heatmap_band_deg: float
    under_representation: float
    min_land_share: float
    examples: int
    mismatch_examples: int
    confidence_level: float
    false_discovery_rate: float
    min_group_samples: int
    urban_builtup_fraction: float
    builtup_column: str
    measures: tuple[GapMeasure, ...]

    @classmethod
    def from_rules(cls, rules: Mapping[str, Any]) -> CoverageSettings:
        """Read the settings from the parsed `coverage` rule file.

        Raises:
            InputError: When a value is missing or out of range.
        """
        source = "rules/coverage.yaml"
        try:
            grid = rules["grid"]
            representation = rules["representation"]
            gaps = rules["gaps"]
            measures = tuple(
                GapMeasure(
                    column=str(m["column"]),
                    label=str(m.get("label", m["column"])),
                    kind=str(m.get("kind", "mean")),
                    worse=str(m.get("worse", "neither")),
                )
                for m in gaps.get("measures", [])
            )
            settings = cls(
                cell_km=float(grid["cell_km"]),
                subdivisions=int(grid.get("subdivisions", 10)),
                land_cell_min_fraction=float(grid.get("land_cell_min_fraction", 0.0)),
                latitude_band_deg=float(rules.get("latitude_band_deg", 5)),
                heatmap_band_deg=float(rules.get("heatmap_band_deg", 10)),
                under_representation=float(representation["under"]),
                min_land_share=float(representation.get("min_land_share", 0.0)),
                examples=int(rules.get("examples", 5)),
                mismatch_examples=int(rules.get("mismatch_examples", 20)),
                confidence_level=float(gaps["confidence_level"]),
                false_discovery_rate=float(gaps["false_discovery_rate"]),
                min_group_samples=int(gaps["min_group_samples"]),
                urban_builtup_fraction=float(gaps["urban_builtup_fraction"]),
                builtup_column=str(gaps.get("builtup_column", "hallucination.fraction_50")),
                measures=measures,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"{source}: missing or invalid value ({error!r}); compare with the packaged file"
            ) from None
        settings.validate(source)
        return settings

    def validate(self, source: str) -> None:
        """Check value ranges.

        Raises:
            InputError: On the first value out of range.
        """
        problems = []
        if self.cell_km <= 0:
            problems.append(f"grid.cell_km must be positive, got {self.cell_km}")
        if not 0 <= self.land_cell_min_fraction <= 1:
            problems.append("grid.land_cell_min_fraction must be in 0..1")
        if not 0 < self.confidence_level < 1:
            problems.append("gaps.confidence_level must be between 0 and 1")
        if 180 % self.latitude_band_deg or 180 % self.heatmap_band_deg:
            problems.append("latitude_band_deg and heatmap_band_deg must divide 180")
        for measure in self.measures:
            if measure.kind not in ("rate", "mean"):
                problems.append(f"gaps measure {measure.column}: kind must be rate or mean")
            if measure.worse not in ("higher", "lower", "neither"):
                problems.append(
                    f"gaps measure {measure.column}: worse must be higher/lower/neither"
                )
        if problems:
            raise InputError(f"{source}: {problems[0]}")


# --- state ------------------------------------------------------------------------


@dataclass
class GroupStats:
    """Sufficient statistics of one measure over one group of samples.

    Attributes:
        n: Samples with a value.
        total: Sum of the values.
        total_squares: Sum of the squared values.
        events: Samples with a value above 0 (for rates).
        worst: Up to `examples` `(badness, sample_id)` pairs, worst first.
    """

    n: int = 0
    total: float = 0.0
    total_squares: float = 0.0
    events: int = 0
    worst: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class CoverageState:
    """Counts over a set of samples; merging two gives the counts of their union.

    Example lists keep the first samples in chunk order, or the worst by value, so
    they too do not depend on the chunk size.
    """

    examples: int = 5
    mismatch_limit: int = 20
    samples: int = 0
    located: int = 0
    dated: int = 0
    located_and_dated: int = 0
    at_sea: int = 0
    at_sea_examples: list[str] = field(default_factory=list)
    tropics: int = 0
    countries: dict[str, int] = field(default_factory=dict)
    continents: dict[str, int] = field(default_factory=dict)
    climates: np.ndarray = field(default_factory=lambda: np.zeros(6, dtype=np.int64))
    cells: np.ndarray | None = None
    latitudes: np.ndarray | None = None
    years: dict[int, int] = field(default_factory=dict)
    months: np.ndarray = field(default_factory=lambda: np.zeros(12, dtype=np.int64))
    month_latitude: np.ndarray | None = None
    seasons: np.ndarray = field(
        default_factory=lambda: np.zeros((len(ALL_SEASONS), 2), dtype=np.int64)
    )
    locations: dict[str, list[int]] = field(default_factory=dict)
    words: dict[str, list[int]] = field(default_factory=dict)
    season_checked: int = 0
    season_mismatched: int = 0
    mismatch_examples: list[dict[str, Any]] = field(default_factory=list)
    gap_columns: list[str] = field(default_factory=list)
    gaps: dict[tuple[str, str, str], GroupStats] = field(default_factory=dict)


def _add_counts(left: dict[Any, int], right: Mapping[Any, int]) -> None:
    for key, count in right.items():
        left[key] = left.get(key, 0) + count


def _add_arrays(left: np.ndarray | None, right: np.ndarray | None) -> np.ndarray | None:
    if left is None:
        return right
    if right is None:
        return left
    return left + right


def merge_states(left: CoverageState, right: CoverageState) -> CoverageState:
    """Combine two states into `left` and return it; `right` must come after `left`.

    The example limits are those of `left`, which map_chunk set from the rules.
    """
    examples = left.examples
    mismatch_examples = left.mismatch_limit
    for name in ("samples", "located", "dated", "located_and_dated", "at_sea", "tropics"):
        setattr(left, name, getattr(left, name) + getattr(right, name))
    left.season_checked += right.season_checked
    left.season_mismatched += right.season_mismatched
    left.at_sea_examples = (left.at_sea_examples + right.at_sea_examples)[:examples]
    _add_counts(left.countries, right.countries)
    _add_counts(left.continents, right.continents)
    _add_counts(left.years, right.years)
    left.climates = left.climates + right.climates
    left.months = left.months + right.months
    left.seasons = left.seasons + right.seasons
    left.cells = _add_arrays(left.cells, right.cells)
    left.latitudes = _add_arrays(left.latitudes, right.latitudes)
    left.month_latitude = _add_arrays(left.month_latitude, right.month_latitude)

    for key, (mask, count, tropical) in right.locations.items():
        entry = left.locations.get(key)
        if entry is None:
            left.locations[key] = [mask, count, tropical]
        else:
            entry[0] |= mask
            entry[1] += count
            entry[2] |= tropical
    for label, counts in right.words.items():
        mine = left.words.setdefault(label, [0, 0, 0])
        for i, value in enumerate(counts):
            mine[i] += value
    left.mismatch_examples = (left.mismatch_examples + right.mismatch_examples)[:mismatch_examples]

    left.gap_columns = sorted(set(left.gap_columns) | set(right.gap_columns))
    for group_key, group in right.gaps.items():
        mine_group = left.gaps.setdefault(group_key, GroupStats())
        mine_group.n += group.n
        mine_group.total += group.total
        mine_group.total_squares += group.total_squares
        mine_group.events += group.events
        mine_group.worst = sorted(mine_group.worst + group.worst, key=_worst_key)[:examples]
    return left


def _worst_key(item: tuple[float, str]) -> tuple[float, str]:
    return (-item[0], item[1])


# --- the analyzer -----------------------------------------------------------------


@register
class CoverageAnalyzer(Analyzer[CoverageState]):
    """Measure geographic, climatic and seasonal bias and quality gaps between groups."""

    name = "coverage"
    title = "Coverage"
    requires = ("geometry",)
    order = 90

    # The engine also builds analyzers with empty rules just to merge states, so rules
    # are read on first use and the packaged files stand in for missing ones.

    def _rules(self, name: str) -> Mapping[str, Any]:
        rules = self.context.rules.get(name)
        return rules if rules is not None else load_rule(name)

    @cached_property
    def config(self) -> CoverageSettings:
        """Settings from `rules/coverage.yaml`."""
        return CoverageSettings.from_rules(self._rules("coverage"))

    @cached_property
    def lexicon(self) -> SeasonLexicon:
        """Season words from `rules/seasons.yaml`."""
        return SeasonLexicon.from_rules(self._rules("seasons"))

    @cached_property
    def wet_months_north(self) -> tuple[int, ...]:
        """Months of the tropical wet half-year north of the equator."""
        return tuple(int(m) for m in self._rules("seasons").get("tropical_wet_months_north", ()))

    @cached_property
    def equatorial_band(self) -> float:
        """Half-width in degrees of the band where wet/dry words are not checked."""
        return float(self._rules("seasons").get("equatorial_band_deg", 10))

    @cached_property
    def grid(self) -> reference.LandGrid:
        """The equal-area grid with land area per cell."""
        return reference.land_grid(self.config.cell_km, self.config.subdivisions)

    def settings(self) -> dict[str, Any]:
        """Return the rule values used, for the report."""
        config = self.config
        return {
            "representative_point": "footprint centroid (or the point itself)",
            "countries": "Natural Earth 1:110m admin-0, key ADM0_A3",
            "climate": "Köppen-Geiger main groups (Beck et al. 2018), 0.1 degree",
            "grid": f"EPSG:6933 squares of {config.cell_km:g} km",
            "land_cell_min_fraction": config.land_cell_min_fraction,
            "seasons": "meteorological, by hemisphere; tropics |lat| < 23.44 apart",
            "confidence_level": config.confidence_level,
            "false_discovery_rate": config.false_discovery_rate,
            "min_group_samples": config.min_group_samples,
            "urban_builtup_fraction": config.urban_builtup_fraction,
        }

    # --- map -----------------------------------------------------------------------

    def map_chunk(self, chunk: gpd.GeoDataFrame) -> ChunkResult[CoverageState]:
        """Join one chunk's samples to the reference layers and count them."""
        ids = chunk[SAMPLE_ID].astype(str).to_numpy()
        lon, lat = reference.representative_points(chunk.geometry)
        located = np.isfinite(lon) & np.isfinite(lat)
        places = _place(lon, lat)
        state = CoverageState(
            samples=len(chunk),
            located=int(located.sum()),
            examples=self.config.examples,
            mismatch_limit=self.config.mismatch_examples,
        )
        self._count_places(state, places, located, lat, ids)

        times = chunk[TIME] if TIME in chunk else pd.Series(pd.NaT, index=chunk.index)
        times = pd.to_datetime(times, utc=True)
        months = times.dt.month.to_numpy(dtype=float, na_value=np.nan)
        codes = season_codes(months, lat)
        self._count_time(state, times, months, codes, lat, located)
        self._count_locations(state, chunk, codes, lon, lat)
        mismatch = self._check_words(state, chunk, ids, codes, months, lat)
        self._count_gaps(state, ids, places["continent"], places["climate"], codes)

        columns = pd.DataFrame(
            {
                "country": places["country"],
                "continent": places["continent"],
                "climate": places["climate"],
                "season": [ALL_SEASONS[c] if c >= 0 else None for c in codes],
                "at_sea": located & (places["country_position"] < 0),
                "season_mismatch": mismatch,
            },
            index=pd.Index(ids, name=SAMPLE_ID),
        )
        return ChunkResult(state, columns)

    def _count_places(
        self,
        state: CoverageState,
        places: dict[str, Any],
        located: np.ndarray,
        lat: np.ndarray,
        ids: np.ndarray,
    ) -> None:
        at_sea = located & (places["country_position"] < 0)
        state.at_sea = int(at_sea.sum())
        state.at_sea_examples = ids[at_sea][: self.config.examples].tolist()
        state.tropics = int((located & (np.abs(lat) < TROPIC_LATITUDE)).sum())
        state.countries = _value_counts(places["country"])
        state.continents = _value_counts(places["continent"])
        state.climates = np.bincount(places["climate_code"][located], minlength=6).astype(np.int64)

        cells = self.grid.cells(lon=places["lon"], lat=lat)
        state.cells = np.bincount(cells[cells >= 0], minlength=self.grid.land_km2.size)
        bands = round(180 / self.config.latitude_band_deg)
        state.latitudes = _band_histogram(lat[located], self.config.latitude_band_deg, bands)

    def _count_time(
        self,
        state: CoverageState,
        times: pd.Series,
        months: np.ndarray,
        codes: np.ndarray,
        lat: np.ndarray,
        located: np.ndarray,
    ) -> None:
        dated = np.isfinite(months)
        both = dated & located
        state.dated = int(dated.sum())
        state.located_and_dated = int(both.sum())
        years = times.dt.year.dropna().astype(int)
        state.years = {int(k): int(v) for k, v in years.value_counts().items()}
        state.months = np.bincount(months[dated].astype(int) - 1, minlength=12).astype(np.int64)

        band_deg = self.config.heatmap_band_deg
        bands = round(180 / band_deg)
        band = np.clip(np.floor((lat[both] + 90.0) / band_deg).astype(int), 0, bands - 1)
        heat = np.zeros((12, bands), dtype=np.int64)
        np.add.at(heat, (months[both].astype(int) - 1, band), 1)
        state.month_latitude = heat

        hemisphere = np.where(lat >= 0, 0, 1)
        np.add.at(state.seasons, (codes[both], hemisphere[both]), 1)

    def _count_locations(
        self,
        state: CoverageState,
        chunk: gpd.GeoDataFrame,
        codes: np.ndarray,
        lon: np.ndarray,
        lat: np.ndarray,
    ) -> None:
        known = codes >= 0
        if not known.any():
            return
        if LOCATION_ID in chunk:
            keys = chunk[LOCATION_ID].astype("string").to_numpy(dtype=object, na_value=None)
        else:
            keys = np.full(len(chunk), None, dtype=object)
        for i in np.flatnonzero(known):
            # Without a location id, acquisitions of one place share the same point.
            key = keys[i] if keys[i] is not None else f"{lon[i]:.4f},{lat[i]:.4f}"
            code = int(codes[i])
            mask = 1 << code if code < len(SEASONS) else 0
            entry = state.locations.get(key)
            tropical = int(code == len(SEASONS))
            if entry is None:
                state.locations[key] = [mask, 1, tropical]
            else:
                entry[0] |= mask
                entry[1] += 1
                entry[2] |= tropical

    def _check_words(
        self,
        state: CoverageState,
        chunk: gpd.GeoDataFrame,
        ids: np.ndarray,
        codes: np.ndarray,
        months: np.ndarray,
        lat: np.ndarray,
    ) -> np.ndarray:
        mismatch = np.zeros(len(chunk), dtype=bool)
        if CAPTION not in chunk:
            return mismatch
        captions = chunk[CAPTION].fillna("").astype(str).to_numpy()
        halves = tropical_half(months, lat, self.wet_months_north, self.equatorial_band)
        dates = pd.to_datetime(chunk[TIME], utc=True) if TIME in chunk else None
        for i in np.flatnonzero(codes >= 0):
            mentions = self.lexicon.find(captions[i])
            if not mentions:
                continue
            season = ALL_SEASONS[codes[i]]
            checked, mismatched = check_mentions(mentions, season, halves[i])
            for mention in mentions:
                counts = state.words.setdefault(mention.word.label, [0, 0, 0])
                counts[0] += 1
                counts[1] += mention in checked
                counts[2] += mention in mismatched
            if not checked:
                continue
            state.season_checked += 1
            if not mismatched:
                continue
            state.season_mismatched += 1
            mismatch[i] = True
            if len(state.mismatch_examples) < self.config.mismatch_examples:
                date = dates.iloc[i] if dates is not None else None
                state.mismatch_examples.append(
                    {
                        "sample_id": str(ids[i]),
                        "date": date.date().isoformat() if date is not None else None,
                        "latitude": round(float(lat[i]), 3),
                        "season": season if season != TROPICAL else f"tropical {halves[i]}",
                        "words": ", ".join(sorted({m.word.label for m in mismatched})),
                        "caption": captions[i],
                        "spans": json.dumps([[m.start, m.end, m.word.label] for m in mismatched]),
                    }
                )
        return mismatch

    def _count_gaps(
        self,
        state: CoverageState,
        ids: np.ndarray,
        continents: list[str | None],
        climates: list[str | None],
        codes: np.ndarray,
    ) -> None:
        available = self.context.sample_columns
        measures = [m for m in self.config.measures if m.column in available.columns]
        if not measures:
            return
        state.gap_columns = sorted(m.column for m in measures)
        rows = available.reindex(ids)
        groups = {
            "continent": pd.Series(continents, dtype=object),
            "climate": pd.Series(climates, dtype=object),
            "season": pd.Series([ALL_SEASONS[c] if c >= 0 else None for c in codes], dtype=object),
            "urban_rural": _urban_rural(rows, self.config),
        }
        for measure in measures:
            values = pd.to_numeric(rows[measure.column], errors="coerce").to_numpy(dtype=float)
            for dimension, labels in groups.items():
                self._add_group_stats(state, measure, dimension, labels.to_numpy(), values, ids)

    def _add_group_stats(
        self,
        state: CoverageState,
        measure: GapMeasure,
        dimension: str,
        labels: np.ndarray,
        values: np.ndarray,
        ids: np.ndarray,
    ) -> None:
        usable = np.isfinite(values) & pd.notna(labels)
        if not usable.any():
            return
        frame = pd.DataFrame({"label": labels[usable], "value": values[usable], "id": ids[usable]})
        sign = {"higher": 1.0, "lower": -1.0}.get(measure.worse, 0.0)
        frame["badness"] = frame["value"] * sign
        for label, group in frame.groupby("label", sort=True):
            stats_ = state.gaps.setdefault((measure.column, dimension, str(label)), GroupStats())
            group_values = group["value"].to_numpy()
            stats_.n += len(group_values)
            stats_.total += float(group_values.sum())
            stats_.total_squares += float((group_values**2).sum())
            stats_.events += int((group_values > 0).sum())
            if sign:
                candidates = group.sort_values(["badness", "id"], ascending=[False, True])
                pairs = list(zip(candidates["badness"], candidates["id"], strict=True))
                pairs = pairs[: self.config.examples]
                stats_.worst = sorted(stats_.worst + pairs, key=_worst_key)[: self.config.examples]

    def merge(self, left: CoverageState, right: CoverageState) -> CoverageState:
        """Add the counts of two chunks."""
        return merge_states(left, right)

    # --- finalize ------------------------------------------------------------------

    def finalize(self, state: CoverageState, result: AnalyzerResult) -> None:
        """Report bias measures, tables, figures and findings from the merged state."""
        _report_space(self, state, result)
        if state.located_and_dated:
            _report_time(self, state, result)
        else:
            result.settings["time_parts_skipped"] = (
                "no located sample has an acquisition time, so year, month and season "
                "measures and the season-word check were not computed"
            )
            for key in ("season_mismatch_rate", "all_seasons_share"):
                result.add_metric(key, None, "fraction", "neutral", "Not computed: no times.")
        if state.gap_columns:
            _report_gaps(self, state, result)
        else:
            result.settings["gap_parts_skipped"] = (
                "no per-sample measure of another analyzer was available "
                f"(looked for {', '.join(m.column for m in self.config.measures)})"
            )


# --- per-chunk helpers ------------------------------------------------------------


def _place(lon: np.ndarray, lat: np.ndarray) -> dict[str, Any]:
    countries = reference.countries()
    continents = reference.continents()
    country_position = reference.join_points(countries, lon, lat)
    continent_position = reference.join_points(continents, lon, lat)
    climate_code = reference.climate_codes(lon, lat)
    country_keys = countries["adm0_a3"].to_numpy(dtype=object)
    continent_names = continents["continent"].to_numpy(dtype=object)
    letters = np.array([None, *reference.CLIMATE_GROUPS], dtype=object)
    country = country_keys[country_position]
    country[country_position < 0] = None
    continent = continent_names[continent_position]
    continent[continent_position < 0] = None
    return {
        "lon": lon,
        "country_position": country_position,
        "country": country,
        "continent": continent.tolist(),
        "climate_code": climate_code,
        "climate": letters[climate_code].tolist(),
    }


def _value_counts(values: Any) -> dict[str, int]:
    series = pd.Series(values, dtype=object).dropna()
    return {str(k): int(v) for k, v in series.value_counts().items()}


def _band_histogram(lat: np.ndarray, band_deg: float, bands: int) -> np.ndarray:
    band = np.clip(np.floor((lat + 90.0) / band_deg).astype(int), 0, bands - 1)
    return np.bincount(band, minlength=bands).astype(np.int64)


def _urban_rural(rows: pd.DataFrame, config: CoverageSettings) -> pd.Series:
    if config.builtup_column not in rows.columns:
        return pd.Series([None] * len(rows), dtype=object)
    fraction = pd.to_numeric(rows[config.builtup_column], errors="coerce").to_numpy(dtype=float)
    labels = np.where(fraction >= config.urban_builtup_fraction, "urban", "rural").astype(object)
    labels[~np.isfinite(fraction)] = None
    return pd.Series(labels, dtype=object)


# --- statistics -------------------------------------------------------------------


def gini(counts: np.ndarray) -> float | None:
    """Gini coefficient of non-negative counts: 0 when even, towards 1 when concentrated."""
    values = np.sort(np.asarray(counts, dtype=float))
    n = len(values)
    total = values.sum()
    if n == 0 or total == 0:
        return None
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * values).sum() / (n * total))


def normalised_entropy(counts: np.ndarray) -> float | None:
    """Shannon entropy of the count shares divided by its maximum log(len(counts))."""
    counts = np.asarray(counts, dtype=float)
    if len(counts) < 2 or counts.sum() == 0:
        return None
    return float(stats.entropy(counts) / math.log(len(counts)))


def divergences(counts: np.ndarray, land_km2: np.ndarray) -> tuple[float | None, float | None]:
    """Return KL(samples || land) and the Jensen-Shannon divergence, both in bits."""
    counts = np.asarray(counts, dtype=float)
    if counts.sum() == 0:
        return None, None
    p = counts / counts.sum()
    q = np.asarray(land_km2, dtype=float) / np.sum(land_km2)
    kl = float(stats.entropy(p, q, base=2))
    js = float(jensenshannon(p, q, base=2) ** 2)
    return kl, js


def wilson_interval(events: int, n: int, level: float) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion, via scipy's `binomtest`."""
    if n == 0:
        return None, None
    interval = stats.binomtest(events, n).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def mean_interval(
    n: int, total: float, total_squares: float, level: float
) -> tuple[float | None, float | None, float | None, float | None]:
    """Return mean, sample standard deviation and the Student-t interval of the mean."""
    if n == 0:
        return None, None, None, None
    mean = total / n
    if n < 2:
        return mean, None, None, None
    variance = max((total_squares - n * mean**2) / (n - 1), 0.0)
    sd = math.sqrt(variance)
    half = stats.t.ppf((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


# --- finalize: space --------------------------------------------------------------


def _report_space(analyzer: CoverageAnalyzer, state: CoverageState, result: AnalyzerResult) -> None:
    config = analyzer.config
    countries = reference.countries()
    located = state.located
    on_land = located - state.at_sea

    result.add_metric(
        "samples_located",
        located,
        "samples",
        "higher_is_better",
        "Samples with a footprint or point, placed by its centroid.",
    )
    covered = sum(1 for key in state.countries if state.countries[key] > 0)
    missing = countries[~countries["adm0_a3"].isin(list(state.countries))]
    result.add_metric(
        "countries_covered", covered, "countries", "higher_is_better",
        "Natural Earth 1:110m countries with at least one sample.",
    )  # fmt: skip
    result.add_metric(
        "land_countries_missing", len(missing), "countries", "lower_is_better",
        f"Countries of the {len(countries)} in Natural Earth 1:110m with no sample.",
    )  # fmt: skip
    result.add_metric(
        "ocean_share", state.at_sea / located if located else None, "fraction", "neutral",
        "Located samples whose centroid is in no 1:110m country (open sea, coast or a small "
        "island).",
    )  # fmt: skip
    result.add_metric(
        "tropics_share", state.tropics / located if located else None, "fraction", "neutral",
        f"Located samples with |latitude| < {TROPIC_LATITUDE} degrees.",
    )  # fmt: skip

    by_country = _representation_table(
        pd.DataFrame(
            {
                "country": countries["adm0_a3"],
                "name": countries["name"],
                "continent": countries["ne_continent"],
                "land_area_km2": countries["land_area_km2"],
            }
        ),
        "country",
        state.countries,
        on_land,
    )
    result.add_table(
        "by_country", "Samples per country", by_country.sort_values("samples", ascending=False),
        "One row per Natural Earth country (ADM0_A3). Shares are over samples on land; "
        "representation is the share of samples over the share of land area.",
    )  # fmt: skip

    continents = reference.continents()
    continent_on_land = sum(state.continents.values())
    by_continent = _representation_table(
        pd.DataFrame(
            {"continent": continents["continent"], "land_area_km2": continents["land_area_km2"]}
        ),
        "continent",
        state.continents,
        continent_on_land,
    )
    result.add_table(
        "by_continent", "Samples per continent", by_continent,
        "Shares are over samples on land; land area from the 1:110m land polygons in EPSG:6933.",
    )  # fmt: skip

    climate_area = reference.climate_land_area()
    climate_counts = {
        letter: int(state.climates[i + 1]) for i, letter in enumerate(reference.CLIMATE_GROUPS)
    }
    by_climate = _representation_table(
        pd.DataFrame(
            {
                "climate": climate_area["climate"],
                "name": [reference.CLIMATE_NAMES[c] for c in climate_area["climate"]],
                "land_area_km2": climate_area["land_area_km2"],
            }
        ),
        "climate",
        climate_counts,
        sum(climate_counts.values()),
    )
    result.add_table(
        "by_climate", "Samples per Köppen-Geiger climate group", by_climate,
        "Climate of the 0.1 degree cell of each centroid (most frequent land class in the "
        "cell); land area counted at 1 km. Samples in all-ocean cells have no climate.",
    )  # fmt: skip
    result.add_table(
        "missing_countries", "Countries with no sample",
        missing.sort_values("land_area_km2", ascending=False)[
            ["adm0_a3", "name", "ne_continent", "land_area_km2"]
        ].rename(columns={"adm0_a3": "country", "ne_continent": "continent"}),
        "Natural Earth 1:110m countries that no sample falls in, largest first.",
    )  # fmt: skip

    _report_grid(analyzer, state, result)
    _representation_findings(config, by_continent, "continent", result)
    _representation_findings(config, by_climate, "climate", result)
    if state.at_sea:
        result.findings.append(
            Finding(
                severity="info",
                code="samples-at-sea",
                message=(
                    f"{state.at_sea} located sample(s) have their centroid in no 1:110m "
                    "country: open sea, a coastline or a small island"
                ),
                count=state.at_sea,
                examples=state.at_sea_examples,
                analyzer=analyzer.name,
            )
        )

    result.add_figure(
        "density", "Samples per equal-area cell (EPSG:6933)", _density_png(analyzer, state)
    )
    result.add_figure(
        "representation_map",
        "Representation per country: share of samples over share of land "
        "(Equal Earth; grey: no sample)",
        _choropleth_png(by_country),
    )
    result.add_figure(
        "latitude",
        "Samples and land area per latitude band",
        _latitude_png(state, config.latitude_band_deg),
    )


def _representation_table(
    frame: pd.DataFrame, key: str, counts: Mapping[str, int], total: int
) -> pd.DataFrame:
    frame = frame.copy()
    frame["samples"] = [int(counts.get(value, 0)) for value in frame[key]]
    frame["sample_share"] = frame["samples"] / total if total else np.nan
    frame["land_share"] = frame["land_area_km2"] / frame["land_area_km2"].sum()
    frame["representation"] = frame["sample_share"] / frame["land_share"]
    frame["land_area_km2"] = frame["land_area_km2"].round(0)
    return frame.reset_index(drop=True)


def _representation_findings(
    config: CoverageSettings, table: pd.DataFrame, key: str, result: AnalyzerResult
) -> None:
    eligible = table[table["land_share"] >= config.min_land_share]
    under = eligible[eligible["representation"] < config.under_representation]
    for row in under.itertuples(index=False):
        row = cast(Any, row)
        name = getattr(row, key)
        result.findings.append(
            Finding(
                severity="warning",
                code=f"underrepresented-{key}",
                message=(
                    f"{key} {name} has {row.land_share:.1%} of the land but "
                    f"{row.sample_share:.1%} of the samples on land "
                    f"(representation {row.representation:.2f}, below "
                    f"{config.under_representation})"
                ),
                count=int(row.samples),
                analyzer="coverage",
            )
        )


def _report_grid(analyzer: CoverageAnalyzer, state: CoverageState, result: AnalyzerResult) -> None:
    grid = analyzer.grid
    counts = state.cells if state.cells is not None else np.zeros(grid.land_km2.size)
    land = grid.land_km2 >= analyzer.config.land_cell_min_fraction * grid.cell_km2
    land &= grid.land_km2 > 0
    land_counts = counts[land]
    kl, js = divergences(land_counts, grid.land_km2[land])
    located = state.located

    result.add_metric(
        "land_cells", int(land.sum()), "cells", "neutral",
        f"Cells of {analyzer.config.cell_km:g} km (EPSG:6933) that are at least "
        f"{analyzer.config.land_cell_min_fraction:.0%} land.",
    )  # fmt: skip
    result.add_metric(
        "land_cell_share", int(land_counts.sum()) / located if located else None, "fraction",
        "neutral", "Located samples that fall in a land cell; the evenness measures use these.",
    )  # fmt: skip
    result.add_metric(
        "gini", gini(land_counts), "index", "lower_is_better",
        "Gini coefficient of samples per land cell (0 even, near 1 all in one cell).",
    )  # fmt: skip
    result.add_metric(
        "entropy", normalised_entropy(land_counts), "fraction", "higher_is_better",
        "Shannon entropy of samples per land cell over its maximum (1 = every cell equal).",
    )  # fmt: skip
    result.add_metric(
        "kl_land", kl, "bits", "lower_is_better",
        "Kullback-Leibler divergence of the samples per land cell from land-area-"
        "proportional sampling.",
    )  # fmt: skip
    result.add_metric(
        "js_land", js, "bits", "lower_is_better",
        "Jensen-Shannon divergence (0..1) between samples per land cell and land area per "
        "land cell.",
    )  # fmt: skip


# --- finalize: time ---------------------------------------------------------------


def _report_time(analyzer: CoverageAnalyzer, state: CoverageState, result: AnalyzerResult) -> None:
    config = analyzer.config
    total = int(state.seasons.sum())
    by_season = pd.DataFrame(
        {
            "season": ALL_SEASONS,
            "samples": state.seasons.sum(axis=1),
            "share": state.seasons.sum(axis=1) / total if total else np.nan,
            "north": state.seasons[:, 0],
            "south": state.seasons[:, 1],
        }
    )
    result.add_table(
        "by_season", "Samples per season", by_season,
        "Meteorological seasons of the acquisition date by hemisphere (December-February "
        "is winter in the north, summer in the south); samples within 23.44 degrees of "
        "the equator are `tropical`.",
    )  # fmt: skip
    result.add_table(
        "by_year", "Samples per year",
        pd.DataFrame(sorted(state.years.items()), columns=["year", "samples"]),
        "Year of the acquisition time (UTC).",
    )  # fmt: skip
    result.add_table(
        "by_month", "Samples per month",
        pd.DataFrame({"month": MONTHS, "samples": state.months}),
        "Month of the acquisition time (UTC), all years together.",
    )  # fmt: skip
    _report_locations(state, result)
    _report_season_words(analyzer, state, result)
    result.add_figure("time", "Samples per year and per month", _time_png(state))
    result.add_figure(
        "month_latitude",
        "Samples per month and latitude band",
        _heatmap_png(state, config.heatmap_band_deg),
    )


def _report_locations(state: CoverageState, result: AnalyzerResult) -> None:
    entries = [entry for entry in state.locations.values() if entry[1] >= 2]
    extratropical = [entry for entry in entries if not entry[2]]
    covered = [bin(entry[0]).count("1") for entry in extratropical]
    all_four = sum(1 for count in covered if count == len(SEASONS))
    result.add_metric(
        "locations_repeated", len(entries), "locations", "neutral",
        "Locations (location_id, else the same point) with two or more dated acquisitions.",
    )  # fmt: skip
    result.add_metric(
        "locations_all_seasons", all_four, "locations", "higher_is_better",
        "Extratropical locations with acquisitions in all four seasons.",
    )  # fmt: skip
    result.add_metric(
        "all_seasons_share", all_four / len(extratropical) if extratropical else None,
        "fraction", "higher_is_better",
        "Extratropical locations with two or more acquisitions that cover all four seasons.",
    )  # fmt: skip
    distribution = pd.Series(covered, dtype=int).value_counts().reindex(range(1, 5), fill_value=0)
    result.add_table(
        "location_seasons", "Seasons covered per location",
        pd.DataFrame(
            {
                "seasons_covered": [*range(1, 5), "tropical"],
                "locations": [*distribution.tolist(), len(entries) - len(extratropical)],
            }
        ),
        "Locations with two or more acquisitions, by how many of the four seasons they "
        "cover; tropical locations (any acquisition in the tropics) are counted apart.",
    )  # fmt: skip


def _report_season_words(
    analyzer: CoverageAnalyzer, state: CoverageState, result: AnalyzerResult
) -> None:
    checked = state.season_checked
    result.add_metric(
        "season_words_checked", checked, "samples", "neutral",
        "Located, dated samples whose caption has a season word that can be checked "
        "at that place.",
    )  # fmt: skip
    result.add_metric(
        "season_mismatch_rate", state.season_mismatched / checked if checked else None,
        "fraction", "lower_is_better",
        "Checked samples with a season word that disagrees with the acquisition date and "
        "hemisphere.",
    )  # fmt: skip
    words = pd.DataFrame(
        [(label, *counts) for label, counts in sorted(state.words.items())],
        columns=["word", "mentions", "checked", "mismatched"],
    )
    result.add_table(
        "season_words", "Season words in captions", words,
        "Mentions per lexicon entry (rules/seasons.yaml); checked = the season exists "
        "at the sample's place and the word is not negated.",
    )  # fmt: skip
    examples = pd.DataFrame(
        state.mismatch_examples,
        columns=["sample_id", "date", "latitude", "season", "words", "caption", "spans"],
    )
    result.add_table(
        "season_mismatches", "Season words that disagree with the date", examples,
        "The first mismatched samples in dataset order.", hidden=True,
    )  # fmt: skip
    if state.season_mismatched:
        result.findings.append(
            Finding(
                severity="warning",
                code="season-word-mismatch",
                message=(
                    f"{state.season_mismatched} caption(s) name a season that disagrees with "
                    "the acquisition date and hemisphere"
                ),
                count=state.season_mismatched,
                examples=[e["sample_id"] for e in state.mismatch_examples][
                    : analyzer.config.examples
                ],
                analyzer=analyzer.name,
            )
        )


# --- finalize: gaps between groups ------------------------------------------------


def gap_table(state: CoverageState, config: CoverageSettings) -> pd.DataFrame:
    """Break each measure down by group, with intervals and a test against the rest.

    Rates get Wilson score intervals and Fisher's exact test; means get Student-t
    intervals and Welch's t-test. Groups with fewer than `min_group_samples` samples
    (or a rest that small) are not tested. The p-values of all tests are adjusted
    together with the Benjamini-Hochberg procedure, which bounds the expected share
    of false discoveries among the groups flagged at `false_discovery_rate`.
    """
    measures = {m.column: m for m in config.measures}
    rows = []
    for (column, dimension, label), group in sorted(state.gaps.items()):
        measure = measures.get(column)
        if measure is None:
            continue
        everyone = GroupStats()
        for (other_column, other_dimension, _), other in state.gaps.items():
            if other_column == column and other_dimension == dimension:
                everyone.n += other.n
                everyone.total += other.total
                everyone.total_squares += other.total_squares
                everyone.events += other.events
        rest = GroupStats(
            n=everyone.n - group.n,
            total=everyone.total - group.total,
            total_squares=everyone.total_squares - group.total_squares,
            events=everyone.events - group.events,
        )
        rows.append(_gap_row(measure, dimension, label, group, rest, config))
    frame = pd.DataFrame(
        rows,
        columns=[
            "measure", "column", "dimension", "group", "samples", "value", "ci_low",
            "ci_high", "rest_value", "p_value", "p_adjusted", "significant", "worse",
        ],
    )  # fmt: skip
    numeric = ["value", "ci_low", "ci_high", "rest_value", "p_value"]
    frame[numeric] = frame[numeric].astype(float)  # None (undefined) becomes NaN
    tested = frame["p_value"].notna()
    frame["p_adjusted"] = np.nan
    if tested.any():
        frame.loc[tested, "p_adjusted"] = stats.false_discovery_control(
            frame.loc[tested, "p_value"].to_numpy(dtype=float)
        )
    frame["significant"] = frame["p_adjusted"] < config.false_discovery_rate
    sign = frame["column"].map({m.column: m.worse for m in config.measures})
    higher = frame["value"] > frame["rest_value"]
    frame["worse"] = frame["significant"] & (
        ((sign == "higher") & higher) | ((sign == "lower") & ~higher)
    )
    return frame


def _gap_row(
    measure: GapMeasure,
    dimension: str,
    label: str,
    group: GroupStats,
    rest: GroupStats,
    config: CoverageSettings,
) -> dict[str, Any]:
    level = config.confidence_level
    testable = group.n >= config.min_group_samples and rest.n >= config.min_group_samples
    p_value = None
    if measure.kind == "rate":
        value = group.events / group.n if group.n else None
        low, high = wilson_interval(group.events, group.n, level)
        rest_value = rest.events / rest.n if rest.n else None
        if testable:
            table = [[group.events, group.n - group.events], [rest.events, rest.n - rest.events]]
            p_value = float(stats.fisher_exact(table).pvalue)
    else:
        value, sd, low, high = mean_interval(group.n, group.total, group.total_squares, level)
        rest_value, rest_sd, _, _ = mean_interval(rest.n, rest.total, rest.total_squares, level)
        if testable and sd is not None and rest_sd is not None and (sd > 0 or rest_sd > 0):
            test = stats.ttest_ind_from_stats(
                value, sd, group.n, rest_value, rest_sd, rest.n, equal_var=False
            )
            p_value = float(test.pvalue)
    return {
        "measure": measure.label,
        "column": measure.column,
        "dimension": dimension,
        "group": label,
        "samples": group.n,
        "value": value,
        "ci_low": low,
        "ci_high": high,
        "rest_value": rest_value,
        "p_value": p_value,
    }


def _report_gaps(analyzer: CoverageAnalyzer, state: CoverageState, result: AnalyzerResult) -> None:
    config = analyzer.config
    frame = gap_table(state, config)
    result.add_table(
        "gaps", "Caption quality by group", frame,
        f"Each measure per group with a {config.confidence_level:.0%} interval (Wilson for "
        "rates, Student-t for means) and a test against all other samples of the same "
        "breakdown (Fisher's exact test for rates, Welch's t-test for means); p-values "
        "adjusted with Benjamini-Hochberg over every test.",
    )  # fmt: skip
    # A significant gap in a measure with a bad direction is a warning when the group
    # is the worse side. A measure with no bad direction (caption length) gets an info.
    neutral = frame["column"].map({m.column: m.worse == "neither" for m in config.measures})
    flagged = frame[frame["worse"] | (frame["significant"] & neutral.astype(bool))]
    for row in flagged.itertuples(index=False):
        row = cast(Any, row)
        group = state.gaps[(row.column, row.dimension, row.group)]
        result.findings.append(
            Finding(
                severity="warning" if row.worse else "info",
                code="quality-gap" if row.worse else "group-difference",
                message=(
                    f"{row.measure}: {row.dimension} {row.group} has {row.value:.3g} "
                    f"(interval {row.ci_low:.3g}..{row.ci_high:.3g}, {row.samples} samples) "
                    f"against {row.rest_value:.3g} for the rest (adjusted p = "
                    f"{row.p_adjusted:.2g})"
                ),
                count=int(row.samples),
                examples=[sample_id for _, sample_id in group.worst],
                analyzer=analyzer.name,
            )
        )


# --- figures ----------------------------------------------------------------------


def _density_png(analyzer: CoverageAnalyzer, state: CoverageState) -> bytes:
    grid = analyzer.grid
    counts = state.cells if state.cells is not None else np.zeros(grid.land_km2.size)
    image = counts.reshape(grid.rows, grid.columns).astype(float)
    land = (grid.land_km2 > 0).reshape(grid.rows, grid.columns)
    extent = (
        grid.x_min / 1000,
        -grid.x_min / 1000,
        grid.y_min / 1000,
        -grid.y_min / 1000,
    )
    figure, axes = new_figure(7.2, 3.4)
    axes.imshow(
        np.where(land, 1.0, np.nan), origin="lower", extent=extent, cmap="Greys", vmin=0, vmax=4
    )
    log_counts = np.where(image > 0, np.log10(np.maximum(image, 1)), np.nan)
    mappable = axes.imshow(log_counts, origin="lower", extent=extent, cmap="viridis")
    figure.colorbar(mappable, ax=axes, label="log10 samples per cell", shrink=0.8)
    axes.set_xlabel("x (km, EPSG:6933)")
    axes.set_ylabel("y (km)")
    return to_png(figure)


def _choropleth_png(by_country: pd.DataFrame) -> bytes:
    countries = reference.countries().to_crs("EPSG:8857")
    ratio = by_country.set_index("country")["representation"]
    values = countries["adm0_a3"].map(ratio).astype(float)
    countries = countries.assign(log2_representation=np.log2(values.where(values > 0)))
    figure, axes = new_figure(7.2, 3.6)
    countries.plot(
        column="log2_representation",
        ax=axes,
        cmap="RdBu",
        vmin=-4,
        vmax=4,
        legend=True,
        legend_kwds={"label": "log2 representation", "shrink": 0.7},
        missing_kwds={"color": "#dddddd", "label": "no sample"},
        edgecolor="#777777",
        linewidth=0.2,
    )
    axes.set_axis_off()
    return to_png(figure)


def _latitude_png(state: CoverageState, band_deg: float) -> bytes:
    land = reference.land_area_by_latitude(band_deg)
    counts = state.latitudes if state.latitudes is not None else np.zeros(len(land))
    centres = -90 + band_deg * (np.arange(len(land)) + 0.5)
    figure, axes = new_figure(6.4, 3.0)
    total = counts.sum()
    axes.bar(
        centres,
        counts / total if total else counts,
        width=band_deg * 0.9,
        color="#3b6ea5",
        label="samples",
    )
    axes.plot(centres, land / land.sum(), color="#b5472f", marker=".", label="land area")
    axes.set_xlabel("latitude (degrees)")
    axes.set_ylabel("share")
    axes.set_xlim(-90, 90)
    axes.legend()
    return to_png(figure)


def _time_png(state: CoverageState) -> bytes:
    figure = Figure(figsize=(7.2, 2.8), layout="constrained")
    years = sorted(state.years)
    left, right = figure.subplots(1, 2)
    left.bar([str(y) for y in years], [state.years[y] for y in years], color="#3b6ea5")
    left.set_ylabel("samples")
    left.set_title("year", fontsize=9)
    right.bar(MONTHS, state.months, color="#3b6ea5")
    right.set_title("month", fontsize=9)
    right.tick_params(axis="x", labelrotation=90)
    return to_png(figure)


def _heatmap_png(state: CoverageState, band_deg: float) -> bytes:
    heat = state.month_latitude
    if heat is None:
        heat = np.zeros((12, int(180 / band_deg)))
    figure, axes = new_figure(6.4, 3.6)
    mappable = axes.imshow(
        heat.T, origin="lower", aspect="auto", cmap="magma", extent=(0.5, 12.5, -90, 90)
    )
    axes.axhline(TROPIC_LATITUDE, color="white", linewidth=0.6, linestyle="--")
    axes.axhline(-TROPIC_LATITUDE, color="white", linewidth=0.6, linestyle="--")
    axes.set_xticks(range(1, 13), MONTHS, fontsize=7)
    axes.set_ylabel("latitude (degrees)")
    figure.colorbar(mappable, ax=axes, label="samples")
    return to_png(figure)
