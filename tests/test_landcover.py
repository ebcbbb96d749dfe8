"""Land-cover mentions: lexicon matching on lemmas, negation scope and hedges."""

from __future__ import annotations

from typing import Any

import pytest

from eoaudit.errors import InputError
from eoaudit.landcover import LandcoverMatcher, Mention
from eoaudit.nlp import english_pipeline
from eoaudit.ruleset import load_rule


@pytest.fixture(scope="module")
def matcher() -> LandcoverMatcher:
    return LandcoverMatcher(load_rule("landcover"))


def mentions(matcher: LandcoverMatcher, caption: str) -> list[Mention]:
    return matcher.find_mentions(english_pipeline()(caption))


def summary(matcher: LandcoverMatcher, caption: str) -> list[tuple[str, int | None, bool, bool]]:
    return [(m.text, m.class_value, m.negated, m.hedged) for m in mentions(matcher, caption)]


def test_plural_and_capitalised_terms(matcher: LandcoverMatcher) -> None:
    assert summary(matcher, "Trees, Buildings and rivers.") == [
        ("Trees", 10, False, False),
        ("Buildings", 50, False, False),
        ("rivers", 80, False, False),
    ]


def test_offsets_point_into_caption(matcher: LandcoverMatcher) -> None:
    caption = "An image of built-up areas near a lake."
    for mention in mentions(matcher, caption):
        assert caption[mention.start : mention.end] == mention.text
    assert [m.text for m in mentions(matcher, caption)] == ["built-up areas", "lake"]


def test_longest_phrase_wins(matcher: LandcoverMatcher) -> None:
    assert summary(matcher, "Sea ice, a mangrove forest and a sports field.") == [
        ("Sea ice", 70, False, False),
        ("mangrove forest", 95, False, False),
        ("sports field", None, False, False),
    ]


def test_phrase_matches_inflected_form(matcher: LandcoverMatcher) -> None:
    assert summary(matcher, "Several water bodies.") == [("water bodies", 80, False, False)]


def test_unverifiable_entries(matcher: LandcoverMatcher) -> None:
    found = summary(matcher, "A golf course beside a school.")
    assert found == [("golf course", None, False, False), ("school", None, False, False)]


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("There are no visible water bodies.", [("water bodies", True)]),
        ("Farmland without trees.", [("Farmland", False), ("trees", True)]),
        ("The absence of buildings is striking.", [("buildings", True)]),
        (
            "A field with no trees, shrubs or buildings, next to a river.",
            [
                ("field", False),
                ("trees", True),
                ("shrubs", True),
                ("buildings", True),
                ("river", False),
            ],
        ),
        ("No roads lead to the forest.", [("roads", True), ("forest", False)]),
        ("Water bodies are not visible.", [("Water bodies", True)]),
        ("The lake is absent, but a town lies nearby.", [("lake", True), ("town", False)]),
        ("No trees are visible; fields dominate.", [("trees", True), ("fields", False)]),
        ("There is a lack of snow. Grassland covers it.", [("snow", True), ("Grassland", False)]),
        ("A forest, not a desert.", [("forest", False), ("desert", True)]),
    ],
)
def test_negation_scope(matcher: LandcoverMatcher, caption: str, expected: list[Any]) -> None:
    assert [(m.text, m.negated) for m in mentions(matcher, caption)] == expected


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("Possibly a lake next to farmland. A town.", [True, True, False]),
        ("The area appears to be a wetland.", [True]),
        ("What looks like a river crosses fields, and a city is visible.", [True, True, True]),
        ("A river; perhaps a marsh.", [False, True]),
    ],
)
def test_hedges_cover_clause(matcher: LandcoverMatcher, caption: str, expected: list[bool]) -> None:
    assert [m.hedged for m in mentions(matcher, caption)] == expected


def test_empty_caption(matcher: LandcoverMatcher) -> None:
    assert mentions(matcher, "") == []


def test_lexicon_layout_errors() -> None:
    with pytest.raises(InputError, match="expected a mapping with a `classes` mapping"):
        LandcoverMatcher({"terms": ["tree"]})
    with pytest.raises(InputError, match="class key 'forest' is not a WorldCover class value"):
        LandcoverMatcher({"classes": {"forest": {"name": "Tree", "terms": ["tree"]}}})
    with pytest.raises(InputError, match="`terms` of class 10 must be a list of strings"):
        LandcoverMatcher({"classes": {10: {"name": "Tree cover", "terms": "tree"}}})


def test_term_in_two_classes_rejected() -> None:
    lexicon = {
        "classes": {
            10: {"name": "Tree cover", "terms": ["grove"]},
            20: {"name": "Shrubland", "terms": ["grove"]},
        }
    }
    with pytest.raises(InputError, match="'grove' is listed under both class 10 and class 20"):
        LandcoverMatcher(lexicon)


def test_every_class_of_packaged_lexicon_matches(matcher: LandcoverMatcher) -> None:
    lexicon = load_rule("landcover")
    for value, entry in lexicon["classes"].items():
        for word in entry["terms"] + entry["phrases"]:
            found = mentions(matcher, f"We see {word} here.")
            assert [m.class_value for m in found] == [int(value)], word


def test_word_keys_and_sentences_match_spacy(shared_data, matcher: LandcoverMatcher):
    """Per-form keys and array sentence starts agree with spaCy's lemmatizer and sentencizer."""
    import numpy as np
    import pandas as pd
    from spacy.attrs import IS_PUNCT, ORTH

    from eoaudit.landcover import lemma_key
    from eoaudit.nlp import english_pipeline
    from eoaudit.textstats import period_orths, sentence_starts

    captions = pd.read_csv(shared_data / "landsat30-au" / "captioning_ft_full.csv")["caption"]
    rs5m = pd.read_csv(shared_data / "rs5m-samples" / "rs3_dump.csv")["caption"]
    texts = [*captions.head(150), *rs5m.head(150), "No trees!! Maybe... a lake? Yes."]
    nlp = english_pipeline()
    for full, bare in zip(
        nlp.pipe(texts), nlp.pipe(texts, disable=["lemmatizer", "sentencizer"]), strict=True
    ):
        words = [matcher._word(token.orth, bare.vocab.strings) for token in bare]
        assert [word.lower for word in words] == [token.lower_ for token in full]
        assert [word.key for word in words] == [lemma_key(token) for token in full]
        table = bare.to_array([ORTH, IS_PUNCT])
        marks = sentence_starts(table[:, 0], table[:, 1], period_orths(), np.array([0, len(bare)]))
        assert np.flatnonzero(marks).tolist() == [sentence.start for sentence in full.sents]
