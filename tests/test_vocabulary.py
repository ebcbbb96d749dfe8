"""Tests of the vocabulary analyzer against real caption sets and independent computations."""

from __future__ import annotations

import html.parser
import json
import math
import pickle
import tempfile
from collections import Counter
from fractions import Fraction
from itertools import combinations
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from lexicalrichness import LexicalRichness
from pyproj import Geod
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import TfidfVectorizer

import eoaudit
from eoaudit.analyzers.base import AuditContext
from eoaudit.analyzers.vocabulary import VocabularyAnalyzer
from eoaudit.claims import ClaimMatcher, Footprint, footprint_sizes
from eoaudit.errors import InputError
from eoaudit.nlp import english_pipeline
from eoaudit.report import render_report
from eoaudit.results import AnalyzerResult
from eoaudit.ruleset import load_rules
from eoaudit.spill import read_final_columns, sequenced
from eoaudit.textstats import (
    DistinctCounter,
    HashCounter,
    group_measures,
    mix64,
    mtld_many,
    sorted_union,
)

SYDNEY = "ucm-sydney-captions/dataset_sydney_modified.json"
RS5M = "rs5m-samples/rs3_dump.csv"


def words_of(text: str) -> list[str]:
    """Lower-case spaCy words: the token definition the analyzer documents."""
    doc = english_pipeline().make_doc(text)
    return [t.lower_ for t in doc if not t.is_punct and not t.is_space]


def samples_of(captions: list[str], **columns: Any) -> gpd.GeoDataFrame:
    ids = [f"s{i}" for i in range(len(captions))]
    geometry = columns.pop("geometry", [None] * len(captions))
    frame = gpd.GeoDataFrame(
        {"sample_id": ids, "caption": captions, "time": pd.NaT, "image": None, **columns},
        geometry=geometry,
        crs="EPSG:4326",
    )
    frame.index = pd.Index(ids)
    return frame


def analyse(
    samples: gpd.GeoDataFrame,
    chunk_size: int | None = None,
    options: dict[str, Any] | None = None,
    tree: bool = False,
) -> tuple[AnalyzerResult, pd.DataFrame, pd.DataFrame]:
    """Run the analyzer chunk by chunk, pickling each state as a worker would.

    Each chunk's spilled rows go to a file of their own, as a partition's
    would. Returns the result, the map_chunk columns and the columns finalize
    wrote. With `tree`, the states are merged pairwise instead of left to
    right, to exercise associativity.
    """
    context = AuditContext(
        rules=load_rules(), options=options or {}, sample_columns=pd.DataFrame(index=samples.index)
    )
    analyzer = VocabularyAnalyzer(context)
    size = chunk_size or len(samples)
    states, columns, spills = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for number, start in enumerate(range(0, len(samples), size)):
            partial = analyzer.map_chunk(samples.iloc[start : start + size])
            states.append(pickle.loads(pickle.dumps(partial.state)))
            columns.append(partial.columns)
            assert partial.spill is not None
            spills.append(Path(folder) / f"part-{number}.parquet")
            pq.write_table(sequenced(partial.spill, number), spills[-1])
        if tree:
            while len(states) > 1:
                pairs = zip(states[::2], states[1::2], strict=False)
                paired = [analyzer.merge(a, b) for a, b in pairs]
                states = paired + ([states[-1]] if len(states) % 2 else [])
            state = states[0]
        else:
            state = states[0]
            for other in states[1:]:
                state = analyzer.merge(state, other)
        context.spill_files = {"vocabulary": spills}
        context.scratch_dir = Path(folder) / "finalize"
        result = AnalyzerResult("vocabulary", "Vocabulary")
        analyzer.finalize(state, result)
        final = read_final_columns(context.final_files)
    return result, pd.concat(columns), final


def value(result: AnalyzerResult, name: str) -> Any:
    return result.metrics[f"vocabulary.{name}"].value


@pytest.fixture(scope="module")
def sydney(shared_data: Path) -> gpd.GeoDataFrame:
    return eoaudit.read_dataset(shared_data / SYDNEY).samples


@pytest.fixture(scope="module")
def rs5m(shared_data: Path) -> gpd.GeoDataFrame:
    return eoaudit.read_dataset(shared_data / RS5M).samples


@pytest.fixture(scope="module")
def sydney_result(sydney: gpd.GeoDataFrame) -> tuple[AnalyzerResult, pd.DataFrame, pd.DataFrame]:
    return analyse(sydney)


@pytest.fixture(scope="module")
def rs5m_result(rs5m: gpd.GeoDataFrame) -> tuple[AnalyzerResult, pd.DataFrame, pd.DataFrame]:
    return analyse(rs5m, chunk_size=4000)


def pandas_duplicates(captions: pd.Series) -> pd.Series:
    normalised = (
        captions.str.casefold().str.replace(r"[^\w\s]+", "", regex=True).str.split().str.join(" ")
    )
    return normalised.duplicated(keep="first") & normalised.ne("")


@pytest.mark.parametrize("dataset", ["sydney", "rs5m"])
def test_exact_duplicates_match_pandas(dataset: str, request: pytest.FixtureRequest) -> None:
    samples = request.getfixturevalue(dataset)
    result, _, columns = request.getfixturevalue(f"{dataset}_result")
    expected = pandas_duplicates(samples["caption"])
    flags = columns["vocabulary.exact_duplicate"].reindex(samples.index)

    assert int(flags.sum()) == int(expected.sum())
    assert (flags.to_numpy() == expected.to_numpy()).all()
    assert value(result, "exact_duplicate_rate") == pytest.approx(expected.sum() / len(samples))


@pytest.mark.parametrize("dataset", ["sydney", "rs5m"])
def test_mtld_matches_lexicalrichness(dataset: str, request: pytest.FixtureRequest) -> None:
    samples = request.getfixturevalue(dataset)
    result, _, _ = request.getfixturevalue(f"{dataset}_result")
    scores = []
    for caption in samples["caption"]:
        words = words_of(caption)
        if words:
            scores.append(LexicalRichness(words, preprocessor=None, tokenizer=None).mtld())

    assert value(result, "mtld") == pytest.approx(np.mean(scores), rel=0.01)


def test_distinct_n_hand_computed() -> None:
    captions = ["The lake is blue.", "the lake is GREEN", "A green field", "   ", ""]
    result, columns, _ = analyse(samples_of(captions), chunk_size=2)

    # Words: 4 + 4 + 3 = 11, types: the lake is blue green a field = 7.
    # Bigrams: 3 + 3 + 2 = 8, distinct 6 (the lake and lake is repeat).
    # 3-grams: 2 + 2 + 1 = 5, distinct 4. 4-grams: 1 + 1 = 2, distinct 2.
    expected = {1: Fraction(7, 11), 2: Fraction(6, 8), 3: Fraction(4, 5), 4: Fraction(2, 2)}
    for n, share in expected.items():
        assert value(result, f"distinct_{n}") == pytest.approx(float(share))
    assert value(result, "ngram_diversity") == pytest.approx(float(sum(expected.values()) / 4))
    assert value(result, "vocabulary_size") == 7
    assert value(result, "empty_captions") == 2
    assert value(result, "captions") == 5
    # Hapaxes: blue, a, field = 3 of 7 types.
    assert value(result, "hapax_share") == pytest.approx(3 / 7)
    assert columns["tokens"].tolist() == [4, 4, 3, 0, 0]
    assert columns["sentences"].tolist() == [1, 1, 1, 0, 0]


def test_chunking_gives_identical_result(sydney: gpd.GeoDataFrame) -> None:
    subset = sydney.iloc[:400]
    whole, whole_columns, whole_samples = analyse(subset)
    chunked, chunked_columns, chunked_samples = analyse(subset, chunk_size=7, tree=True)

    assert {k: m.value for k, m in chunked.metrics.items()} == {
        k: m.value for k, m in whole.metrics.items()
    }
    for key, table in whole.tables.items():
        pd.testing.assert_frame_equal(
            chunked.tables[key].frame.reset_index(drop=True), table.frame.reset_index(drop=True)
        )
    pd.testing.assert_frame_equal(chunked_columns, whole_columns)
    pd.testing.assert_frame_equal(chunked_samples, whole_samples)


def test_group_similarity_matches_sklearn(sydney: gpd.GeoDataFrame) -> None:
    first_image = sydney[sydney["image_id"] == sydney["image_id"].iloc[0]]["caption"].tolist()
    vectorizer = TfidfVectorizer(tokenizer=words_of, lowercase=False, token_pattern=None)
    vectors = vectorizer.fit_transform(first_image).toarray()
    cosines = [float(a @ b) for a, b in combinations(vectors, 2)]

    ids = [
        np.array([english_pipeline().vocab.strings.add(w) for w in words_of(c)], np.uint64)
        for c in first_image
    ]
    measures = group_measures(ids)

    assert measures is not None
    assert measures["similarity"] == pytest.approx(np.mean(cosines))


def test_group_measures_hand_computed() -> None:
    strings = english_pipeline().vocab.strings
    captions = ["a wide river", "a wide river and a road", "fields"]
    ids = [np.array([strings.add(w) for w in c.split()], np.uint64) for c in captions]
    measures = group_measures(ids)

    # Words: a wide river a wide river and a road fields (10), types 6, used once: and road fields.
    assert measures is not None
    assert measures["vocabulary_size"] == 6
    assert measures["hapax_share"] == pytest.approx(3 / 6)
    assert measures["type_token_ratio"] == pytest.approx(6 / 10)
    words = " ".join(captions).split()
    expected = LexicalRichness(words, preprocessor=None, tokenizer=None).mtld()
    assert measures["mtld"] == pytest.approx(expected, rel=1e-12)


def test_mtld_many_matches_lexicalrichness(rs5m: gpd.GeoDataFrame) -> None:
    strings = english_pipeline().vocab.strings
    texts = [words_of(c) for c in rs5m["caption"].head(300)] + [[], ["a"], ["a", "a", "a"]]
    ids = np.array([strings.add(w) for t in texts for w in t], np.uint64)
    offsets = np.r_[0, np.cumsum([len(t) for t in texts])]
    values = mtld_many(ids, offsets)

    for text, measured in zip(texts, values, strict=True):
        if not text:
            assert math.isnan(measured)
            continue
        expected = LexicalRichness(text, preprocessor=None, tokenizer=None).mtld()
        assert measured == pytest.approx(expected, rel=1e-12), text


def test_group_metrics_average_over_images(sydney: gpd.GeoDataFrame) -> None:
    subset = sydney.iloc[:100]
    result, _, _ = analyse(subset, chunk_size=13)
    similarities = []
    for _, captions in subset.groupby("image_id", sort=False)["caption"]:
        vectors = (
            TfidfVectorizer(tokenizer=words_of, lowercase=False, token_pattern=None)
            .fit_transform(captions.tolist())
            .toarray()
        )
        similarities.append(np.mean([a @ b for a, b in combinations(vectors, 2)]))

    assert value(result, "image_group_similarity") == pytest.approx(np.mean(similarities))
    mtlds, hapax_shares = [], []
    for _, captions in subset.groupby("image_id", sort=False)["caption"]:
        words = [w for caption in captions for w in words_of(caption)]
        mtlds.append(LexicalRichness(words, preprocessor=None, tokenizer=None).mtld())
        counts = Counter(words)
        hapax_shares.append(sum(n == 1 for n in counts.values()) / len(counts))
    assert value(result, "image_group_mtld") == pytest.approx(np.mean(mtlds), rel=0.01)
    assert value(result, "image_group_hapax_share") == pytest.approx(np.mean(hapax_shares))
    groups = result.tables["vocabulary.groups"].frame.iloc[0]
    assert groups["groups"] == subset["image_id"].nunique()


def test_near_duplicates_cluster_edited_copies() -> None:
    base = (
        "The image shows a wide river that winds through dense green forest, with a small "
        "town on the northern bank, several agricultural fields to the east and a line of "
        "low hills along the southern edge of the scene under a thin layer of haze"
    )
    edited = base.replace("several", "many")
    unrelated = "A snow covered mountain ridge with glaciers and bare rock above a frozen lake"
    result, _, columns = analyse(samples_of([base, unrelated, edited, base.upper()]))
    clusters = columns["vocabulary.near_duplicate_cluster"].tolist()
    exact = columns["vocabulary.exact_duplicate"].tolist()

    assert clusters[0] == clusters[2] == clusters[3] >= 0
    assert clusters[1] == -1
    assert exact == [False, False, False, True]
    assert value(result, "near_duplicate_rate") == pytest.approx(2 / 4)


def scipy_duplicates(spilled: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Exact flags and near-duplicate clusters computed in memory, the way the search defines them.

    Captions sharing a band hash are linked; clusters are scipy's connected
    components of two or more captions, numbered by their first caption.
    """
    keys = spilled["key"].to_numpy()
    exact = pd.Series(keys).duplicated(keep="first").to_numpy() & (keys != 0)
    bands = spilled[[c for c in spilled.columns if c.startswith("band_")]].to_numpy()
    valid = bands[:, 0] != 0
    sources: list[int] = []
    targets: list[int] = []
    for band in bands.T:
        for members in pd.Series(np.flatnonzero(valid)).groupby(band[valid]).agg(list):
            sources += members[:-1]
            targets += members[1:]
    graph = coo_matrix(
        (np.ones(len(sources), np.int8), (sources, targets)), shape=(len(bands), len(bands))
    )
    _, components = connected_components(graph, directed=False)
    sizes = np.bincount(components)
    labels = np.where((sizes[components] >= 2) & valid, components, -1)
    near = np.full(len(labels), -1)
    members = labels >= 0
    near[members] = pd.factorize(labels[members])[0]
    return exact, near


def test_out_of_core_duplicates_match_scipy(rs5m: gpd.GeoDataFrame) -> None:
    """Real RS5M captions, with chains of one-word edits spread over later partitions."""
    rng = np.random.default_rng(7)
    captions = rs5m["caption"].tolist()[:3000]
    edited = []
    for text in rng.choice([c for c in captions if len(c.split()) >= 30], 120, replace=False):
        words = text.split()
        for _ in range(3):
            words[int(rng.integers(len(words)))] = "edited"
            edited.append(" ".join(words))
    texts = captions + edited + captions[:50]
    order = np.concatenate(
        [np.arange(len(captions)), rng.permutation(np.arange(len(captions), len(texts)))]
    )
    samples = samples_of([texts[i] for i in order])
    _, _, columns = analyse(samples, chunk_size=700)

    context = AuditContext(rules=load_rules(), sample_columns=pd.DataFrame(index=samples.index))
    spilled = VocabularyAnalyzer(context).map_chunk(samples).spill
    assert spilled is not None
    exact, near = scipy_duplicates(spilled.to_pandas())
    found = columns.reindex(samples.index)

    assert (near >= 0).sum() > 300
    assert (found["vocabulary.exact_duplicate"].to_numpy() == exact).all()
    assert (found["vocabulary.near_duplicate_cluster"].to_numpy() == near).all()


def test_state_does_not_grow_with_samples(rs5m: gpd.GeoDataFrame) -> None:
    """Per-caption data is spilled, so four copies of a set keep a state of the same size."""
    captions = rs5m["caption"].tolist()[:2000]
    analyzer = VocabularyAnalyzer(AuditContext(rules=load_rules()))
    once = analyzer.map_chunk(samples_of(captions)).state
    state = once
    for _ in range(3):
        state = analyzer.merge(state, analyzer.map_chunk(samples_of(captions)).state)

    assert len(pickle.dumps(state)) < 1.05 * len(pickle.dumps(once))


def test_cross_location_duplicates() -> None:
    caption = "A green field next to a river."
    samples = samples_of(
        [caption, caption, caption, "A dry lake bed."],
        location_id=["0000001", "0000001", "0000002", "0000003"],
    )
    result, _, _ = analyse(samples)
    clusters = result.tables["vocabulary.duplicate_clusters"].frame
    exact = clusters[clusters["kind"] == "exact"].iloc[0]

    assert exact["captions"] == 3
    assert exact["locations"] == 2
    assert value(result, "cross_location_duplicate_rate") == pytest.approx(3 / 4)
    assert "duplicate-captions-across-locations" in {f.code for f in result.findings}


@pytest.fixture(scope="module")
def matcher() -> ClaimMatcher:
    return ClaimMatcher(load_rules()["claims"], english_pipeline(), gsd_m=10)


CHIP = Footprint(diagonal_m=2640 * math.sqrt(2), area_m2=2640.0**2)


@pytest.mark.parametrize(
    ("sentence", "labels"),
    [
        ("Several cars are parked along the road.", ["vehicle"]),
        ("No cars are visible in the scene.", []),
        ("Cars are not visible on the road.", []),
        ("There are no people or cars near the lake.", []),
        ("The image shows a field without any vehicles.", []),
        ("A farmer walks his cows across the pasture.", ["person", "animal"]),
        ("The photo was taken at sunset on a sunny day.", ["time of day", "weather"]),
        ("An oblique view of the harbour.", ["camera angle"]),
        ("A dense forest with a winding river.", []),
    ],
)
def test_claims_on_targeted_sentences(
    matcher: ClaimMatcher, sentence: str, labels: list[str]
) -> None:
    doc = english_pipeline()(sentence)
    found = matcher.find_claims(doc, CHIP)

    assert [claim.label for claim in found] == labels


@pytest.mark.parametrize(
    ("sentence", "claimed"),
    [
        ("A river about 500 kilometres long crosses the desert.", "500 kilometres"),
        ("The lake covers 50 square kilometers.", "50 square kilometers"),
        ("A 12-km long runway.", "12-km"),
        ("A reservoir of 1,200 ha.", "1,200 ha"),
        ("A field 200 m wide next to a road.", None),
        ("A lake of roughly 3 km2 and a 1.5 km dam.", None),
        ("The ground sample distance is 10 m.", None),
    ],
)
def test_numeric_scale_against_footprint(
    matcher: ClaimMatcher, sentence: str, claimed: str | None
) -> None:
    found = [
        c for c in matcher.find_claims(english_pipeline()(sentence), CHIP) if c.kind == "scale"
    ]

    if claimed is None:
        assert found == []
    else:
        assert [sentence[c.start : c.end] for c in found] == [claimed]


def test_numeric_scale_needs_footprint(matcher: ClaimMatcher) -> None:
    doc = english_pipeline()("A river about 500 kilometres long.")
    assert matcher.find_claims(doc, None) == []


def test_fine_gsd_allows_small_objects() -> None:
    fine = ClaimMatcher(load_rules()["claims"], english_pipeline(), gsd_m=0.3)
    doc = english_pipeline()("Several cars and people on the street at night.")

    assert [c.label for c in fine.find_claims(doc, None)] == ["time of day"]


def test_footprint_size_matches_geodesic(shared_data: Path) -> None:
    metadata = gpd.read_parquet(shared_data / "ssl4eo-s12-v1.1-meta/val_metadata.parquet")
    geometry = metadata.geometry.iloc[:50]
    sizes = footprint_sizes(geometry.bounds.to_numpy(), geometry.geom_type.tolist(), None)
    geod = Geod(ellps="WGS84")
    for polygon, size in zip(geometry, sizes, strict=True):
        minx, miny, maxx, maxy = polygon.bounds
        _, _, diagonal = geod.inv(minx, miny, maxx, maxy)
        assert size is not None
        assert size.diagonal_m == pytest.approx(diagonal, rel=0.01)


def test_claim_columns_and_spans(shared_data: Path) -> None:
    metadata = gpd.read_parquet(shared_data / "ssl4eo-s12-v1.1-meta/val_metadata.parquet")
    captions = [
        "A dry valley with a river approximately 500 kilometers long.",
        "No cars are visible; a quiet field.",
        "Cars and trucks drive along the highway at night.",
    ]
    samples = samples_of(captions, geometry=metadata.geometry.iloc[:3].tolist())
    result, columns, _ = analyse(samples, chunk_size=2)
    spans = [json.loads(s) for s in columns["unsupported_spans"]]

    assert columns["unsupported_claims"].tolist() == [1, 0, 3]
    assert captions[0][spans[0][0][0] : spans[0][0][1]] == "500 kilometers"
    assert [captions[2][a:b] for a, b, _ in spans[2]] == ["Cars", "trucks", "at night"]
    assert value(result, "unsupported_claim_rate") == pytest.approx(2 / 3)
    assert result.tables["vocabulary.flagged"].frame["sample_id"].tolist() == ["s0", "s2"]


def test_invalid_gsd_option_is_rejected() -> None:
    context = AuditContext(rules=load_rules(), options={"gsd_m": "ten"})
    with pytest.raises(InputError, match="gsd_m must be a number"):
        VocabularyAnalyzer(context)


def test_landcover_terms_per_class() -> None:
    captions = [
        "Dense forest next to a lake, with no buildings.",
        "Trees line the river.",
        "A golf course near the beach.",
    ]
    result, _, _ = analyse(samples_of(captions))
    table = result.tables["vocabulary.landcover_terms"].frame.set_index("name")

    assert table.loc["Tree cover", "captions"] == 2
    assert table.loc["Tree cover", "mentions"] == 2
    assert table.loc["Permanent water bodies", "captions"] == 2
    assert table.loc["Built-up", "negated"] == 1
    assert table.loc["Built-up", "captions"] == 0
    assert table.loc["unverifiable (lexicon list)", "mentions"] == 2


def test_template_rate_and_openings() -> None:
    captions = ["The image shows a lake."] * 3 + ["A forest.", "Fields and roads.", ""]
    result, _, _ = analyse(samples_of(captions))
    openings = result.tables["vocabulary.openings"].frame

    assert openings.iloc[0]["opening"] == "the image shows"
    assert openings.iloc[0]["captions"] == 3
    # All five non-empty captions open with one of the top 10 openings.
    assert value(result, "template_rate") == pytest.approx(1.0)


def test_tag_recital() -> None:
    captions = [
        "Ocean waves near a golf course and a hotel.",
        "A school next to a park.",
        "Open water.",
    ]
    samples = samples_of(
        captions,
        tags=["ocean, golf-course, school", "['school', 'park', 'cemetery', 'hotel']", None],
    )
    result, _, _ = analyse(samples)
    table = result.tables["vocabulary.tags_recital"].frame.set_index("tag")

    assert table.loc["school", "samples"] == 2
    assert table.loc["school", "captions_naming"] == 1
    assert table.loc["golf course", "captions_naming"] == 1
    # Sample 1 names 2 of 3 tags (most), sample 2 names 2 of 4 (not most).
    assert value(result, "tags_most_named_share") == pytest.approx(1 / 2)


def test_question_columns_match_caption_statistics(rs5m: gpd.GeoDataFrame) -> None:
    subset = rs5m.iloc[:300]
    as_question = samples_of(["x"] * len(subset), question_1=subset["caption"].tolist())
    question_result, _, _ = analyse(as_question)
    caption_result, _, _ = analyse(samples_of(subset["caption"].tolist()))

    for name in ("tokens_mean", "mtld", "distinct_2", "ngram_diversity", "template_rate"):
        assert value(question_result, f"question_1_{name}") == pytest.approx(
            value(caption_result, name)
        )
    assert value(question_result, "question_1_exact_duplicate_rate") == pytest.approx(
        value(caption_result, "exact_duplicate_rate")
    )


def test_distinct_counter_switches_to_hyperloglog() -> None:
    values = mix64(np.arange(300_000, dtype=np.uint64) % np.uint64(120_000))
    whole = DistinctCounter(exact_cap=50_000)
    whole.add(values)
    pieces = DistinctCounter(exact_cap=50_000)
    for part in np.array_split(values, 7):
        other = DistinctCounter(exact_cap=50_000)
        other.add(part)
        pieces = pieces.merge(other)

    assert not whole.exact
    assert whole.count() == pytest.approx(120_000, rel=0.02)
    assert pieces.count() == whole.count()


class _MarkParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.marks: list[str] = []
        self.scripts = 0
        self._in_mark = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_mark = tag == "mark"
        self.scripts += tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_mark = False if tag == "mark" else self._in_mark

    def handle_data(self, data: str) -> None:
        if self._in_mark:
            self.marks.append(data)


def test_report_section_highlights_and_escapes(tmp_path: Path) -> None:
    captions = [
        "<script>alert(1)</script> Cars on a road at night.",
        "A forest.",
        "A forest.",
    ]
    frame = samples_of(captions)
    path = tmp_path / "captions.csv"
    pd.DataFrame({"id": frame["sample_id"], "caption": captions}).to_csv(path, index=False)
    audit = eoaudit.run_audit(
        eoaudit.read_dataset(path), eoaudit.AuditOptions(analyzers=["vocabulary"])
    )
    page = render_report(audit.result)
    parser = _MarkParser()
    parser.feed(page)

    assert parser.scripts == 0
    assert "&lt;script&gt;" in page
    assert parser.marks == ["Cars", "at night"]
    assert "vocabulary.exact_duplicate_rate" in audit.result.metrics


def test_sentence_counts_match_spacy_sentencizer(rs5m: gpd.GeoDataFrame) -> None:
    captions = [
        *rs5m["caption"].iloc[:500].tolist(),
        "Wait... what?! A lake.  Trees",
        "!!! A field",
        "...",
        "No final stop",
    ]
    _, columns, _ = analyse(samples_of(captions), chunk_size=97)
    nlp = english_pipeline()
    expected = []
    for doc in nlp.pipe(captions):
        words = [t for t in doc if not t.is_punct and not t.is_space]
        expected.append(len(list(doc.sents)) if words else 0)

    assert columns["sentences"].tolist() == expected


def test_landcover_option_leaves_table_out() -> None:
    result, _, _ = analyse(samples_of(["A forest."]), options={"landcover_terms": False})

    assert "vocabulary.landcover_terms" not in result.tables
    assert value(result, "captions") == 1


def test_incomplete_vocabulary_rules_are_rejected() -> None:
    rules = load_rules()
    rules["vocabulary"] = {"gsd_m": 10}
    with pytest.raises(InputError, match=r"rules/vocabulary.yaml: expected a mapping with"):
        VocabularyAnalyzer(AuditContext(rules=rules))


def test_hash_counter_merge_matches_recount() -> None:
    rng = np.random.default_rng(3)
    first = rng.integers(0, 5000, 4000).astype(np.uint64)
    second = rng.integers(2500, 9000, 300).astype(np.uint64)
    merged = HashCounter.of(first).merge(HashCounter.of(second))
    recount = HashCounter.of(np.concatenate([first, second]))

    assert np.array_equal(merged.keys, recount.keys)
    assert np.array_equal(merged.counts, recount.counts)
    reverse = HashCounter.of(second).merge(HashCounter.of(first))
    assert np.array_equal(reverse.keys, recount.keys)
    assert np.array_equal(reverse.counts, recount.counts)
    union = sorted_union(np.unique(first), np.unique(second))
    assert np.array_equal(union, np.union1d(first, second))
