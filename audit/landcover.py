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

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from spacy.attrs import IDX, IS_PUNCT, LENGTH, LOWER, ORTH
from spacy.lookups import Table
from spacy.pipeline import Sentencizer
from spacy.tokens import Doc, Token

from eoaudit.errors import InputError
from eoaudit.nlp import english_pipeline

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


@dataclass(frozen=True)
class Mention:
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


_KEYS: dict[tuple[int, int], tuple[str, str]] = {}
"""(orth hash, lower hash) to (lower form, matching key), filled as words are seen."""


def _token_keys(doc: Doc) -> tuple[list[str], list[str]]:
    """Return the lower-case forms and matching keys of a doc's tokens.

    Same result as `token.lower_` and :func:`lemma_key` with the lookup
    lemmatizer, but computed from the word forms in the doc's attribute array.
    Creating a Token object per word dominated the run time, and this way the
    pipeline's lemmatizer need not run.
    """
    strings = doc.vocab.strings
    lowers: list[str] = []
    keys: list[str] = []
    for orth_hash, lower_hash in doc.to_array([ORTH, LOWER]).tolist():
        entry = _KEYS.get((orth_hash, lower_hash))
        if entry is None:
            orth = strings[orth_hash]
            lower = strings[lower_hash]
            table = _lemma_table()
            entry = (lower, table.get(lower, table.get(orth, orth).lower() or lower))
            _KEYS[(orth_hash, lower_hash)] = entry
        lowers.append(entry[0])
        keys.append(entry[1])
    return lowers, keys


def _sentence_bounds(doc: Doc) -> list[tuple[int, int]]:
    """Return `(first token, end token)` of each sentence, by spaCy's sentencizer rule.

    A sentence starts at the first token after a sentence-final character
    (`Sentencizer.default_punct_chars`) that is neither punctuation nor such a
    character. Computing it here lets the pipeline skip the sentencizer.
    """
    strings = doc.vocab.strings
    starts = [0]
    seen_final = False
    for position, (orth_hash, is_punct) in enumerate(doc.to_array([ORTH, IS_PUNCT]).tolist()):
        is_final = strings[orth_hash] in _SENTENCE_FINAL
        if seen_final and not is_punct and not is_final:
            starts.append(position)
            seen_final = False
        elif is_final:
            seen_final = True
    ends = [*starts[1:], len(doc)]
    return [(first, end) for first, end in zip(starts, ends, strict=True) if end > first]


_SENTENCE_FINAL = frozenset(Sentencizer.default_punct_chars)


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
        self._entries: dict[str, list[tuple[tuple[str, ...], int | None]]] = {}
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
        """Return the mentions of one caption, in caption order.

        Args:
            doc: The caption tokenized by :func:`eoaudit.nlp.english_pipeline`;
                the lemmatizer and sentencizer need not have run.
            text: The caption the doc was made from, if at hand; it saves
                rebuilding the text from the tokens.
        """
        lowers, keys = _token_keys(doc)
        spans = self._match(lowers, keys)
        if not spans:
            return []
        sentences = _sentence_bounds(doc)
        negated = _negated_tokens(sentences, keys, spans)
        hedged = _hedged_tokens(sentences, keys)
        offsets = doc.to_array([IDX, LENGTH]).tolist()
        caption = doc.text if text is None else text
        mentions = []
        for first, last, class_value in spans:
            start = offsets[first][0]
            end = offsets[last - 1][0] + offsets[last - 1][1]
            mentions.append(
                Mention(
                    start=start,
                    end=end,
                    text=caption[start:end],
                    class_value=class_value,
                    negated=first in negated,
                    hedged=first in hedged,
                )
            )
        return mentions

    def _match(self, lowers: list[str], keys: list[str]) -> list[tuple[int, int, int | None]]:
        """Return `(first token, end token, class value)` of the longest non-overlapping matches.

        A lexicon word matches a token when it equals the token's lower-case
        form or its lemma. Both are needed because the lookup table is not
        idempotent: "buildings" becomes "building", but "building" becomes
        "build".
        """
        spans = []
        position = 0
        while position < len(keys):
            found = None
            lower, lemma = lowers[position], keys[position]
            if lower not in self._entries and lemma not in self._entries:
                position += 1
                continue
            candidates = self._entries.get(lower, []) + self._entries.get(lemma, [])
            for key, class_value in sorted(candidates, key=lambda entry: -len(entry[0])):
                end = position + len(key)
                if end <= len(keys) and all(
                    word in (lowers[index], keys[index])
                    for index, word in zip(range(position, end), key, strict=True)
                ):
                    found = (position, end, class_value)
                    break
            if found is None:
                position += 1
                continue
            spans.append(found)
            position = found[1]
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
                key in ("not", "n't")
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
