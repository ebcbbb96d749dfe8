"""Seasons of an acquisition, and season words in captions.

Seasons are meteorological and depend on the hemisphere: December to February is
winter in the north and summer in the south. Within the tropics
(|latitude| < :data:`TROPIC_LATITUDE`) there are no four seasons, so those samples get
the season `tropical`; for the season-word check they are split instead into a wet
and a dry half-year (see :func:`tropical_half`).

The season is taken from the UTC date of the acquisition time, not the local date.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eoaudit.errors import InputError

TROPIC_LATITUDE = 23.44
"""Latitude of the tropics of Cancer and Capricorn in degrees (rounded)."""

SEASONS = ("winter", "spring", "summer", "autumn")
TROPICAL = "tropical"
ALL_SEASONS = (*SEASONS, TROPICAL)
TROPICAL_HALVES = ("wet", "dry")

# Index into SEASONS for months 1..12 in the northern hemisphere (index 0 unused).
_NORTH_SEASON_OF_MONTH = np.array([-1, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0])


def season_codes(months: np.ndarray, latitudes: np.ndarray) -> np.ndarray:
    """Return the season of each acquisition as an index into :data:`ALL_SEASONS`.

    Args:
        months: Month 1..12 of each acquisition, float with NaN where unknown.
        latitudes: Latitude in degrees, NaN where unknown.

    Returns:
        int array: 0..3 for winter..autumn, 4 for tropical, -1 where the month or the
        latitude is unknown.
    """
    months = np.asarray(months, dtype=float)
    latitudes = np.asarray(latitudes, dtype=float)
    known = np.isfinite(months) & np.isfinite(latitudes)
    codes = np.full(months.shape, -1, dtype=np.int64)

    month_index = np.where(known, months, 0).astype(np.int64)
    north = _NORTH_SEASON_OF_MONTH[month_index]
    south = (north + 2) % 4
    codes[known] = np.where(latitudes[known] >= 0, north[known], south[known])
    tropical = known & (np.abs(np.where(known, latitudes, 90.0)) < TROPIC_LATITUDE)
    codes[tropical] = len(SEASONS)
    return codes


def season_names(codes: np.ndarray) -> list[str | None]:
    """Turn codes from :func:`season_codes` into names, None for -1."""
    return [ALL_SEASONS[code] if code >= 0 else None for code in codes]


def tropical_half(
    months: np.ndarray,
    latitudes: np.ndarray,
    wet_months_north: Iterable[int],
    equatorial_band: float,
) -> np.ndarray:
    """Return `wet`, `dry` or None for each acquisition inside the tropics.

    The rainy season of most tropical climates follows the sun: it falls in the
    northern summer north of the equator and six months later south of it. Near the
    equator there are often two rainy seasons, so samples with |latitude| below
    `equatorial_band` get None, as do samples outside the tropics.

    Args:
        months: Month 1..12, NaN where unknown.
        latitudes: Latitude in degrees, NaN where unknown.
        wet_months_north: Months of the wet half-year north of the equator.
        equatorial_band: Half-width in degrees of the band left unchecked.
    """
    months = np.asarray(months, dtype=float)
    latitudes = np.asarray(latitudes, dtype=float)
    wet_north = np.isin(np.nan_to_num(months), list(wet_months_north))
    wet = np.where(latitudes >= 0, wet_north, ~wet_north)
    halves = np.where(wet, "wet", "dry").astype(object)
    absolute = np.abs(np.nan_to_num(latitudes, nan=90.0))
    checkable = (
        np.isfinite(months)
        & np.isfinite(latitudes)
        & (absolute < TROPIC_LATITUDE)
        & (absolute >= equatorial_band)
    )
    halves[~checkable] = None
    return halves


@dataclass(frozen=True)
class SeasonWord:
    """One entry of the season lexicon.

    Attributes:
        label: Name of the entry, e.g. `winter` or `snow cover`.
        terms: Phrases that express it, lower case.
        consistent_with: Seasons (winter..autumn) or tropical halves (wet, dry) that
            the words agree with.
        exclude: Phrases that contain a term without meaning the season
            (`hot spring`).
        exact_case_terms: Phrases matched only with this exact case, e.g. `Fall`,
            which as a capitalised word is the season and otherwise mostly the verb.
    """

    label: str
    terms: tuple[str, ...]
    consistent_with: frozenset[str]
    exclude: tuple[str, ...] = ()
    exact_case_terms: tuple[str, ...] = ()

    @property
    def checks_seasons(self) -> bool:
        """Whether the entry can be checked outside the tropics."""
        return bool(self.consistent_with & set(SEASONS))

    @property
    def checks_tropical_halves(self) -> bool:
        """Whether the entry can be checked inside the tropics."""
        return bool(self.consistent_with & set(TROPICAL_HALVES))


@dataclass(frozen=True)
class SeasonMention:
    """A span of a caption matched to a season word.

    Attributes:
        word: The lexicon entry.
        text: The caption text that matched.
        start: Character offset of the start.
        end: Character offset after the end.
        negated: Whether a negation (`no snow`) precedes it.
    """

    word: SeasonWord
    text: str
    start: int
    end: int
    negated: bool


def _phrase_pattern(phrase: str) -> str:
    words = re.split(r"[\s\-]+", phrase.strip())
    return r"[\s\-]+".join(re.escape(word) for word in words if word)


class SeasonLexicon:
    """Season words and how to find them in captions.

    Matching is case-insensitive on whole words; a space and a hyphen match each
    other (`snow-covered` finds `snow covered`). A term is negated when one of the
    negation words occurs within `negation_window` words before it.
    """

    def __init__(
        self, words: Sequence[SeasonWord], negations: Sequence[str], negation_window: int
    ) -> None:
        self.words = tuple(words)
        self.negation_window = negation_window
        self._pattern, self._word_of_group = self._compile(self.words)
        self._excludes = {
            word.label: re.compile(
                r"\b(?:" + "|".join(_phrase_pattern(e) for e in word.exclude) + r")\b",
                re.IGNORECASE,
            )
            for word in self.words
            if word.exclude
        }
        negation = "|".join(_phrase_pattern(str(n)) for n in negations)
        self._negation = re.compile(r"\b(?:" + negation + r")\b", re.IGNORECASE)

    @classmethod
    def from_rules(
        cls, rules: Mapping[str, Any], source: str = "rules/seasons.yaml"
    ) -> SeasonLexicon:
        """Build the lexicon from the parsed `seasons` rule file.

        Raises:
            InputError: When an entry lacks `terms` or names an unknown season.
        """
        entries = rules.get("words") if isinstance(rules, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise InputError(f"{source}: missing list `words`; see the packaged seasons.yaml")
        allowed = set(SEASONS) | set(TROPICAL_HALVES)
        words = []
        for position, entry in enumerate(entries, start=1):
            label = str(entry.get("label", f"entry {position}"))
            terms = entry.get("terms")
            consistent = set(entry.get("consistent_with") or [])
            if not terms or not consistent:
                raise InputError(
                    f"{source}, words entry {position} ({label}): needs `terms` and "
                    "`consistent_with`"
                )
            unknown = consistent - allowed
            if unknown:
                raise InputError(
                    f"{source}, words entry {position} ({label}): unknown season(s) "
                    f"{sorted(unknown)}; use {sorted(allowed)}"
                )
            words.append(
                SeasonWord(
                    label=label,
                    terms=tuple(str(t).lower() for t in terms),
                    consistent_with=frozenset(consistent),
                    exclude=tuple(str(e).lower() for e in entry.get("exclude") or ()),
                    exact_case_terms=tuple(str(t) for t in entry.get("exact_case_terms") or ()),
                )
            )
        return cls(words, rules.get("negations") or [], int(rules.get("negation_window", 3)))

    @staticmethod
    def _compile(words: Sequence[SeasonWord]) -> tuple[re.Pattern[str], list[SeasonWord]]:
        """Compile one alternation with a group per term, longest terms first.

        Case-insensitive terms sit in `(?i:...)` groups and exact-case terms in plain
        ones, so one pass over a caption finds both kinds without overlaps.
        """
        entries = [(term, word, True) for word in words for term in word.terms]
        entries += [(term, word, False) for word in words for term in word.exact_case_terms]
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)
        alternatives = []
        for term, _, ignore_case in entries:
            body = _phrase_pattern(term)
            alternatives.append(f"((?i:{body}))" if ignore_case else f"({body})")
        pattern = re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")
        # Each alternative adds one numbered group (the inner (?i:) group is not numbered).
        return pattern, [word for _, word, _ in entries]

    def find(self, caption: str) -> list[SeasonMention]:
        """Return the season words of one caption, in text order, without overlaps."""
        mentions = []
        for match in self._pattern.finditer(caption):
            word = self._word_of_group[match.lastindex - 1] if match.lastindex else None
            if word is None:
                continue
            start, end = match.span()
            if word.exclude and self._is_excluded(word, caption, start, end):
                continue
            mentions.append(
                SeasonMention(
                    word=word,
                    text=match.group(0),
                    start=start,
                    end=end,
                    negated=self._is_negated(caption, start),
                )
            )
        return mentions

    def _is_excluded(self, word: SeasonWord, caption: str, start: int, end: int) -> bool:
        pattern = self._excludes.get(word.label)
        if pattern is None:
            return False
        return any(m.start() <= start and end <= m.end() for m in pattern.finditer(caption))

    def _is_negated(self, caption: str, start: int) -> bool:
        if not self.negation_window:
            return False
        # 100 characters hold the few words of the window; a sentence end stops it.
        before = re.split(r"[.;!?]", caption[max(0, start - 100) : start])[-1]
        window = " ".join(before.split()[-self.negation_window :])
        return bool(self._negation.search(window))


def check_mentions(
    mentions: Sequence[SeasonMention], season: str | None, half: str | None
) -> tuple[list[SeasonMention], list[SeasonMention]]:
    """Split a caption's mentions into checked ones and mismatches.

    A season-named word (winter .. autumn) is checked outside the tropics against
    `season`; a wet or dry season word is checked inside the tropics against `half`.
    Negated mentions and words that cannot be checked at the sample's place are
    left out.

    Returns:
        The checked mentions and, among them, those that disagree with the date.
    """
    checked = []
    mismatched = []
    for mention in mentions:
        if mention.negated:
            continue
        word = mention.word
        if season in SEASONS and word.checks_seasons:
            actual = season
        elif season == TROPICAL and half is not None and word.checks_tropical_halves:
            actual = half
        else:
            continue
        checked.append(mention)
        if actual not in word.consistent_with:
            mismatched.append(mention)
    return checked, mismatched
