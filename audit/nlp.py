"""The spaCy pipeline shared by the text analyzers.

A blank English pipeline with a rule-based sentencizer and the lookup
lemmatizer (tables from the `spacy-lookups-data` package). It needs no trained
model, so nothing is downloaded; lemmas come from a word list, not from
part-of-speech tags, which is enough for matching lexicon terms.
"""

from __future__ import annotations

from functools import lru_cache

import spacy
from spacy.language import Language


@lru_cache(maxsize=1)
def english_pipeline() -> Language:
    """Return the shared pipeline: tokenizer, sentencizer, lookup lemmatizer.

    The object is cached per process; do not add pipes to it.
    """
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
    nlp.initialize()
    return nlp


@lru_cache(maxsize=1)
def tokenizer_only() -> Language:
    """Return a blank English pipeline (tokenizer only), the baseline of the speed benchmarks."""
    return spacy.blank("en")
