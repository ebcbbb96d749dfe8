"""Hemisphere seasons, tropical half-years and the season-word lexicon."""

from __future__ import annotations

import numpy as np
import pytest

from eoaudit.errors import InputError
from eoaudit.ruleset import load_rule
from eoaudit.seasons import (
    SeasonLexicon,
    check_mentions,
    season_codes,
    season_names,
    tropical_half,
)


@pytest.fixture(scope="module")
def lexicon() -> SeasonLexicon:
    return SeasonLexicon.from_rules(load_rule("seasons"))


# (month, latitude, expected season): known dates written out by hand.
KNOWN_SEASONS = [
    (1, 48.0, "winter"),  # January in Paris
    (1, -34.0, "summer"),  # January in Sydney
    (7, -34.0, "winter"),
    (7, 52.0, "summer"),
    (12, 40.0, "winter"),  # December belongs to the winter that starts it
    (12, -40.0, "summer"),
    (2, 60.0, "winter"),
    (3, 60.0, "spring"),
    (5, 60.0, "spring"),
    (6, -45.0, "winter"),
    (9, 45.0, "autumn"),
    (10, -40.0, "spring"),
    (11, -40.0, "spring"),
    (3, -40.0, "autumn"),
    (6, 10.0, "tropical"),
    (1, -23.43, "tropical"),
    (6, 23.44, "summer"),  # on the Tropic of Cancer: outside the tropics
    (6, -23.44, "winter"),
    (12, 90.0, "winter"),  # North Pole
    (12, -90.0, "summer"),  # South Pole
    (6, 0.0, "tropical"),  # equator
]


@pytest.mark.parametrize(("month", "latitude", "expected"), KNOWN_SEASONS)
def test_season_at_known_date(month: int, latitude: float, expected: str) -> None:
    codes = season_codes(np.array([float(month)]), np.array([latitude]))
    assert season_names(codes) == [expected]


def test_season_unknown_month_or_latitude() -> None:
    codes = season_codes(np.array([np.nan, 5.0]), np.array([45.0, np.nan]))
    assert codes.tolist() == [-1, -1]
    assert season_names(codes) == [None, None]


@pytest.mark.parametrize(
    ("month", "latitude", "expected"),
    [
        (7, 15.0, "wet"),  # West African monsoon in July
        (1, 15.0, "dry"),
        (1, -15.0, "wet"),  # northern Australia wet season
        (7, -15.0, "dry"),
        (7, 5.0, None),  # equatorial band: not checked
        (7, 30.0, None),  # outside the tropics
        (np.nan, 15.0, None),
    ],
)
def test_tropical_half(month: float, latitude: float, expected: str | None) -> None:
    halves = tropical_half(np.array([month]), np.array([latitude]), range(5, 11), 10.0)
    assert halves.tolist() == [expected]


def test_lexicon_finds_variants(lexicon: SeasonLexicon) -> None:
    caption = "Snow covered fields in WINTER; snow-covered roofs during fall."
    labels = [(m.word.label, m.text) for m in lexicon.find(caption)]
    assert labels == [
        ("snow cover", "Snow covered"),
        ("winter", "WINTER"),
        ("snow cover", "snow-covered"),
        ("autumn", "during fall"),
    ]


def test_lexicon_offsets_point_at_words(lexicon: SeasonLexicon) -> None:
    caption = "green fields in summer"
    (mention,) = lexicon.find(caption)
    assert caption[mention.start : mention.end] == "summer"


@pytest.mark.parametrize(
    "caption",
    [
        "a waterfall in a canyon",  # "fall" inside a word
        "rocks fall into the sea",  # the verb
        "a hot spring near the road",  # excluded phrase
        "summerhouse by the lake",  # not a whole word
    ],
)
def test_lexicon_ignores_non_seasons(lexicon: SeasonLexicon, caption: str) -> None:
    assert lexicon.find(caption) == []


def test_lexicon_marks_negation(lexicon: SeasonLexicon) -> None:
    (negated,) = lexicon.find("fields with no snow cover")
    (plain,) = lexicon.find("No clouds. Fields with snow cover")
    assert negated.negated
    assert not plain.negated


def test_check_winter_word_in_summer(lexicon: SeasonLexicon) -> None:
    mentions = lexicon.find("a winter landscape")
    checked, mismatched = check_mentions(mentions, "summer", None)
    assert [m.word.label for m in checked] == ["winter"]
    assert [m.word.label for m in mismatched] == ["winter"]


def test_check_snow_in_spring_agrees(lexicon: SeasonLexicon) -> None:
    checked, mismatched = check_mentions(lexicon.find("snow-covered hills"), "spring", None)
    assert len(checked) == 1
    assert mismatched == []


def test_check_tropics_uses_half_years(lexicon: SeasonLexicon) -> None:
    mentions = lexicon.find("dry season savanna in winter")
    checked, mismatched = check_mentions(mentions, "tropical", "wet")
    assert [m.word.label for m in checked] == ["dry season"]
    assert [m.word.label for m in mismatched] == ["dry season"]


def test_check_tropics_without_half_unchecked(lexicon: SeasonLexicon) -> None:
    checked, mismatched = check_mentions(lexicon.find("dry season"), "tropical", None)
    assert checked == []
    assert mismatched == []


def test_check_ignores_negated(lexicon: SeasonLexicon) -> None:
    checked, _ = check_mentions(lexicon.find("fields without snow cover"), "summer", None)
    assert checked == []


def test_lexicon_rejects_unknown_season() -> None:
    rules = {"words": [{"label": "x", "terms": ["x"], "consistent_with": ["monsoon"]}]}
    with pytest.raises(InputError, match=r"entry 1 \(x\): unknown season"):
        SeasonLexicon.from_rules(rules)


def test_lexicon_rejects_missing_words() -> None:
    with pytest.raises(InputError, match="missing list `words`"):
        SeasonLexicon.from_rules({})
