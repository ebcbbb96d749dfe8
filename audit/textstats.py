"""Mergeable text statistics: lengths, vocabulary, MTLD, distinct-n, openings.

Everything here works on spaCy token ids: the `LOWER` attribute of a token is
the 64-bit MurmurHash of its lower-case text, identical in every process, so
states built on different workers merge without a shared vocabulary. N-grams
are hashed to 64-bit integers in numpy (:func:`ngram_hashes`), never kept as
strings.

A "word" is a spaCy token that is neither punctuation nor whitespace; token
counts, vocabulary, MTLD and n-grams are over words. N-grams never cross the
boundary between two texts.

Cost of a :class:`TextStats` state: three integer histograms (one entry per
distinct length), a counter of word types (16 bytes per type), one distinct
counter per n = 2..4 (8 bytes per distinct n-gram up to `exact_cap`, then a
fixed 64 KiB HyperLogLog sketch), and counters of opening and frame strings.
At a million 100-word captions this stays in the low hundreds of megabytes,
bounded by `exact_cap`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from spacy.attrs import IS_PUNCT, IS_SPACE, IS_STOP, LOWER, ORTH
from spacy.tokens import Doc

from eoaudit.nlp import english_pipeline

MTLD_THRESHOLD = 0.72
"""TTR at which MTLD closes a segment (McCarthy and Jarvis 2010; lexicalrichness default)."""

FIXED_POINT = 10**9
"""Scale of the integer sums that keep float totals exact under any chunking."""

HLL_PRECISION = 16
"""HyperLogLog register index bits: 65,536 registers, relative error about 0.4 %."""

MAX_N = 4
"""Maximum n-gram length counted by the distinct-n measures."""

_NGRAM_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_PUNCTUATION = re.compile(r"[^\w\s]+")
_WHITESPACE = re.compile(r"\s+")
_ASCII_PUNCTUATION = {code: None for code in range(128) if _PUNCTUATION.fullmatch(chr(code))}
_ATTRIBUTES = [LOWER, IS_PUNCT, IS_SPACE, IS_STOP, ORTH]


def fixed_point(value: float) -> int:
    """Return `value` as an integer multiple of 1/:data:`FIXED_POINT`, for exact sums."""
    return round(value * FIXED_POINT)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Return the sorted distinct values of an array.

    Same result as np.unique(values). With numpy 2.4.6, np.unique took 5.7 s
    and this 0.35 s on a million random 64-bit values (2-core machine).
    """
    ordered = np.sort(values)
    if len(ordered) == 0:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def mix64(values: np.ndarray) -> np.ndarray:
    """Scramble uint64 values with the splitmix64 finalizer (a bijection on 64 bits)."""
    z = values.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def normalise(text: str) -> str:
    """Return the form in which two texts count as exact duplicates.

    Case is folded, punctuation (anything not a word character or whitespace)
    is removed and whitespace runs become one space, so "A lake ." and
    "a lake" are the same.
    """
    folded = text.casefold()
    if folded.isascii():  # same result as the expressions below, in about a quarter of the time
        return " ".join(folded.translate(_ASCII_PUNCTUATION).split())
    return _WHITESPACE.sub(" ", _PUNCTUATION.sub("", folded)).strip()


def text_key(normalised: str) -> int:
    """Return a stable 64-bit key of a normalised text; 0 is reserved for the empty text."""
    if not normalised:
        return 0
    digest = hashlib.blake2b(normalised.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


def mtld_many(
    ids: np.ndarray, offsets: np.ndarray, threshold: float = MTLD_THRESHOLD
) -> np.ndarray:
    """Compute the measure of textual lexical diversity of many texts at once.

    MTLD (McCarthy and Jarvis 2010) is the mean length of the segments over
    which the type-token ratio stays above `threshold`, averaged over a
    forward and a backward pass, with a partial segment at the end. This
    follows `LexicalRichness.mtld` of the lexicalrichness package (0.5.1),
    including its rule for a text whose TTR never falls to the threshold.

    All texts are read in step, one word position at a time, so the Python
    loop runs once per position of the longest text, not once per word. A
    word is new in the current segment when the text's previous occurrence
    of it lies before the segment start. The arithmetic is that of a
    word-by-word loop, so the values are the same to the bit.

    Args:
        ids: Word ids of all texts, concatenated.
        offsets: Start of each text in `ids`, plus the total.
        threshold: TTR at which a segment ends.

    Returns:
        MTLD in words per text; NaN for a text without words.
    """
    lengths = np.diff(offsets).astype(np.int64)
    owners = np.repeat(np.arange(len(lengths)), lengths)
    # Number each (text, word) pair, so that one array can record where each was last seen.
    first, pairs, _ = _unique_pairs(owners, pd.factorize(ids)[0])
    distinct = np.bincount(owners[first], minlength=len(lengths))
    with np.errstate(invalid="ignore", divide="ignore"):
        whole_ttr = distinct / lengths
        forward = _mtld_pass(pairs, offsets, lengths, whole_ttr, threshold, backward=False)
        backward = _mtld_pass(pairs, offsets, lengths, whole_ttr, threshold, backward=True)
    return np.where(lengths > 0, (forward + backward) / 2, np.nan)


def _mtld_pass(
    pairs: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    whole_ttr: np.ndarray,
    threshold: float,
    backward: bool,
) -> np.ndarray:
    """Return `length / factors` of one MTLD pass over every text."""
    texts = len(lengths)
    count = np.zeros(texts, np.int64)
    terms = np.zeros(texts, np.int64)
    segment_start = np.zeros(texts, np.int64)
    factors = np.zeros(texts)
    ttr = np.ones(texts)
    last_seen = np.full(int(pairs.max(initial=-1)) + 1, -1, np.int64)
    by_length = np.argsort(-lengths, kind="stable")
    descending = -lengths[by_length]

    for step in range(int(lengths.max(initial=0))):
        active = by_length[: int(np.searchsorted(descending, -step, side="left"))]
        position = offsets[active] + (lengths[active] - 1 - step if backward else step)
        pair = pairs[position]
        new = last_seen[pair] < segment_start[active]
        last_seen[pair] = step
        count[active] += 1
        terms[active] += new
        ttr[active] = terms[active] / count[active]
        ends = active[ttr[active] <= threshold]
        count[ends] = 0
        terms[ends] = 0
        factors[ends] += 1
        segment_start[ends] = step + 1

    open_segment = count > 0
    factors[open_segment] += (1 - ttr[open_segment]) / (1 - threshold)
    unfinished = factors == 0
    factors[unfinished] = np.where(
        whole_ttr[unfinished] == 1, 1.0, (1 - whole_ttr[unfinished]) / (1 - threshold)
    )
    return lengths / factors


def _first_occurrences(numbers: np.ndarray) -> np.ndarray:
    """Return the positions where each number of a pd.factorize result first occurs.

    pd.factorize numbers values in order of first occurrence, so a value is
    new exactly where its number exceeds every number before it.
    """
    new = np.ones(len(numbers), bool)
    if len(numbers) > 1:
        new[1:] = numbers[1:] > np.maximum.accumulate(numbers)[:-1]
    return np.flatnonzero(new)


def ngram_hashes(ids: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash the word n-grams of concatenated texts.

    Args:
        ids: uint64 word ids of all texts, one after the other.
        offsets: int64 start of each text in `ids`, plus the total length.
        n: N-gram length, at least 1.

    Returns:
        The uint64 hash of every n-gram that lies inside one text, and the
        index of the text it belongs to.
    """
    owners = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    if n == 1:
        return mix64(ids), owners
    count = len(ids) - n + 1
    if count <= 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    valid = owners[:count] == owners[n - 1 :]
    hashes = ids[:count].copy()
    for k in range(1, n):
        hashes = hashes * _NGRAM_MULTIPLIER + ids[k : k + count]
        hashes = mix64(hashes)
    return hashes[valid], owners[:count][valid]


@dataclass
class IntDistribution:
    """Exact distribution of a non-negative integer measure: count per value."""

    counts: Counter[int] = field(default_factory=Counter)

    def add_values(self, values: np.ndarray) -> None:
        """Count each value of an integer array."""
        unique, counts = np.unique(values, return_counts=True)
        self.counts.update(dict(zip(unique.tolist(), counts.tolist(), strict=True)))

    def merge(self, other: IntDistribution) -> IntDistribution:
        """Return the distribution of both sets of values."""
        return IntDistribution(self.counts + other.counts)

    @property
    def total(self) -> int:
        """Number of values counted."""
        return sum(self.counts.values())

    def summary(self) -> dict[str, float | None]:
        """Return min, mean, median, p95 and max; quantiles use the inverted CDF (nearest rank)."""
        total = self.total
        if total == 0:
            return {"min": None, "mean": None, "median": None, "p95": None, "max": None}
        values = np.array(sorted(self.counts), dtype=np.int64)
        weights = np.array([self.counts[v] for v in values.tolist()], dtype=np.int64)
        cumulative = np.cumsum(weights)

        def quantile(share: float) -> int:
            rank = max(1, math.ceil(share * total))
            return int(values[np.searchsorted(cumulative, rank)])

        return {
            "min": int(values[0]),
            "mean": float((values * weights).sum() / total),
            "median": quantile(0.5),
            "p95": quantile(0.95),
            "max": int(values[-1]),
        }


@dataclass
class HashCounter:
    """Occurrences of 64-bit keys, as sorted unique keys and their counts."""

    keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @classmethod
    def of(cls, values: np.ndarray) -> HashCounter:
        """Count the keys of one array."""
        keys, counts = np.unique(values.astype(np.uint64), return_counts=True)
        return cls(keys, counts.astype(np.int64))

    def merge(self, other: HashCounter) -> HashCounter:
        """Return the counts of both.

        The smaller counter's keys are inserted into the larger one's sorted
        keys, so that merging a chunk into a million keys costs a copy, not a
        sort (78 ms per merge at a million keys with np.unique).
        """
        large, small = (self, other) if len(self.keys) >= len(other.keys) else (other, self)
        positions, found = _locate(large.keys, small.keys)
        counts = large.counts.copy()
        counts[positions[found]] += small.counts[found]
        new = ~found
        return HashCounter(
            np.insert(large.keys, positions[new], small.keys[new]),
            np.insert(counts, positions[new], small.counts[new]),
        )


def _locate(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return where each value sits or would be inserted in sorted `keys`, and whether found."""
    positions = np.searchsorted(keys, values)
    found = positions < len(keys)
    found[found] = keys[positions[found]] == values[found]
    return positions, found


def sorted_union(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the union of two sorted arrays of distinct values, sorted.

    The smaller array is inserted into the larger, which costs a copy of the
    larger one rather than a sort of both.
    """
    large, small = (first, second) if len(first) >= len(second) else (second, first)
    positions, found = _locate(large, small)
    return np.insert(large, positions[~found], small[~found])


@dataclass
class DistinctCounter:
    """Number of distinct 64-bit hashes: exact up to `exact_cap`, then HyperLogLog.

    While the union has at most `exact_cap` hashes, they are kept as a sorted
    array and the count is exact. Past the cap the set becomes a HyperLogLog
    sketch (:data:`HLL_PRECISION` bits), whose registers depend only on the
    set of hashes, so the estimate does not depend on how the data was
    chunked either.
    """

    exact_cap: int
    hashes: np.ndarray | None = field(default_factory=lambda: np.empty(0, np.uint64))
    registers: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        """Add hashes (already mixed: uniformly distributed 64-bit values)."""
        self._absorb(DistinctCounter(self.exact_cap, sorted_unique(values.astype(np.uint64))))

    def merge(self, other: DistinctCounter) -> DistinctCounter:
        """Return the counter of the union."""
        merged = DistinctCounter(self.exact_cap, self.hashes, self.registers)
        merged._absorb(other)
        return merged

    def _absorb(self, other: DistinctCounter) -> None:
        if self.hashes is not None and other.hashes is not None:
            union = sorted_union(self.hashes, other.hashes)
            if len(union) <= self.exact_cap:
                self.hashes = union
                return
            self.hashes, self.registers = None, _registers(union)
            return
        mine = self.registers if self.hashes is None else _registers(self.hashes)
        theirs = other.registers if other.hashes is None else _registers(other.hashes)
        assert mine is not None and theirs is not None
        self.hashes, self.registers = None, np.maximum(mine, theirs)

    @property
    def exact(self) -> bool:
        """Whether :meth:`count` is exact rather than a HyperLogLog estimate."""
        return self.hashes is not None

    def count(self) -> float:
        """Return the number of distinct hashes (exact, or estimated past the cap)."""
        if self.hashes is not None:
            return float(len(self.hashes))
        assert self.registers is not None
        return _hll_estimate(self.registers)


def _registers(hashes: np.ndarray) -> np.ndarray:
    """Build HyperLogLog registers: index from the top bits, rank from the rest."""
    width = 64 - HLL_PRECISION
    index = (hashes >> np.uint64(width)).astype(np.int64)
    rest = (hashes & np.uint64((1 << width) - 1)).astype(np.float64)  # exact below 2**53
    bit_length = np.frexp(rest)[1]
    rank = (width - bit_length + 1).astype(np.uint8)
    registers = np.zeros(1 << HLL_PRECISION, np.uint8)
    np.maximum.at(registers, index, rank)
    return registers


def _hll_estimate(registers: np.ndarray) -> float:
    m = len(registers)
    alpha = 0.7213 / (1 + 1.079 / m)
    raw = alpha * m * m / float(np.sum(np.exp2(-registers.astype(np.float64))))
    zeros = int(np.count_nonzero(registers == 0))
    if raw <= 2.5 * m and zeros:
        return m * math.log(m / zeros)
    return raw


@dataclass
class TokenizedTexts:
    """Word ids and per-text facts of a list of texts, as plain arrays.

    Attributes:
        ids: uint64 LOWER ids of the words of all texts, concatenated.
        offsets: int64 start of each text in `ids`, plus the total.
        characters: Characters per text.
        sentences: Sentences per text (0 for an empty text).
        keys: uint64 :func:`text_key` of each normalised text.
        openings: First words of each text, lower case ("" when empty).
        frames: Frame of every sentence of every text, see :func:`sentence_frame`.
        mtld: MTLD per text; NaN for a text without words.
    """

    ids: np.ndarray
    offsets: np.ndarray
    characters: np.ndarray
    sentences: np.ndarray
    keys: np.ndarray
    openings: list[str]
    frames: list[str]
    mtld: np.ndarray

    @property
    def words(self) -> np.ndarray:
        """Words per text."""
        return np.diff(self.offsets)

    @classmethod
    def concat(cls, parts: Sequence[TokenizedTexts]) -> TokenizedTexts:
        """Join the results of consecutive batches of texts."""
        shifts = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        offsets = [np.zeros(1, np.int64)] + [
            p.offsets[1:] + shift for p, shift in zip(parts, shifts, strict=True)
        ]
        return cls(
            ids=np.concatenate([p.ids for p in parts]),
            offsets=np.concatenate(offsets),
            characters=np.concatenate([p.characters for p in parts]),
            sentences=np.concatenate([p.sentences for p in parts]),
            keys=np.concatenate([p.keys for p in parts]),
            openings=[o for p in parts for o in p.openings],
            frames=[f for p in parts for f in p.frames],
            mtld=np.concatenate([p.mtld for p in parts]),
        )

    def text_ids(self, index: int) -> np.ndarray:
        """Return the word ids of one text."""
        return self.ids[self.offsets[index] : self.offsets[index + 1]]


def sentence_starts(
    orth: np.ndarray, is_punct: np.ndarray, period_orths: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Mark the tokens that start a sentence, by the rule of spaCy's Sentencizer.

    The Sentencizer (spaCy 3.8, `Sentencizer.predict`) starts a sentence at
    the first token of a doc, and at every token that is neither punctuation
    nor sentence-final punctuation when sentence-final punctuation occurred
    since the previous such token of the doc. This computes the same marks
    with numpy for many docs at once, without running the component.

    Args:
        orth: ORTH ids of the tokens of all docs, concatenated.
        is_punct: IS_PUNCT flags of those tokens.
        period_orths: ORTH ids of the Sentencizer's `punct_chars`.
        offsets: Start of each doc in the token arrays, plus the total.
    """
    count = len(orth)
    starts = np.zeros(count, bool)
    if count == 0:
        return starts
    owners = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    # pandas' hash-table isin; np.isin sorts the whole array for a set this size.
    period = pd.Series(orth, copy=False).isin(period_orths).to_numpy()
    cumulative = np.cumsum(period)
    before_doc = np.concatenate([[0], cumulative])[offsets[:-1]]
    normal = np.flatnonzero((is_punct == 0) & ~period)
    periods_up_to = cumulative[normal]
    previous = np.empty_like(periods_up_to)
    if len(normal):
        previous[1:] = periods_up_to[:-1]
        first_of_doc = np.r_[True, owners[normal[1:]] != owners[normal[:-1]]]
        previous[first_of_doc] = before_doc[owners[normal[first_of_doc]]]
    starts[normal[periods_up_to > previous]] = True
    non_empty = offsets[:-1][np.diff(offsets) > 0]
    starts[non_empty] = True
    return starts


def tokenize_docs(
    texts: Sequence[str], docs: Iterable[Doc], opening_words: int, frame_words: int
) -> TokenizedTexts:
    """Extract word ids and per-text facts from spaCy docs of `texts`.

    Sentence boundaries come from :func:`sentence_starts`, so the docs need
    only the tokenizer.

    Args:
        texts: The texts, in the order of `docs`.
        docs: Their docs.
        opening_words: Words that make up an opening.
        frame_words: Words of a sentence kept in its frame.
    """
    strings = english_pipeline().vocab.strings
    tables = [doc.to_array(_ATTRIBUTES) for doc in docs]
    token_offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum([len(t) for t in tables], out=token_offsets[1:])
    table = (
        np.concatenate(tables).astype(np.uint64).reshape(-1, len(_ATTRIBUTES))
        if tables
        else np.empty((0, len(_ATTRIBUTES)), np.uint64)
    )
    owners = np.repeat(np.arange(len(texts)), np.diff(token_offsets))
    is_word = (table[:, 1] == 0) & (table[:, 2] == 0)
    ids = table[is_word, 0]
    word_owners = owners[is_word]
    lengths = np.bincount(word_owners, minlength=len(texts))
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])

    starts = sentence_starts(table[:, 4], table[:, 1], period_orths(), token_offsets)
    sentences = np.bincount(owners[starts], minlength=len(texts))
    sentences[lengths == 0] = 0

    # Sentence of each word, and its rank among the words of that sentence.
    sentence_of_word = (np.cumsum(starts) - 1)[is_word]
    first_word = np.r_[True, sentence_of_word[1:] != sentence_of_word[:-1]]
    first_positions = np.flatnonzero(first_word)
    rank = np.arange(len(ids)) - np.repeat(
        first_positions, np.diff(np.r_[first_positions, len(ids)])
    )
    frames = _frames(ids, table[is_word, 3], sentence_of_word, rank, frame_words, strings)

    id_list = ids.tolist()
    openings = [
        " ".join(strings[i] for i in id_list[start : start + min(opening_words, length)])
        for start, length in zip(offsets[:-1].tolist(), lengths.tolist(), strict=True)
    ]
    return TokenizedTexts(
        ids=ids,
        offsets=offsets,
        characters=np.fromiter((len(t) for t in texts), np.int64, len(texts)),
        sentences=sentences.astype(np.int64),
        keys=np.fromiter((text_key(normalise(t)) for t in texts), np.uint64, len(texts)),
        openings=openings,
        frames=frames,
        mtld=mtld_many(ids, offsets),
    )


def _frames(
    ids: np.ndarray,
    stop: np.ndarray,
    sentence_of_word: np.ndarray,
    rank: np.ndarray,
    frame_words: int,
    strings: Any,
) -> list[str]:
    """Return the frame of each sentence: its first words, content words replaced by "_".

    A frame keeps stop words ("the image shows a _ _") so that sentences built
    from one template share it. Sentences with fewer than three words have none.
    """
    keep = rank < frame_words
    sentences, counts = np.unique(sentence_of_word[keep], return_counts=True)
    long_enough = set(sentences[counts >= 3].tolist())
    words: dict[int, str] = {}
    frames: list[str] = []
    current = -1
    parts: list[str] = []
    for word, is_stop, sentence in zip(
        ids[keep].tolist(), stop[keep].tolist(), sentence_of_word[keep].tolist(), strict=True
    ):
        if sentence != current:
            if parts:
                frames.append(" ".join(parts))
            parts = []
            current = sentence
        if sentence not in long_enough:
            continue
        if is_stop:
            if word not in words:
                words[word] = strings[word]
            parts.append(words[word])
        else:
            parts.append("_")
    if parts:
        frames.append(" ".join(parts))
    return frames


@lru_cache(maxsize=1)
def period_orths() -> np.ndarray:
    nlp = english_pipeline()
    characters = nlp.get_pipe("sentencizer").punct_chars
    return np.array(sorted(nlp.vocab.strings.add(c) for c in characters), np.uint64)


@dataclass
class TextStats:
    """Mergeable statistics of one text column (captions, or a question column).

    Attributes:
        exact_cap: Distinct n-grams kept exactly before switching to HyperLogLog.
        texts: Texts seen.
        empty: Empty or whitespace-only texts.
        words: Words per text.
        characters: Characters per text.
        sentences: Sentences per non-empty text.
        types: Occurrences of each word type (LOWER id).
        ngrams: Distinct n-grams for n = 2..4, by n.
        ngram_totals: Total n-grams for n = 1..4, by n.
        mtld_sum: Sum of per-text MTLD in units of 1/:data:`FIXED_POINT`.
        mtld_texts: Texts with at least one word.
        openings: Texts per opening.
        frames: Sentences per frame.
    """

    exact_cap: int
    texts: int = 0
    empty: int = 0
    words: IntDistribution = field(default_factory=IntDistribution)
    characters: IntDistribution = field(default_factory=IntDistribution)
    sentences: IntDistribution = field(default_factory=IntDistribution)
    types: HashCounter = field(default_factory=HashCounter)
    ngrams: dict[int, DistinctCounter] = field(default_factory=dict)
    ngram_totals: dict[int, int] = field(default_factory=dict)
    mtld_sum: int = 0
    mtld_texts: int = 0
    openings: Counter[str] = field(default_factory=Counter)
    frames: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, texts: Sequence[str], tokens: TokenizedTexts, exact_cap: int) -> TextStats:
        """Compute the statistics of one chunk of texts."""
        empty = np.fromiter((not t.strip() for t in texts), bool, len(texts))
        stats = cls(exact_cap=exact_cap, texts=len(texts), empty=int(empty.sum()))
        stats.words.add_values(tokens.words)
        stats.characters.add_values(tokens.characters)
        stats.sentences.add_values(tokens.sentences[~empty])
        stats.types = HashCounter.of(tokens.ids)
        stats.ngram_totals[1] = len(tokens.ids)
        for n in range(2, MAX_N + 1):
            hashes, _ = ngram_hashes(tokens.ids, tokens.offsets, n)
            stats.ngram_totals[n] = len(hashes)
            stats.ngrams[n] = DistinctCounter(exact_cap)
            stats.ngrams[n].add(hashes)
        finite = tokens.mtld[np.isfinite(tokens.mtld)]
        stats.mtld_sum = sum(fixed_point(v) for v in finite.tolist())
        stats.mtld_texts = len(finite)
        stats.openings = Counter(o for o in tokens.openings if o)
        stats.frames = Counter(tokens.frames)
        return stats

    def merge(self, other: TextStats) -> TextStats:
        """Return the statistics of both sets of texts."""
        return TextStats(
            exact_cap=self.exact_cap,
            texts=self.texts + other.texts,
            empty=self.empty + other.empty,
            words=self.words.merge(other.words),
            characters=self.characters.merge(other.characters),
            sentences=self.sentences.merge(other.sentences),
            types=self.types.merge(other.types),
            ngrams={
                n: self.ngrams.get(n, DistinctCounter(self.exact_cap)).merge(
                    other.ngrams.get(n, DistinctCounter(self.exact_cap))
                )
                for n in range(2, MAX_N + 1)
            },
            ngram_totals={
                n: self.ngram_totals.get(n, 0) + other.ngram_totals.get(n, 0)
                for n in range(1, MAX_N + 1)
            },
            mtld_sum=self.mtld_sum + other.mtld_sum,
            mtld_texts=self.mtld_texts + other.mtld_texts,
            openings=self.openings + other.openings,
            frames=self.frames + other.frames,
        )

    def distinct(self, n: int) -> float | None:
        """Return distinct-n: distinct n-grams over all n-grams (None without n-grams)."""
        total = self.ngram_totals.get(n, 0)
        if total == 0:
            return None
        unique = float(len(self.types.keys)) if n == 1 else self.ngrams[n].count()
        return unique / total

    def ngram_diversity(self) -> float | None:
        """Return the mean of distinct-1..4 over the n for which n-grams exist."""
        values = [d for n in range(1, MAX_N + 1) if (d := self.distinct(n)) is not None]
        return sum(values) / len(values) if values else None

    def exact_ngram_counts(self) -> bool:
        """Return True when every distinct n-gram count is exact (no HyperLogLog estimate)."""
        return all(counter.exact for counter in self.ngrams.values())

    def measures(self, top_openings: int) -> dict[str, float | int | None]:
        """Return the scalar measures under their metric names (without prefix)."""
        tokens = int(self.ngram_totals.get(1, 0))
        vocabulary = len(self.types.keys)
        hapaxes = int(np.count_nonzero(self.types.counts == 1))
        non_empty = self.texts - self.empty
        opened = sum(count for _, count in top(self.openings, top_openings))
        lengths = self.words.summary()
        return {
            "texts": self.texts,
            "empty": self.empty,
            "tokens_mean": lengths["mean"],
            "tokens_median": lengths["median"],
            "tokens_p95": lengths["p95"],
            "vocabulary_size": vocabulary,
            "hapax_share": hapaxes / vocabulary if vocabulary else None,
            "type_token_ratio": vocabulary / tokens if tokens else None,
            "mtld": self.mtld_sum / FIXED_POINT / self.mtld_texts if self.mtld_texts else None,
            **{f"distinct_{n}": self.distinct(n) for n in range(1, MAX_N + 1)},
            "ngram_diversity": self.ngram_diversity(),
            "template_rate": opened / non_empty if non_empty else None,
        }


def minhash_bands(
    tokens: TokenizedTexts, shingle_words: int, bands: int, rows: int, seed: int
) -> np.ndarray:
    """Compute banded MinHash signatures of word shingles, for near-duplicate search.

    Each text's shingles are its word `shingle_words`-grams (its words when
    it is shorter). Hash function j maps a shingle hash x to the top 32 bits
    of (a_j * x + b_j) mod 2**64 with odd random a_j (multiply-shift
    hashing); the signature is the minimum per function, and each band of
    `rows` minima is hashed into one uint64.

    Returns:
        uint64 array of shape (texts, bands); all zeros for a text without words.
    """
    count = len(tokens.offsets) - 1
    shingles, owners = ngram_hashes(tokens.ids, tokens.offsets, shingle_words)
    covered = np.zeros(count, bool)
    covered[owners] = True
    short = np.flatnonzero(~covered & (tokens.words > 0))
    if len(short):
        unigrams, unigram_owners = ngram_hashes(tokens.ids, tokens.offsets, 1)
        keep = np.isin(unigram_owners, short)
        shingles = np.concatenate([shingles, unigrams[keep]])
        owners = np.concatenate([owners, unigram_owners[keep]])
        order = np.argsort(owners, kind="stable")
        shingles, owners = shingles[order], owners[order]
    result = np.zeros((count, bands), np.uint64)
    if len(shingles) == 0:
        return result
    random = np.random.default_rng(seed)
    a = random.integers(0, 2**63, size=bands * rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = random.integers(0, 2**63, size=bands * rows, dtype=np.uint64)
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    texts = owners[starts]
    # One hash function at a time, in place. A (shingles x functions) array
    # would be mapped afresh for every chunk, which costs page faults.
    values = np.empty_like(shingles)
    shift = np.uint64(32)
    for band in range(bands):
        combined = np.zeros(len(starts), np.uint64)
        for function in range(band * rows, (band + 1) * rows):
            np.multiply(shingles, a[function], out=values)
            values += b[function]
            values >>= shift
            minima = np.minimum.reduceat(values, starts)
            combined = mix64(combined * _NGRAM_MULTIPLIER + minima)
        result[texts, band] = combined | np.uint64(1)
    return result


def group_measures(members: Sequence[np.ndarray]) -> dict[str, float] | None:
    """Compute the diversity of the captions of one group; see :func:`group_measures_many`."""
    return group_measures_many([members])[0]


def group_measures_many(groups: Sequence[Sequence[np.ndarray]]) -> list[dict[str, float] | None]:
    """Compute the diversity of the captions of each group, for many groups at once.

    Args:
        groups: Per group, the word ids of each of its captions.

    Returns:
        Per group, the measures of :data:`GROUP_MEASURES` over the group's
        captions: vocabulary size, hapax share (words seen once in the group
        over the group's vocabulary), type-token ratio, MTLD of the captions
        read one after the other, distinct-1..4 and n-gram diversity (n-grams
        within captions), and `similarity`, the mean pairwise cosine of the
        captions' TF-IDF vectors. TF is the raw count and IDF is
        ln((1 + N) / (1 + df)) + 1 over the N captions of the group, as in
        scikit-learn's TfidfVectorizer. Only captions with words count.
        None for a group with fewer than two captions with words.
    """
    kept = [[m for m in group if len(m)] for group in groups]
    measured = [i for i, group in enumerate(kept) if len(group) >= 2]
    results: list[dict[str, float] | None] = [None] * len(groups)
    if not measured:
        return results
    captions = [m for i in measured for m in kept[i]]
    sizes = np.array([len(kept[i]) for i in measured])
    group_of_caption = np.repeat(np.arange(len(measured)), sizes)
    lengths = np.array([len(m) for m in captions])
    offsets = np.zeros(len(captions) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(captions)
    words, _ = pd.factorize(ids)
    caption_of_word = np.repeat(np.arange(len(captions)), lengths)
    group_of_word = group_of_caption[caption_of_word]
    count = len(measured)
    tokens = np.bincount(group_of_word, minlength=count)

    columns: dict[str, np.ndarray] = {}
    first, _, occurrences = _unique_pairs(group_of_word, words)
    owner = group_of_word[first]
    vocabulary = np.bincount(owner, minlength=count)
    columns["vocabulary_size"] = vocabulary
    columns["hapax_share"] = np.bincount(owner[occurrences == 1], minlength=count) / vocabulary
    columns["type_token_ratio"] = vocabulary / tokens
    group_offsets = np.zeros(count + 1, np.int64)
    np.cumsum(tokens, out=group_offsets[1:])
    columns["mtld"] = mtld_many(words, group_offsets)
    shares = []
    for n in range(1, MAX_N + 1):
        hashes, owners = ngram_hashes(ids, offsets, n)
        group = group_of_caption[owners]
        total = np.bincount(group, minlength=count)
        # One 64-bit key per (group, n-gram hash) pair. mix64 is a bijection, so two
        # pairs share a key only through a 64-bit hash collision, as two n-grams can.
        keys = mix64(hashes ^ (group.astype(np.uint64) * _NGRAM_MULTIPLIER))
        first = _first_occurrences(pd.factorize(keys)[0])
        unique = np.bincount(group[first], minlength=count)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns[f"distinct_{n}"] = np.where(total > 0, unique / np.maximum(total, 1), np.nan)
        shares.append(columns[f"distinct_{n}"])
    columns["ngram_diversity"] = np.nanmean(np.stack(shares), axis=0)
    columns["similarity"] = _tfidf_similarity(words, caption_of_word, group_of_caption, sizes)

    for position, index in enumerate(measured):
        results[index] = {
            name: float(values[position])
            for name, values in columns.items()
            if not np.isnan(values[position])
        }
    return results


def _unique_pairs(
    first: np.ndarray, second: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the distinct pairs of two columns of small non-negative integers.

    Each pair is packed into one int64, `first` times (max of `second` + 1)
    plus `second`, and the packed values are numbered with pandas' hash
    table, which is several times faster than sorting them (np.unique).

    Returns:
        The index of the first occurrence of each distinct pair, the number
        of the distinct pair of each input pair, and the occurrences of each.
        Distinct pairs are numbered in order of first occurrence.
    """
    packed = first.astype(np.int64) * (int(second.max(initial=0)) + 1) + second
    inverse, _ = pd.factorize(packed)
    return _first_occurrences(inverse), inverse, np.bincount(inverse)


def _tfidf_similarity(
    words: np.ndarray, caption_of_word: np.ndarray, group_of_caption: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """Return the mean pairwise TF-IDF cosine of the captions of each group.

    `words` are dense word numbers (from pd.factorize). With unit vectors
    v_i, the sum of v_i . v_j over ordered pairs i != j is |sum v_i|^2 - N,
    so no pair is formed explicitly.
    """
    occurrence, _, term_frequency = _unique_pairs(caption_of_word, words)
    caption = caption_of_word[occurrence]
    term = words[occurrence]
    group = group_of_caption[caption]
    representative, slot, document_frequency = _unique_pairs(group, term)
    group_of_slot = group[representative]
    captions_in_group = sizes[group].astype(np.float64)
    weights = term_frequency * (
        np.log((1 + captions_in_group) / (1 + document_frequency[slot])) + 1
    )
    norms = np.sqrt(np.bincount(caption, weights=weights**2))
    unit = weights / norms[caption]
    sums = np.bincount(slot, weights=unit, minlength=len(representative))
    squared = np.bincount(group_of_slot, weights=sums**2, minlength=len(sizes))
    return (squared - sizes) / (sizes * (sizes - 1))


GROUP_MEASURES = (
    "vocabulary_size",
    "hapax_share",
    "type_token_ratio",
    "mtld",
    *(f"distinct_{n}" for n in range(1, MAX_N + 1)),
    "ngram_diversity",
    "similarity",
)


@dataclass
class GroupRun:
    """Consecutive samples with the same group id, with their word ids."""

    key: str
    members: list[np.ndarray]


@dataclass
class GroupRuns:
    """Within-group measures over runs of consecutive samples with the same group id.

    A group is a run of consecutive samples that share an id (`image_id` or
    `location_id`); readers write the captions of one image or location
    together. Only the first and the last run of a chunk can continue in a
    neighbouring chunk, so they are kept open with their word ids; every
    other run is closed at once and only its measures are summed. Merging
    joins the last run of the left state with the first of the right when
    their ids match, so the result does not depend on chunking. An id that
    occurs in two separate runs counts as two groups; the vocabulary analyzer
    counts such splits from its spilled rows.

    Attributes:
        first: The first run, still open.
        last: The last run, still open, or None when there is one run.
        groups: Closed runs.
        measured: Closed runs with at least two captions with words.
        captions: Captions in closed runs.
        sums: Sum of each measure of :data:`GROUP_MEASURES` over the
            measured runs, in units of 1/:data:`FIXED_POINT`.
    """

    first: GroupRun | None = None
    last: GroupRun | None = None
    groups: int = 0
    measured: int = 0
    captions: int = 0
    sums: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, keys: Sequence[str], tokens: TokenizedTexts) -> GroupRuns:
        """Build the runs of one chunk; an empty key means "no group"."""
        state = cls()
        runs: list[GroupRun] = []
        for index, key in enumerate(keys):
            if runs and runs[-1].key == key:
                runs[-1].members.append(tokens.text_ids(index))
            else:
                runs.append(GroupRun(key, [tokens.text_ids(index)]))
        return state._with_runs(runs)

    def _with_runs(self, runs: list[GroupRun]) -> GroupRuns:
        self._close(runs[1:-1])
        if runs:
            self.first = runs[0]
            self.last = runs[-1] if len(runs) > 1 else None
        return self

    def _close(self, runs: Sequence[GroupRun]) -> None:
        runs = [run for run in runs if run.key]
        self.groups += len(runs)
        self.captions += sum(len(run.members) for run in runs)
        for measures in group_measures_many([run.members for run in runs]):
            if measures is None:
                continue
            self.measured += 1
            for name in GROUP_MEASURES:
                self.sums[name] += fixed_point(measures[name])

    def runs(self) -> list[GroupRun]:
        """Return the open runs, first to last."""
        return [run for run in (self.first, self.last) if run is not None]

    def merge(self, other: GroupRuns) -> GroupRuns:
        """Return the runs of both, joining the runs that meet at the boundary."""
        merged = GroupRuns(
            groups=self.groups + other.groups,
            measured=self.measured + other.measured,
            captions=self.captions + other.captions,
            sums=self.sums + other.sums,
        )
        left, right = self.runs(), other.runs()
        if left and right and left[-1].key == right[0].key:
            joined = GroupRun(left[-1].key, left[-1].members + right[0].members)
            left, right = [*left[:-1], joined], right[1:]
        return merged._with_runs(left + right)

    def closed(self) -> GroupRuns:
        """Return the state with the open runs closed, for the final measures."""
        final = GroupRuns(
            groups=self.groups,
            measured=self.measured,
            captions=self.captions,
            sums=Counter(self.sums),
        )
        final._close(self.runs())
        return final


def top(counter: Counter[str], k: int) -> list[tuple[str, int]]:
    """Return the `k` most frequent entries, ties broken by text so the order is stable."""
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:k]


__all__ = [
    "DistinctCounter",
    "GroupRuns",
    "HashCounter",
    "IntDistribution",
    "TextStats",
    "TokenizedTexts",
    "group_measures",
    "group_measures_many",
    "minhash_bands",
    "mtld_many",
    "ngram_hashes",
    "normalise",
    "sentence_starts",
    "text_key",
    "tokenize_docs",
    "top",
]
