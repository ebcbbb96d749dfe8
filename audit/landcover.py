"""Land-cover mentions in captions, found with the lexicon in `rules/landcover.yaml`.

A mention is a span of a caption whose lemmas match a lexicon term or phrase of
an ESA WorldCover class (or of the `unverifiable` list). Matching is on
lower-case lemmas from the lookup lemmatizer of :func:`eoaudit.nlp.english_pipeline`,
so "Trees", "trees" and "tree" all match the term `tree`, and the phrase
"water body" matches "water bodies". When spans overlap, the longest wins, so
"sea ice" is snow and ice (70), not water (80), and "sports field" is
unverifiable, not cropland.

The shared pipeline has no parser, so negation and hedging are decided by the
token rules below, inside one sentence:

Negation (pre-cue): a cue such as "no", "not", "without", "absence of",
"lack of", "free of" or "devoid of" negates the first mention that follows it
within three tokens ("no clearly visible water bodies"). After that mention
the scope continues only over a list link ("," "and" "or" "nor") followed by
another mention within two tokens, so "no trees, shrubs or buildings" negates
all three. A clause break (full stop, ";", ":", "but", "while" ...), a verb
such as "is" or "cover", or a preposition such as "near" or "with" ends the
scope, so "no roads lead to the forest" leaves the forest claimed.

Negation (post-cue): "absent", "missing", "lacking", or "not"/"n't" followed
within two tokens by "visible", "present", "seen", "evident", "apparent",
"observed", "found" or "there" negates the mentions between the start of its
clause and the cue ("water bodies are not visible").

Hedge: a hedge cue ("possibly", "perhaps", "likely", "may", "might", "could",
"appear", "seem", "suggest", "resemble", ...) marks every mention of its
clause as hedged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from spacy.attrs import IDX, IS_PUNCT, LENGTH, ORTH
from spacy.lookups import Table
from spacy.tokens import Doc, Token

from eoaudit.errors import InputError
from eoaudit.nlp import english_pipeline
from eoaudit.textstats import period_orths, sentence_starts

NEGATION_CUES: tuple[tuple[str, ...], ...] = (
    ("no",),
    ("not",),
    ("n't",),
    ("without",),
    ("none",),
    ("nor",),
    ("neither",),
    ("never",),
    ("absence", "of"),
    ("lack", "of"),
    ("free", "of"),
    ("devoid", "of"),
    ("void", "of"),
    ("rather", "than"),
    ("instead", "of"),
)
"""Token sequences (lower-case lemmas) that negate the mentions after them."""

POST_NEGATION_CUES = frozenset({"absent", "missing", "lacking", "lack"})
"""Words that negate the mentions before them in the same clause."""

POST_NEGATION_AFTER_NOT = frozenset(
    {
        "visible",
        "present",
        "see",
        "seen",
        "evident",
        "apparent",
        "observe",
        "observed",
        "find",
        "found",
        "there",
        "detect",
        "detected",
        "discernible",
        "noticeable",
    }
)
"""Words that, within two tokens after "not", make "not" negate what precedes it."""

HEDGE_CUES: tuple[tuple[str, ...], ...] = (
    ("possibly",),
    ("possible",),
    ("perhaps",),
    ("maybe",),
    ("probably",),
    ("probable",),
    ("likely",),
    ("unlikely",),
    ("apparently",),
    ("seemingly",),
    ("presumably",),
    ("potentially",),
    ("potential",),
    ("may",),
    ("might",),
    ("could",),
    ("appear",),
    ("seem",),
    ("suggest",),
    ("resemble",),
    ("suspect",),
    ("uncertain",),
    ("unclear",),
    ("what", "look", "like"),
    ("look", "like"),
)
"""Token sequences (lower-case lemmas) that mark the mentions of their clause as hedged."""

CLAUSE_BREAKS = frozenset(
    {
        ".",
        ";",
        ":",
        "!",
        "?",
        "but",
        "however",
        "although",
        "though",
        "while",
        "whereas",
        "yet",
        "except",
        "whilst",
        "which",
        "where",
    }
)
"""Tokens that end a clause, and with it a negation or hedge scope."""

LIST_LINKS = frozenset({",", "and", "or", "nor", "&", "/"})
"""Tokens after a negated mention that continue the scope when another mention follows."""

VERBS_OF_BEING = frozenset({"be", "is", "are", "was", "were", "cover", "dominate", "surround"})
"""Verbs that end a negation scope before or between its mentions."""

MAX_SCOPE_GAP = 3
"""Tokens allowed between a negation cue and the first mention in its scope."""

MAX_LIST_GAP = 2
"""Tokens allowed between a list link and the next mention of a negation scope."""

SCOPE_STOPS = (
    CLAUSE_BREAKS
    | VERBS_OF_BEING
    | frozenset(
        {
            "next",
            "near",
            "to",
            "in",
            "on",
            "at",
            "along",
            "around",
            "beside",
            "by",
            "from",
            "across",
            "through",
            "between",
            "with",
            "surround",
            "within",
            "behind",
            "there",
        }
    )
)
"""Tokens that end a negation scope before a mention is reached."""


class Mention(NamedTuple):
    """A span of a caption matched to a lexicon entry.

    Attributes:
        start: Character offset of the first character in the caption.
        end: Character offset after the last character.
        text: The caption text of the span.
        class_value: WorldCover class value (10 ... 100), or None for an entry
            of the lexicon's `unverifiable` list.
        negated: Whether a negation cue has the mention in its scope.
        hedged: Whether a hedge cue is in the mention's clause.
    """

    start: int
    end: int
    text: str
    class_value: int | None
    negated: bool
    hedged: bool


def lemma_key(token: Token) -> str:
    """Return the lower-case lemma used for matching a token.

    The lookup lemmatizer is case-sensitive ("Trees" stays "Trees"), so the
    lower-case form is looked up first.
    """
    lower = token.lower_
    return _lemma_table().get(lower, token.lemma_.lower() or lower)


Entry = tuple[tuple[str, ...], int | None]
"""A lexicon term or phrase as lower-case words, and its class value (None: unverifiable)."""

_NEGATION = 1
_HEDGE = 2


@dataclass(frozen=True)
class _Word:
    """What the matcher needs to know of one word form (one ORTH id).

    Attributes:
        lower: The lower-case form.
        key: The matching key, as :func:`lemma_key` gives it.
        entries: Lexicon entries whose first word is `lower` or `key`,
            longest first.
        cues: `_NEGATION` when the key can start or be a negation cue,
            `_HEDGE` when it can start a hedge cue.
    """

    lower: str
    key: str
    entries: tuple[Entry, ...]
    cues: int


@lru_cache(maxsize=1)
def _lemma_table() -> Table:
    # spaCy's Table hashes string keys on lookup, so it is kept as is (its
    # items() yields hashes, not words).
    lemmatizer = english_pipeline().get_pipe("lemmatizer")
    return lemmatizer.lookups.get_table("lemma_lookup")


class LandcoverMatcher:
    """Finds land-cover mentions in captions.

    Args:
        lexicon: The parsed `rules/landcover.yaml`: `classes` maps a WorldCover
            class value to `{name, terms, phrases}`, and `unverifiable` has
            `{terms, phrases}`.

    Raises:
        InputError: When the lexicon does not have that layout.
    """

    def __init__(self, lexicon: dict[str, Any]) -> None:
        self.class_names = _class_names(lexicon)
        self._entries: dict[str, list[Entry]] = {}
        self._words: dict[int, _Word] = {}
        tokenizer = english_pipeline().tokenizer
        for class_value, words in _lexicon_words(lexicon):
            for word in words:
                key = tuple(token.lower_ for token in tokenizer(word.strip()))
                if key:
                    self._add(key, class_value)

    def _add(self, key: tuple[str, ...], class_value: int | None) -> None:
        entries = self._entries.setdefault(key[0], [])
        for existing, existing_class in entries:
            if existing == key and existing_class != class_value:
                raise InputError(
                    f"landcover lexicon: {' '.join(key)!r} is listed under both "
                    f"{_describe(existing_class)} and {_describe(class_value)}; keep one"
                )
        if (key, class_value) not in entries:
            entries.append((key, class_value))

    def find_mentions(self, doc: Doc, text: str | None = None) -> list[Mention]:
        """Return the mentions of one caption, in caption order; see :meth:`find_mentions_many`."""
        return self.find_mentions_many([doc], None if text is None else [text])[0]

    def find_mentions_many(
        self, docs: Sequence[Doc], texts: Sequence[str] | None = None
    ) -> list[list[Mention]]:
        """Return the mentions of each caption, in caption order.

        The docs are handled together. Their token attributes are read into
        one array and each distinct word form is looked up once. Python then
        visits only the tokens that can start a lexicon entry, and the
        sentences that contain both a mention and a negation or hedge cue.

        Args:
            docs: Captions tokenized by :func:`eoaudit.nlp.english_pipeline`;
                the lemmatizer and sentencizer need not have run.
            texts: The captions the docs were made from, if at hand; they save
                rebuilding each text from its tokens.
        """
        tables = [doc.to_array([ORTH, IS_PUNCT, IDX, LENGTH]) for doc in docs]
        offsets = np.zeros(len(docs) + 1, np.int64)
        np.cumsum([len(table) for table in tables], out=offsets[1:])
        found: list[list[Mention]] = [[] for _ in docs]
        if offsets[-1] == 0:
            return found
        table = np.concatenate(tables).astype(np.uint64)
        codes, forms = pd.factorize(table[:, 0])
        words = [self._word(orth, docs[0].vocab.strings) for orth in forms.tolist()]
        entry_forms = np.array([bool(word.entries) for word in words])
        cue_forms = np.array([word.cues for word in words], np.uint8)
        code_list = codes.tolist()

        spans = self._match(np.flatnonzero(entry_forms[codes]), offsets, code_list, words)
        if not spans:
            return found
        first_list, last_list, values, doc_list = (
            list(column) for column in zip(*spans, strict=True)
        )
        firsts, lasts = np.array(first_list), np.array(last_list)
        starts = sentence_starts(table[:, 0], table[:, 1], period_orths(), offsets)
        sentence_of_token = np.cumsum(starts) - 1
        sentence_bounds = np.r_[np.flatnonzero(starts), offsets[-1]].tolist()
        cues = cue_forms[codes]
        cue_sentences = {
            cue: set(sentence_of_token[np.flatnonzero(cues & cue)].tolist())
            for cue in (_NEGATION, _HEDGE)
        }
        sentence_list = sentence_of_token[firsts].tolist()
        character_starts = table[firsts, 2].astype(np.int64).tolist()
        character_ends = (table[lasts - 1, 2] + table[lasts - 1, 3]).astype(np.int64).tolist()
        doc_of_span = np.array(doc_list)
        breaks = np.flatnonzero(np.r_[True, doc_of_span[1:] != doc_of_span[:-1], True]).tolist()

        for low, high in pairwise(breaks):
            index = doc_list[low]
            origin = int(offsets[index])
            local = [first - origin for first in first_list[low:high]]
            sentences = set(sentence_list[low:high])
            scan = {
                cue: [
                    (sentence_bounds[sentence] - origin, sentence_bounds[sentence + 1] - origin)
                    for sentence in sorted(sentences & cue_sentences[cue])
                ]
                for cue in (_NEGATION, _HEDGE)
            }
            negated = hedged = [False] * (high - low)
            if scan[_NEGATION] or scan[_HEDGE]:
                end = int(offsets[index + 1])
                keys = [words[code].key for code in code_list[origin:end]]
                ends = [last - origin for last in last_list[low:high]]
                doc_spans = list(zip(local, ends, values[low:high], strict=True))
                negated_set = _negated_tokens(scan[_NEGATION], keys, doc_spans)
                hedged_set = _hedged_tokens(scan[_HEDGE], keys)
                negated = [first in negated_set for first in local]
                hedged = [first in hedged_set for first in local]
            caption = docs[index].text if texts is None else texts[index]
            span_starts = character_starts[low:high]
            span_ends = character_ends[low:high]
            found[index] = list(
                map(
                    Mention,
                    span_starts,
                    span_ends,
                    [
                        caption[start:stop]
                        for start, stop in zip(span_starts, span_ends, strict=True)
                    ],
                    values[low:high],
                    negated,
                    hedged,
                )
            )
        return found

    def _word(self, orth: int, strings: Any) -> _Word:
        """Return the record of one word form, computing it on first sight."""
        word = self._words.get(orth)
        if word is None:
            form = strings[orth]
            lower = form.lower()
            table = _lemma_table()
            key = table.get(lower, table.get(form, form).lower() or lower)
            entries = self._entries.get(lower, []) + self._entries.get(key, [])
            cues = 0
            if key in _NEGATION_FIRST_WORDS or key in POST_NEGATION_CUES or key in _NOT_WORDS:
                cues |= _NEGATION
            if key in _HEDGE_FIRST_WORDS:
                cues |= _HEDGE
            word = _Word(lower, key, tuple(sorted(entries, key=lambda e: -len(e[0]))), cues)
            self._words[orth] = word
        return word

    @staticmethod
    def _match(
        candidates: np.ndarray, offsets: np.ndarray, codes: list[int], words: list[_Word]
    ) -> list[tuple[int, int, int | None, int]]:
        """Return `(first token, end token, class value, doc)` of the longest matches.

        Matches do not overlap; token positions are into the concatenated
        tokens of all docs. A lexicon word matches a token when it equals the
        token's lower-case form or its lemma. Both are needed because the
        lookup table is not idempotent: "buildings" becomes "building", but
        "building" becomes "build".
        """
        spans = []
        doc_of = np.searchsorted(offsets, candidates, side="right") - 1
        ends = offsets[1:].tolist()
        covered = 0
        for position, index in zip(candidates.tolist(), doc_of.tolist(), strict=True):
            if position < covered:
                continue
            for key, class_value in words[codes[position]].entries:
                stop = position + len(key)
                if stop > ends[index]:
                    continue
                at = position
                for part in key[1:]:
                    at += 1
                    word = words[codes[at]]
                    if part != word.lower and part != word.key:
                        break
                else:
                    spans.append((position, stop, class_value, index))
                    covered = stop
                    break
        return spans


def _describe(class_value: int | None) -> str:
    return "unverifiable" if class_value is None else f"class {class_value}"


def _class_names(lexicon: dict[str, Any]) -> dict[int, str]:
    if not isinstance(lexicon, dict) or not isinstance(lexicon.get("classes"), dict):
        raise InputError(
            "landcover lexicon: expected a mapping with a `classes` mapping of WorldCover "
            "class values to {name, terms, phrases}; see the packaged rules/landcover.yaml"
        )
    names = {}
    for value, entry in lexicon["classes"].items():
        try:
            class_value = int(value)
        except (TypeError, ValueError):
            raise InputError(
                f"landcover lexicon: class key {value!r} is not a WorldCover class value "
                "(10, 20, ... 100)"
            ) from None
        if not isinstance(entry, dict) or "name" not in entry:
            raise InputError(f"landcover lexicon: class {class_value} needs a `name`")
        names[class_value] = str(entry["name"])
    return names


def _lexicon_words(lexicon: dict[str, Any]) -> list[tuple[int | None, list[str]]]:
    groups: list[tuple[int | None, Any]] = [
        (int(value), entry) for value, entry in lexicon["classes"].items()
    ]
    groups.append((None, lexicon.get("unverifiable") or {}))
    words: list[tuple[int | None, list[str]]] = []
    for class_value, entry in groups:
        for field in ("terms", "phrases"):
            listed = entry.get(field) or []
            if not isinstance(listed, list) or not all(isinstance(w, str) for w in listed):
                raise InputError(
                    f"landcover lexicon: `{field}` of {_describe(class_value)} must be a "
                    f"list of strings, got {listed!r}"
                )
            words.append((class_value, listed))
    return words


_NEGATION_FIRST_WORDS = frozenset(cue[0] for cue in NEGATION_CUES)
_NOT_WORDS = frozenset({"not", "n't"})
_HEDGE_FIRST_WORDS = frozenset(cue[0] for cue in HEDGE_CUES)


def _sequence_at(keys: list[str], position: int, cues: tuple[tuple[str, ...], ...]) -> int:
    """Return the length of the cue starting at `position`, or 0."""
    key = keys[position]
    for cue in cues:
        if cue[0] == key and tuple(keys[position : position + len(cue)]) == cue:
            return len(cue)
    return 0


def _negated_tokens(
    sentences: list[tuple[int, int]], keys: list[str], spans: list[tuple[int, int, int | None]]
) -> set[int]:
    """Return the first-token positions of the mentions in a negation scope."""
    starts = {first: last for first, last, _ in spans}
    negated: set[int] = set()
    for sentence_start, sentence_end in sentences:
        position = sentence_start
        clause_start = sentence_start
        while position < sentence_end:
            key = keys[position]
            if key in CLAUSE_BREAKS:
                clause_start = position + 1
                position += 1
                continue

            # Post-cue: negate the mentions between the clause start and the cue.
            if key in POST_NEGATION_CUES or (
                key in _NOT_WORDS
                and any(k in POST_NEGATION_AFTER_NOT for k in keys[position + 1 : position + 3])
            ):
                negated.update(first for first in starts if clause_start <= first < position)

            length = 0
            if key in _NEGATION_FIRST_WORDS:
                length = _sequence_at(keys, position, NEGATION_CUES)
            if length == 0:
                position += 1
                continue
            position = _negation_scope(keys, position + length, sentence_end, starts, negated)
    return negated


def _negation_scope(
    keys: list[str], position: int, end: int, starts: dict[int, int], negated: set[int]
) -> int:
    """Add the mentions in the scope opening at `position` to `negated`; return the scope end.

    The first mention must begin within :data:`MAX_SCOPE_GAP` tokens of the cue
    ("no clearly visible water bodies"). After a mention the scope continues
    only over a list link followed by another mention within
    :data:`MAX_LIST_GAP` tokens ("no trees or dense shrubs").
    """
    gap_end = min(end, position + MAX_SCOPE_GAP + 1)
    while position < gap_end:
        if keys[position] in SCOPE_STOPS:
            return position
        if position in starts:
            break
        position += 1
    else:
        return position

    while position in starts:
        negated.add(position)
        position = starts[position]
        if position >= end or keys[position] not in LIST_LINKS:
            return position
        following = position + 1
        limit = min(end, following + MAX_LIST_GAP + 1)
        while following < limit and following not in starts:
            if keys[following] in SCOPE_STOPS:
                return following
            following += 1
        if following not in starts:
            return position
        position = following
    return position


def _hedged_tokens(sentences: list[tuple[int, int]], keys: list[str]) -> set[int]:
    """Return the token positions that lie in a clause with a hedge cue."""
    hedged: set[int] = set()
    for sentence_start, sentence_end in sentences:
        clause_start = sentence_start
        has_hedge = False
        for position in range(sentence_start, sentence_end + 1):
            at_end = position == sentence_end
            if at_end or keys[position] in CLAUSE_BREAKS:
                if has_hedge:
                    hedged.update(range(clause_start, position))
                clause_start = position + 1
                has_hedge = False
                continue
            if keys[position] in _HEDGE_FIRST_WORDS and _sequence_at(keys, position, HEDGE_CUES):
                has_hedge = True
    return hedged


__all__ = ["LandcoverMatcher", "Mention", "lemma_key"]
