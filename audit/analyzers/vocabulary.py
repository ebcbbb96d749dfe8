"""Vocabulary analyzer: caption statistics, diversity, templates, duplicates, claims.

What it measures:

* length in characters, words and sentences; empty captions;
* vocabulary size, hapax share, type-token ratio, MTLD, distinct-1..4 and
  n-gram diversity over all captions (see :mod:`eoaudit.textstats` for the
  definitions);
* within groups (the captions of one `image_id`, the acquisitions of one
  `location_id`): vocabulary size, distinct-1..4, n-gram diversity and the
  mean pairwise TF-IDF cosine similarity, averaged over groups;
* templates: the most frequent openings and sentence frames, and the share
  of captions that open with one of the top-k openings;
* exact duplicates (after :func:`~eoaudit.textstats.normalise`) and
  near-duplicate clusters (MinHash LSH), and duplicates shared by samples at
  different locations;
* land-cover term frequency per ESA WorldCover class (`rules/landcover.yaml`);
* unsupported claims (`rules/claims.yaml`, :mod:`eoaudit.claims`);
* metadata recital: how often captions name their sample's tags;
* the same text statistics for question columns (`question_1` ...).

Whole-set MTLD is the mean of per-caption MTLD over captions with at least
one word (MTLD of one caption as in the lexicalrichness package), so it
merges exactly across chunks; MTLD over the concatenated stream would depend
on where chunks start.

Options read from `context.options`:

* `gsd_m` (float): ground sampling distance of the sensor in metres; default
  `gsd_m` of `rules/vocabulary.yaml` (10).
* `landcover_terms` (bool): count land-cover terms per class; default true.
  False leaves the land-cover table out, for speed: matching with
  :class:`~eoaudit.landcover.LandcoverMatcher` is the slowest step.
* `footprint_m` (float): side of the square footprint assumed for samples
  without a polygon footprint in the numeric-scale check; default
  `footprint_m` of `rules/vocabulary.yaml` (null: no check for them).

State cost: the caption :class:`~eoaudit.textstats.TextStats`, counters of
claims, land-cover terms and tags, and the first `report.flagged_examples`
flagged captions. The distinct n-gram sets of TextStats stop growing at
`exact_distinct_cap`. Its counters of word types, openings and frames grow
with the vocabulary, not with the number of captions.

The duplicate search compares every caption with all others, so its inputs do
not go into the state. :meth:`VocabularyAnalyzer.map_chunk` spills one row per
caption (id, 64-bit text key, `bands` MinHash band hashes, location key,
120-character snippet, group ids and question keys; about 200 bytes at 8
bands) and :meth:`VocabularyAnalyzer.finalize` searches them on disk with
DuckDB (:mod:`eoaudit.duplicates`). It writes the per-sample columns
`vocabulary.exact_duplicate` and `vocabulary.near_duplicate_cluster` to a
file in `AuditContext.final_files`; the other per-sample columns come from
`map_chunk`.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from eoaudit.analyzers.base import Analyzer, ChunkResult, register
from eoaudit.claims import Claim, ClaimMatcher, Footprint, footprint_sizes
from eoaudit.duplicates import distinct_values, find_duplicates, open_spilled
from eoaudit.errors import InputError
from eoaudit.figures import new_figure, to_png
from eoaudit.landcover import LandcoverMatcher
from eoaudit.nlp import english_pipeline
from eoaudit.results import AnalyzerResult, Finding
from eoaudit.samples import CAPTION, IMAGE_ID, LOCATION_ID, MAX_EXAMPLES
from eoaudit.spill import connect
from eoaudit.textstats import (
    FIXED_POINT,
    GROUP_MEASURES,
    GroupRuns,
    TextStats,
    TokenizedTexts,
    minhash_bands,
    mix64,
    text_key,
    tokenize_docs,
    top,
)

SNIPPET_CHARACTERS = 120
GROUP_COLUMNS = {IMAGE_ID: "image", LOCATION_ID: "location"}
UNVERIFIABLE = 0
"""Key of the lexicon's `unverifiable` entries in the land-cover counters."""

# Only the tokenizer runs: LandcoverMatcher looks lemmas and sentence
# boundaries up itself, the claim rules list inflected forms, and sentence
# counts and frames come from textstats.sentence_starts, which follows the
# sentencizer's rule.
PIPE_BATCH = 256
DOC_BATCH = 1000
"""Captions whose spaCy docs are held at once (a 100-word doc takes tens of kilobytes)."""


@dataclass
class ClaimCounts:
    """Unsupported claims: counts by kind and label, and the first flagged captions."""

    captions: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_label: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: list[tuple[str, str, str]] = field(default_factory=list)

    def merge(self, other: ClaimCounts, keep: int) -> ClaimCounts:
        """Add the counts; keep the first `keep` examples in sample order."""
        return ClaimCounts(
            self.captions + other.captions,
            self.by_kind + other.by_kind,
            self.by_label + other.by_label,
            (self.examples + other.examples)[:keep],
        )


@dataclass
class LandcoverCounts:
    """Land-cover mentions per WorldCover class (0 for unverifiable entries)."""

    mentions: Counter[int] = field(default_factory=Counter)
    negated: Counter[int] = field(default_factory=Counter)
    captions: Counter[int] = field(default_factory=Counter)
    terms: Counter[tuple[int, str]] = field(default_factory=Counter)

    def merge(self, other: LandcoverCounts) -> LandcoverCounts:
        """Add the counts of both."""
        return LandcoverCounts(
            self.mentions + other.mentions,
            self.negated + other.negated,
            self.captions + other.captions,
            self.terms + other.terms,
        )


@dataclass
class TagCounts:
    """Recital of one tag column: how often captions name their sample's tags.

    Attributes:
        samples: Samples with at least one tag.
        most_named: Samples whose caption names more than half of their tags.
        tagged: Samples carrying each tag.
        named: Samples whose caption names each tag.
    """

    samples: int = 0
    most_named: int = 0
    tagged: Counter[str] = field(default_factory=Counter)
    named: Counter[str] = field(default_factory=Counter)

    def merge(self, other: TagCounts) -> TagCounts:
        """Add the counts of both."""
        return TagCounts(
            self.samples + other.samples,
            self.most_named + other.most_named,
            self.tagged + other.tagged,
            self.named + other.named,
        )


@dataclass
class VocabularyState:
    """Partial state of the vocabulary analyzer; see the module docstring for its cost."""

    captions: TextStats
    groups: dict[str, GroupRuns]
    claims: ClaimCounts
    landcover: LandcoverCounts
    tags: dict[str, TagCounts]
    questions: dict[str, TextStats]


@register
class VocabularyAnalyzer(Analyzer[VocabularyState]):
    """Measure caption statistics, diversity, templates, duplicates and unsupported claims."""

    name = "vocabulary"
    title = "Vocabulary and templates"
    requires = ("caption",)
    order = 10

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.rules = _vocabulary_rules(context.rules)
        self.gsd_m = _positive(context.options.get("gsd_m"), self.rules["gsd_m"], "gsd_m")
        footprint = context.options.get("footprint_m", self.rules.get("footprint_m"))
        self.footprint_m = None if footprint is None else _positive(footprint, None, "footprint_m")
        self.nlp = english_pipeline()
        self.claim_matcher = ClaimMatcher(context.rules.get("claims") or {}, self.nlp, self.gsd_m)
        self.landcover = LandcoverMatcher(context.rules["landcover"])
        self.count_landcover = bool(context.options.get("landcover_terms", True))

    def settings(self) -> dict[str, Any]:
        """Return the rule values used, for the report."""
        minhash = self.rules["minhash"]
        return {
            "gsd_m": self.gsd_m,
            "footprint_m (no polygon)": self.footprint_m,
            "opening words / top openings": f"{self.rules['opening_words']} / "
            f"{self.rules['top_openings']}",
            "minhash bands x rows, shingle words": f"{minhash['bands']} x {minhash['rows']}, "
            f"{minhash['shingle_words']}",
            "exact distinct n-gram cap": self.rules["exact_distinct_cap"],
        }

    # Map ----------------------------------------------------------------

    def map_chunk(self, chunk: gpd.GeoDataFrame) -> ChunkResult[VocabularyState]:
        """Tokenize the captions of one chunk and count everything mergeable."""
        captions = chunk[CAPTION].fillna("").astype(str).tolist()
        sample_ids = chunk.index.to_numpy(dtype=object)
        footprints = self._footprints(chunk)
        keep = int(self.rules["report"]["flagged_examples"])
        disable = ["lemmatizer", "sentencizer"]
        parts, claims, spans = [], [], []
        claim_counts, landcover = ClaimCounts(), LandcoverCounts()
        for start in range(0, len(captions), DOC_BATCH):
            batch = slice(start, start + DOC_BATCH)
            docs = list(self.nlp.pipe(captions[batch], disable=disable, batch_size=PIPE_BATCH))
            parts.append(
                tokenize_docs(
                    captions[batch], docs, self.rules["opening_words"], self.rules["frame_words"]
                )
            )
            numbers, texts, counts = self._claims(
                docs, sample_ids[batch], captions[batch], footprints[batch]
            )
            claims.extend(numbers)
            spans.extend(texts)
            claim_counts = claim_counts.merge(counts, keep)
            if self.count_landcover:
                landcover = landcover.merge(self._landcover(docs, captions[batch]))
        tokens = TokenizedTexts.concat(parts)
        cap = int(self.rules["exact_distinct_cap"])

        spill = self._spill(chunk, tokens, captions)
        state = VocabularyState(
            captions=TextStats.of(captions, tokens, cap),
            groups={
                column: GroupRuns.of(_group_keys(chunk[column]), tokens)
                for column in GROUP_COLUMNS
                if column in chunk
            },
            claims=claim_counts,
            landcover=landcover,
            tags={
                column: _tag_counts(chunk[column].tolist(), captions)
                for column in self.rules["tag_columns"]
                if column in chunk
            },
            questions={},
        )
        for column in self.rules["question_columns"]:
            if column in chunk:
                stats, keys = self._question_stats(chunk[column], cap)
                state.questions[column] = stats
                spill = spill.append_column(f"question.{column}", pa.array(keys, pa.uint64()))
        columns = pd.DataFrame(
            {
                "tokens": tokens.words,
                "characters": tokens.characters,
                "sentences": tokens.sentences,
                "unsupported_claims": claims,
                "unsupported_spans": spans,
            },
            index=chunk.index,
        )
        return ChunkResult(state, columns, spill)

    def _spill(
        self, chunk: gpd.GeoDataFrame, tokens: TokenizedTexts, captions: list[str]
    ) -> pa.Table:
        """Return the per-caption rows for the duplicate search (see eoaudit.duplicates)."""
        minhash = self.rules["minhash"]
        bands = minhash_bands(
            tokens,
            int(minhash["shingle_words"]),
            int(minhash["bands"]),
            int(minhash["rows"]),
            int(minhash["seed"]),
        )
        columns: dict[str, pa.Array] = {
            "sample_id": pa.array([str(i) for i in chunk.index], pa.string()),
            "key": pa.array(tokens.keys, pa.uint64()),
            **{f"band_{b}": pa.array(bands[:, b], pa.uint64()) for b in range(bands.shape[1])},
            "location": pa.array(_location_keys(chunk), pa.uint64()),
            "snippet": pa.array([c[:SNIPPET_CHARACTERS] for c in captions], pa.string()),
        }
        for column in GROUP_COLUMNS:
            if column in chunk:
                columns[f"group.{column}"] = pa.array(_group_keys(chunk[column]), pa.string())
        return pa.table(columns)

    def _footprints(self, chunk: gpd.GeoDataFrame) -> list[Footprint | None]:
        geometry = chunk.geometry.to_numpy()
        names = [_GEOMETRY_NAMES.get(int(k)) for k in shapely.get_type_id(geometry)]
        return footprint_sizes(shapely.bounds(geometry), names, self.footprint_m)

    def _claims(
        self,
        docs: list[Any],
        sample_ids: np.ndarray,
        captions: list[str],
        footprints: list[Footprint | None],
    ) -> tuple[list[int], list[str], ClaimCounts]:
        keep = int(self.rules["report"]["flagged_examples"])
        counts = ClaimCounts()
        numbers, spans = [], []
        for sample_id, caption, doc, footprint in zip(
            sample_ids, captions, docs, footprints, strict=True
        ):
            found = self.claim_matcher.find_claims(doc, footprint, caption)
            numbers.append(len(found))
            spans.append(json.dumps([[c.start, c.end, _claim_label(c)] for c in found]))
            if not found:
                continue
            counts.captions += 1
            counts.by_kind.update({c.kind for c in found})
            counts.by_label.update(
                (c.kind, c.label if c.kind != "scale" else "scale") for c in found
            )
            if len(counts.examples) < keep:
                counts.examples.append((str(sample_id), caption, spans[-1]))
        return numbers, spans, counts

    def _landcover(self, docs: list[Any], texts: list[str]) -> LandcoverCounts:
        counts = LandcoverCounts()
        terms: Counter[tuple[int, str]] = Counter()
        for mentions in self.landcover.find_mentions_many(docs, texts):
            claimed = [
                (UNVERIFIABLE if mention.class_value is None else mention.class_value, mention.text)
                for mention in mentions
                if not mention.negated
            ]
            counts.negated.update(
                UNVERIFIABLE if mention.class_value is None else mention.class_value
                for mention in mentions
                if mention.negated
            )
            terms.update(claimed)
            counts.captions.update({value for value, _ in claimed})
        for (value, text), number in terms.items():
            counts.mentions[value] += number
            counts.terms[(value, text.lower())] += number
        return counts

    def _question_stats(self, column: pd.Series, cap: int) -> tuple[TextStats, np.ndarray]:
        texts = column.fillna("").astype(str).tolist()
        parts = []
        for start in range(0, len(texts), DOC_BATCH):
            batch = texts[start : start + DOC_BATCH]
            docs = self.nlp.pipe(
                batch, disable=["lemmatizer", "sentencizer"], batch_size=PIPE_BATCH
            )
            parts.append(
                tokenize_docs(batch, docs, self.rules["opening_words"], self.rules["frame_words"])
            )
        tokens = TokenizedTexts.concat(parts)
        return TextStats.of(texts, tokens, cap), tokens.keys

    # Merge --------------------------------------------------------------

    def merge(self, left: VocabularyState, right: VocabularyState) -> VocabularyState:
        """Combine two partial states; examples stay in sample order."""
        keep = int(self.rules["report"]["flagged_examples"])
        return VocabularyState(
            captions=left.captions.merge(right.captions),
            groups=_merge_maps(left.groups, right.groups, lambda a, b: a.merge(b)),
            claims=left.claims.merge(right.claims, keep),
            landcover=left.landcover.merge(right.landcover),
            tags=_merge_maps(left.tags, right.tags, lambda a, b: a.merge(b)),
            questions=_merge_maps(left.questions, right.questions, lambda a, b: a.merge(b)),
        )

    # Finalize -----------------------------------------------------------

    def finalize(self, state: VocabularyState, result: AnalyzerResult) -> None:
        """Report metrics, tables, findings and figures; write the duplicate columns.

        Raises:
            RuntimeError: When the context has no spilled rows or scratch
                folder; run the analyzer through :func:`eoaudit.engine.run_audit`.
        """
        files = self.context.spill_files.get(self.name)
        scratch = self.context.scratch_dir
        if not files or scratch is None:
            raise RuntimeError(
                "vocabulary: finalize needs the spilled rows and a scratch folder in "
                "AuditContext; run the analyzer through eoaudit.engine.run_audit"
            )
        self._text_metrics(state, result)
        self._template_tables(state.captions, result)
        with closing(connect(scratch, self.context.finalize_memory)) as db:
            open_spilled(db, files)
            self._duplicates(db, scratch, result)
            self._group_metrics(state.groups, db, result)
            self._question_tables(state.questions, db, result)
        if self.count_landcover:
            self._landcover_table(state.landcover, state.captions.texts, result)
        self._claim_metrics(state.claims, state.captions.texts, result)
        self._tag_tables(state.tags, result)

    def _text_metrics(self, state: VocabularyState, result: AnalyzerResult) -> None:
        stats = state.captions
        measures = stats.measures(int(self.rules["top_openings"]))
        described = {
            "captions": ("captions", "neutral", "Captions audited."),
            "empty_captions": (
                "captions",
                "lower_is_better",
                "Captions that are empty or only whitespace.",
            ),
            "tokens_mean": (
                "tokens",
                "neutral",
                "Mean words per caption (spaCy tokens that are not punctuation or whitespace).",
            ),
            "tokens_median": ("tokens", "neutral", "Median words per caption."),
            "tokens_p95": ("tokens", "neutral", "95th percentile of words per caption."),
            "vocabulary_size": ("types", "higher_is_better", "Distinct lower-case words."),
            "hapax_share": ("fraction", "neutral", "Share of word types that occur once."),
            "type_token_ratio": ("fraction", "higher_is_better", "Word types over words."),
            "mtld": (
                "tokens",
                "higher_is_better",
                "Mean per-caption MTLD (threshold 0.72, forward and backward passes averaged).",
            ),
            "distinct_1": ("fraction", "higher_is_better", "Distinct words over words."),
            "distinct_2": ("fraction", "higher_is_better", "Distinct word bigrams over bigrams."),
            "distinct_3": ("fraction", "higher_is_better", "Distinct word 3-grams over 3-grams."),
            "distinct_4": ("fraction", "higher_is_better", "Distinct word 4-grams over 4-grams."),
            "ngram_diversity": ("fraction", "higher_is_better", "Mean of distinct-1..4."),
            "template_rate": (
                "fraction",
                "lower_is_better",
                f"Non-empty captions opening with one of the {self.rules['top_openings']} "
                f"most frequent {self.rules['opening_words']}-word openings.",
            ),
        }
        renamed = {"texts": "captions", "empty": "empty_captions"}
        for key, value in measures.items():
            name = renamed.get(key, key)
            unit, direction, description = described[name]
            result.add_metric(name, value, unit, direction, description)
        if not stats.exact_ngram_counts():
            result.settings["distinct-n"] = (
                "distinct 2..4-gram counts past the exact cap are HyperLogLog estimates "
                "(relative error about 0.4 %)"
            )

        rows = []
        for measure, distribution in (
            ("words", stats.words),
            ("characters", stats.characters),
            ("sentences (non-empty captions)", stats.sentences),
        ):
            rows.append({"measure": measure, **distribution.summary()})
        result.add_table(
            "lengths",
            "Caption length",
            pd.DataFrame(rows),
            "Distribution of each length measure over captions; quantiles by nearest rank.",
        )
        result.add_figure("words", "Words per caption", _histogram_png(stats.words.counts))

    def _template_tables(self, stats: TextStats, result: AnalyzerResult) -> None:
        report = self.rules["report"]
        non_empty = max(1, stats.texts - stats.empty)
        openings = top(stats.openings, max(int(report["top_openings"]), 1))
        result.add_table(
            "openings",
            "Most frequent openings",
            pd.DataFrame(
                {
                    "opening": [text for text, _ in openings],
                    "captions": [count for _, count in openings],
                    "share": [count / non_empty for _, count in openings],
                }
            ),
            f"First {self.rules['opening_words']} words of non-empty captions, lower case.",
            hidden=True,
        )
        sentences = max(1, sum(stats.frames.values()))
        frames = top(stats.frames, max(int(report["top_frames"]), 1))
        result.add_table(
            "frames",
            "Most frequent sentence frames",
            pd.DataFrame(
                {
                    "frame": [text for text, _ in frames],
                    "sentences": [count for _, count in frames],
                    "share": [count / sentences for _, count in frames],
                }
            ),
            f"First {self.rules['frame_words']} words of each sentence with content words "
            "replaced by _ (sentences of three words or more).",
            hidden=True,
        )
        rate = stats.measures(int(self.rules["top_openings"]))["template_rate"]
        if openings and rate is not None and rate >= 0.5:
            result.findings.append(
                Finding(
                    "info",
                    "caption-templates",
                    f"{rate:.0%} of captions open with one of the {self.rules['top_openings']} "
                    f"most frequent openings; the most frequent is {openings[0][0]!r}",
                    openings[0][1],
                    [],
                    self.name,
                )
            )

    def _duplicates(self, db: Any, scratch: Path, result: AnalyzerResult) -> None:
        columns_file = scratch / f"{self.name}-columns.parquet"
        found = find_duplicates(
            db,
            bands=int(self.rules["minhash"]["bands"]),
            keep=int(self.rules["report"]["duplicate_clusters"]),
            examples=MAX_EXAMPLES,
            columns_file=columns_file,
            prefix=f"{self.name}.",
        )
        self.context.final_files.append(columns_file)
        total = found.captions
        result.add_metric(
            "exact_duplicate_rate",
            found.exact / total if total else None,
            "fraction",
            "lower_is_better",
            "Captions equal to an earlier caption after normalisation (case, punctuation, "
            "whitespace), over captions.",
        )
        result.add_metric(
            "near_duplicate_rate",
            (found.near_members - found.near_clusters) / total if total else None,
            "fraction",
            "lower_is_better",
            "Captions in a near-duplicate cluster (MinHash LSH) other than its first, over "
            "captions.",
        )
        result.add_metric(
            "cross_location_duplicate_rate",
            found.shared_captions / total if total else None,
            "fraction",
            "lower_is_better",
            "Captions whose exact duplicate also describes a sample at another location, "
            "over captions.",
        )
        for kind, count in (("exact", found.exact_clusters), ("near", found.near_clusters)):
            result.add_metric(
                f"{kind}_duplicate_clusters",
                count,
                "clusters",
                "lower_is_better",
                f"Clusters of two or more {kind} duplicate captions.",
            )
        keep = int(self.rules["report"]["duplicate_clusters"])
        result.add_table(
            "duplicate_clusters",
            "Duplicate clusters",
            found.table,
            f"The {keep} largest clusters of exact (normalised text) and of near (MinHash) "
            f"duplicates, and up to {keep} clusters shared by two or more locations (distinct "
            "location ids or footprint centres); the per-sample columns list every cluster.",
            hidden=True,
        )
        if found.exact:
            result.findings.append(
                Finding(
                    "warning",
                    "duplicate-captions",
                    f"{found.exact} caption(s) repeat an earlier caption word for word "
                    "(after case, punctuation and whitespace normalisation)",
                    found.exact,
                    found.exact_examples,
                    self.name,
                )
            )
        if found.shared_clusters:
            result.findings.append(
                Finding(
                    "warning",
                    "duplicate-captions-across-locations",
                    f"{found.shared_clusters} caption text(s) describe samples at different "
                    f"locations ({found.shared_captions} captions)",
                    found.shared_captions,
                    found.shared_examples,
                    self.name,
                )
            )

    def _group_metrics(self, groups: dict[str, GroupRuns], db: Any, result: AnalyzerResult) -> None:
        rows = []
        for column, runs in groups.items():
            final = runs.closed()
            word = GROUP_COLUMNS[column]
            means = {
                name: final.sums[name] / FIXED_POINT / final.measured if final.measured else None
                for name in GROUP_MEASURES
            }
            rows.append(
                {
                    "group": column,
                    "groups": final.groups,
                    "groups_measured": final.measured,
                    "captions_per_group": final.captions / final.groups if final.groups else None,
                    **means,
                }
            )
            result.add_metric(
                f"{word}_group_similarity",
                means["similarity"],
                "cosine",
                "lower_is_better",
                f"Mean pairwise TF-IDF cosine of the captions of one {column}, averaged over "
                f"{column} groups with two or more captions.",
            )
            result.add_metric(
                f"{word}_group_ngram_diversity",
                means["ngram_diversity"],
                "fraction",
                "higher_is_better",
                f"N-gram diversity of the captions of one {column}, averaged over groups.",
            )
            result.add_metric(
                f"{word}_group_mtld",
                means["mtld"],
                "tokens",
                "higher_is_better",
                f"MTLD of the captions of one {column} read one after the other, averaged "
                "over groups; it falls when captions of the group repeat each other.",
            )
            result.add_metric(
                f"{word}_group_hapax_share",
                means["hapax_share"],
                "fraction",
                "neutral",
                f"Share of a {column}'s vocabulary used once in its captions, averaged over "
                "groups.",
            )
            split = final.groups - distinct_values(db, f"group.{column}", "")
            if split > 0:
                result.findings.append(
                    Finding(
                        "info",
                        f"split-{word}-groups",
                        f"{split} {column} group(s) occur in more than one run of consecutive "
                        "samples; within-group statistics treat each run as a group",
                        split,
                        [],
                        self.name,
                    )
                )
        if rows:
            result.add_table(
                "groups",
                "Diversity within groups",
                pd.DataFrame(rows),
                "Means over groups with two or more captions with words; similarity is the "
                "mean pairwise TF-IDF cosine (IDF over the group).",
            )

    def _landcover_table(
        self, counts: LandcoverCounts, captions: int, result: AnalyzerResult
    ) -> None:
        names = {**self.landcover.class_names, UNVERIFIABLE: "unverifiable (lexicon list)"}
        rows = []
        for value, name in names.items():
            terms = sorted(
                ((term, n) for (v, term), n in counts.terms.items() if v == value),
                key=lambda item: (-item[1], item[0]),
            )[:5]
            rows.append(
                {
                    "class": value if value != UNVERIFIABLE else None,
                    "name": name,
                    "mentions": counts.mentions[value],
                    "negated": counts.negated[value],
                    "captions": counts.captions[value],
                    "share": counts.captions[value] / captions if captions else None,
                    "top_terms": ", ".join(f"{t} ({n})" for t, n in terms),
                }
            )
        frame = pd.DataFrame(rows)
        frame["class"] = pd.Series([row["class"] for row in rows], dtype=object)
        result.add_table(
            "landcover_terms",
            "Land-cover terms per WorldCover class",
            frame,
            "Mentions of each class's lexicon terms (rules/landcover.yaml); captions and share "
            "count captions with at least one mention that is not negated.",
        )
        result.add_figure("landcover", "Share of captions mentioning each class", _bars_png(frame))

    def _claim_metrics(self, counts: ClaimCounts, captions: int, result: AnalyzerResult) -> None:
        result.add_metric(
            "unsupported_claim_rate",
            counts.captions / captions if captions else None,
            "fraction",
            "lower_is_better",
            "Captions with at least one unsupported claim (sub-GSD object, time of day, "
            "camera angle, weather, or a size larger than the footprint), over captions.",
        )
        for kind in ("object", "statement", "scale"):
            result.add_metric(
                f"{kind}_claims",
                counts.by_kind[kind],
                "captions",
                "lower_is_better",
                f"Captions with at least one {kind} claim.",
            )
        rows = [
            {"kind": kind, "label": label, "claims": n}
            for (kind, label), n in sorted(counts.by_label.items(), key=lambda i: (-i[1], i[0]))
        ]
        result.add_table(
            "claims",
            "Unsupported claims by rule",
            pd.DataFrame(rows, columns=["kind", "label", "claims"]),
            "Matches of each rule of rules/claims.yaml (negated mentions left out).",
        )
        result.add_table(
            "flagged",
            "Captions with unsupported claims",
            pd.DataFrame(counts.examples, columns=["sample_id", "caption", "spans"]),
            "The first flagged captions in sample order, with the claimed spans.",
            hidden=True,
        )
        if counts.captions:
            result.findings.append(
                Finding(
                    "warning",
                    "unsupported-claims",
                    f"{counts.captions} caption(s) state something a {self.gsd_m:g} m image "
                    "cannot show (small objects, time of day, camera angle, weather, or sizes "
                    "beyond the footprint)",
                    counts.captions,
                    [sample for sample, _, _ in counts.examples[:MAX_EXAMPLES]],
                    self.name,
                )
            )

    def _tag_tables(self, tags: dict[str, TagCounts], result: AnalyzerResult) -> None:
        cap = int(self.rules["report"]["tags"])
        for column, counts in tags.items():
            result.add_metric(
                f"{column}_most_named_share",
                counts.most_named / counts.samples if counts.samples else None,
                "fraction",
                "lower_is_better",
                f"Captions naming more than half of their sample's `{column}` tags, over "
                "samples with tags.",
            )
            rows = [
                {
                    "tag": tag,
                    "samples": n,
                    "captions_naming": counts.named[tag],
                    "share": counts.named[tag] / n,
                }
                for tag, n in top(counts.tagged, cap)
            ]
            result.add_table(
                f"{column}_recital",
                f"Recital of `{column}` tags",
                pd.DataFrame(rows, columns=["tag", "samples", "captions_naming", "share"]),
                f"The {cap} most frequent tags: samples carrying each and the share whose "
                "caption names it.",
            )

    def _question_tables(
        self, questions: dict[str, TextStats], db: Any, result: AnalyzerResult
    ) -> None:
        rows = []
        for column, stats in questions.items():
            measures = stats.measures(int(self.rules["top_openings"]))
            non_empty = stats.texts - stats.empty
            distinct = distinct_values(db, f"question.{column}", 0)
            duplicates = (non_empty - distinct) / stats.texts if stats.texts else None
            rows.append({"column": column, **measures, "exact_duplicate_rate": duplicates})
            for name in ("tokens_mean", "mtld", "distinct_2", "ngram_diversity", "template_rate"):
                result.add_metric(
                    f"{column}_{name}",
                    measures[name],
                    "tokens" if name in ("tokens_mean", "mtld") else "fraction",
                    "neutral",
                    f"{name} of the `{column}` column, as for captions.",
                )
            result.add_metric(
                f"{column}_exact_duplicate_rate",
                duplicates,
                "fraction",
                "lower_is_better",
                f"Texts of `{column}` equal to an earlier one after normalisation.",
            )
        if rows:
            result.add_table(
                "questions",
                "Question columns",
                pd.DataFrame(rows),
                "The caption statistics computed for each question/answer column.",
            )


_GEOMETRY_NAMES = {3: "Polygon", 6: "MultiPolygon"}


def _claim_label(claim: Claim) -> str:
    return claim.label if claim.kind == "scale" else f"{claim.kind}: {claim.label}"


def _vocabulary_rules(rules: dict[str, Any]) -> dict[str, Any]:
    settings = rules.get("vocabulary")
    required = ("gsd_m", "opening_words", "top_openings", "frame_words", "minhash")
    if not isinstance(settings, dict) or any(key not in settings for key in required):
        raise InputError(
            f"rules/vocabulary.yaml: expected a mapping with {', '.join(required)}; "
            "copy the packaged file and edit it"
        )
    if "landcover" not in rules:
        raise InputError("rules/landcover.yaml not found; the vocabulary analyzer needs it")
    return settings


def _positive(value: Any, default: Any, name: str) -> float:
    chosen = default if value is None else value
    try:
        number = float(chosen)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of metres, got {chosen!r}") from None
    if not number > 0:
        raise InputError(f"{name} must be positive, got {chosen!r}")
    return number


def _merge_maps(left: dict[str, Any], right: dict[str, Any], combine: Any) -> dict[str, Any]:
    merged = dict(left)
    for key, value in right.items():
        merged[key] = combine(merged[key], value) if key in merged else value
    return merged


def _group_keys(column: pd.Series) -> list[str]:
    return ["" if pd.isna(v) else str(v) for v in column.tolist()]


def _location_keys(chunk: gpd.GeoDataFrame) -> np.ndarray:
    """Return a 64-bit key of each sample's location: its location_id, else its footprint centre.

    A centre is rounded to 0.001 degrees (about 100 m). 0 means unknown.
    """
    if LOCATION_ID in chunk:
        return np.array(
            [0 if pd.isna(v) else text_key(str(v)) for v in chunk[LOCATION_ID].tolist()],
            dtype=np.uint64,
        )
    geometry = chunk.geometry.to_numpy()
    centres = shapely.centroid(geometry)
    x = np.round(shapely.get_x(centres) * 1000)
    y = np.round(shapely.get_y(centres) * 1000)
    known = np.isfinite(x) & np.isfinite(y)
    keys = np.zeros(len(chunk), np.uint64)
    xi = x[known].astype(np.int64).astype(np.uint64)
    yi = y[known].astype(np.int64).astype(np.uint64)
    keys[known] = mix64(mix64(xi) ^ yi) | np.uint64(1)
    return keys


def _tag_counts(values: Sequence[Any], captions: Sequence[str]) -> TagCounts:
    counts = TagCounts()
    for value, caption in zip(values, captions, strict=True):
        tags = _parse_tags(value)
        if not tags:
            continue
        text = f" {_words(caption)} "
        named = {tag for tag in tags if _names(text, tag)}
        counts.samples += 1
        counts.tagged.update(tags)
        counts.named.update(named)
        if len(named) * 2 > len(tags):
            counts.most_named += 1
    return counts


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+|_", " ", text.casefold()).split())


def _names(text: str, tag: str) -> bool:
    """Return whether a padded, normalised caption names a tag (also in plural)."""
    return any(f" {tag}{ending} " in text for ending in ("", "s", "es"))


def _parse_tags(value: Any) -> set[str]:
    """Parse one tag cell: a list, an array, a list literal, or a comma-separated string."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return set()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text.strip("[]").split(",")
        else:
            value = re.split(r"[,;|]", text)
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return {tag for item in value if (tag := _words(str(item)))}
    return {_words(str(value))} - {""}


def _histogram_png(counts: Counter[int]) -> bytes:
    figure, axes = new_figure(6.4, 2.6)
    if counts:
        values = np.array(sorted(counts), dtype=np.int64)
        weights = np.array([counts[v] for v in values.tolist()], dtype=np.int64)
        bins = min(50, int(values.max() - values.min()) + 1)
        axes.hist(values, bins=bins, weights=weights, color="#3b6ea5")
    axes.set_xlabel("words per caption")
    axes.set_ylabel("captions")
    return to_png(figure)


def _bars_png(frame: pd.DataFrame) -> bytes:
    figure, axes = new_figure(6.4, 3.0)
    axes.barh(frame["name"], frame["share"].fillna(0.0), color="#3b6ea5")
    axes.set_xlim(0, 1)
    axes.set_xlabel("share of captions")
    axes.invert_yaxis()
    return to_png(figure)
