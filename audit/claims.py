"""Unsupported claims in captions, from the rules in `rules/claims.yaml`.

Three kinds of claim:

* objects a sensor cannot resolve at its ground sampling distance (GSD):
  cars, people, animals, road markings ... (each with the coarsest GSD at
  which it can still be seen);
* statements about time of day, camera angle or weather, which a nadir
  satellite chip does not show;
* lengths and areas, written with a number and a unit, larger than the
  sample's footprint ("a river about 500 kilometres long" in a 2.64 km chip).

Terms and phrases are matched on lower-case tokens with spaCy's
PhraseMatcher. A term in the scope of a negation is not a claim. The scope
rules are simpler than those of :mod:`eoaudit.landcover` because a claim is a
single term: a cue ("no", "not", "without", "absence of" ...) at most
:data:`NEGATION_WINDOW` tokens before the term, with no clause break or verb
of being between them, or "not"/"n't" followed by "visible", "seen" ... after
the term in the same clause ("cars are not visible").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc

from eoaudit.errors import InputError

NEGATION_WINDOW = 6
"""Tokens a negation cue may stand before the term it negates."""

NEGATION_CUES = frozenset({"no", "not", "n't", "without", "none", "neither", "nor", "never"})
NEGATION_PAIRS = frozenset({("absence", "of"), ("lack", "of"), ("free", "of"), ("devoid", "of")})
POST_CUES = frozenset({"absent", "missing", "lacking"})
AFTER_NOT = frozenset(
    {"visible", "present", "seen", "evident", "apparent", "observed", "found", "discernible"}
)
CLAUSE_BREAKS = frozenset(
    {".", ";", ":", "!", "?", "but", "however", "although", "though", "while", "whereas"}
    | {"which", "where", "except"}
)
BEING = frozenset({"is", "are", "was", "were", "be", "been"})

# Units to metres (lengths) and square metres (areas).
LENGTH_UNITS = {
    "km": 1000.0,
    "kilometer": 1000.0,
    "kilometre": 1000.0,
    "m": 1.0,
    "meter": 1.0,
    "metre": 1.0,
    "mi": 1609.344,
    "mile": 1609.344,
    "ft": 0.3048,
    "foot": 0.3048,
    "feet": 0.3048,
    "yd": 0.9144,
    "yard": 0.9144,
}
AREA_UNITS = {
    "km2": 1e6,
    "km²": 1e6,
    "sq km": 1e6,
    "square kilometer": 1e6,
    "square kilometre": 1e6,
    "square mile": 2_589_988.11,
    "sq mi": 2_589_988.11,
    "hectare": 1e4,
    "ha": 1e4,
    "acre": 4046.856,
    "m2": 1.0,
    "m²": 1.0,
    "square meter": 1.0,
    "square metre": 1.0,
}
_UNIT_PATTERN = (
    r"square\s+(?:kilomet(?:er|re)s?|met(?:er|re)s?|miles?)|sq\.?\s*(?:km|mi)"
    r"|km²|km2|m²|m2|hectares?|ha|acres?"
    r"|kilomet(?:er|re)s?|met(?:er|re)s?|km|miles?|mi|feet|foot|ft|yards?|yd|m"
)
QUANTITY = re.compile(
    r"(?<![\w.,])(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?:\s*-\s*|\s*)(?P<unit>" + _UNIT_PATTERN + r")(?![\w²])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Claim:
    """An unsupported claim found in a caption.

    Attributes:
        start: Character offset of the first character in the caption.
        end: Character offset after the last character.
        kind: `object`, `statement` or `scale`.
        label: Rule label (`vehicle`, `weather`, ...) or, for scale, the
            measured size against the footprint ("500 km > footprint 3.7 km").
    """

    start: int
    end: int
    kind: str
    label: str


@dataclass(frozen=True)
class Footprint:
    """Size of a footprint for the scale check: diagonal in metres, area in square metres."""

    diagonal_m: float
    area_m2: float


class ClaimMatcher:
    """Finds unsupported claims in captions.

    Args:
        rules: The parsed `rules/claims.yaml`.
        nlp: Pipeline whose vocabulary the docs share (the shared English one).
        gsd_m: Ground sampling distance of the sensor in metres.

    Raises:
        InputError: When the rules do not have the documented layout.
    """

    def __init__(self, rules: dict[str, Any], nlp: Language, gsd_m: float) -> None:
        if not isinstance(rules, dict):
            raise InputError(
                "claims rules: expected a mapping with `objects`, `statements`, `scale`"
            )
        if not gsd_m > 0:
            raise InputError(f"gsd_m must be a positive number of metres, got {gsd_m!r}")
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        self.kinds: dict[str, str] = {}
        for entry in _entries(rules, "objects"):
            limit = entry.get("max_gsd_m")
            if not isinstance(limit, (int, float)) or limit <= 0:
                raise InputError(
                    f"claims rules: object {entry.get('label')!r} needs a positive `max_gsd_m` "
                    f"(metres), got {limit!r}"
                )
            if gsd_m > limit:
                self._add(nlp, entry, "object")
        for entry in _entries(rules, "statements"):
            self._add(nlp, entry, "statement")
        scale = rules.get("scale") or {}
        self.tolerance = float(scale.get("tolerance", 1.0))
        if not self.tolerance > 0:
            raise InputError(
                f"claims rules: scale.tolerance must be positive, got {self.tolerance}"
            )

    def _add(self, nlp: Language, entry: dict[str, Any], kind: str) -> None:
        label = str(entry["label"])
        words = list(entry.get("terms") or []) + list(entry.get("phrases") or [])
        if not all(isinstance(word, str) for word in words):
            raise InputError(f"claims rules: terms and phrases of {label!r} must be strings")
        self.matcher.add(label, [nlp.make_doc(word) for word in words])
        self.kinds[label] = kind

    def find_claims(
        self, doc: Doc, footprint: Footprint | None, text: str | None = None
    ) -> list[Claim]:
        """Return the claims of one caption, in caption order.

        Args:
            doc: The caption, tokenized by the pipeline given to the matcher.
            footprint: Size of the sample's footprint, or None to skip the
                scale check.
            text: The caption text, when the caller has it (saves rebuilding
                it from the doc).
        """
        claims = []
        for match_id, first, last in self.matcher(doc):
            if _negated(doc, first, last):
                continue
            label = doc.vocab.strings[match_id]
            span = doc[first:last]
            claims.append(Claim(span.start_char, span.end_char, self.kinds[label], label))
        if footprint is not None:
            claims.extend(
                scale_claims(doc.text if text is None else text, footprint, self.tolerance)
            )
        claims.sort(key=lambda claim: (claim.start, claim.end))
        return _without_overlaps(claims)


def scale_claims(text: str, footprint: Footprint, tolerance: float = 1.0) -> list[Claim]:
    """Return the lengths and areas in `text` that exceed the footprint times `tolerance`."""
    claims = []
    for match in QUANTITY.finditer(text):
        value = float(match.group("number").replace(",", ""))
        unit = " ".join(match.group("unit").lower().replace(".", "").split())
        singular = unit[:-1] if unit.endswith("s") and unit[:-1] in _ALL_UNITS else unit
        if singular in AREA_UNITS:
            size, limit = value * AREA_UNITS[singular], footprint.area_m2 * tolerance
            if size > limit:
                label = f"area {_area_text(size)} > footprint {_area_text(footprint.area_m2)}"
                claims.append(Claim(match.start(), match.end(), "scale", label))
        elif singular in LENGTH_UNITS:
            size, limit = value * LENGTH_UNITS[singular], footprint.diagonal_m * tolerance
            if size > limit:
                label = (
                    f"length {_length_text(size)} > footprint {_length_text(footprint.diagonal_m)}"
                )
                claims.append(Claim(match.start(), match.end(), "scale", label))
    return claims


_ALL_UNITS = set(LENGTH_UNITS) | set(AREA_UNITS)


def _length_text(metres: float) -> str:
    return f"{metres / 1000:.3g} km" if metres >= 1000 else f"{metres:.3g} m"


def _area_text(square_metres: float) -> str:
    return f"{square_metres / 1e6:.3g} km²"


def _entries(rules: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = rules.get(key) or []
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "label" in e for e in entries
    ):
        raise InputError(
            f"claims rules: `{key}` must be a list of entries with `label`, `terms`, `phrases`"
        )
    return entries


def _negated(doc: Doc, first: int, last: int) -> bool:
    """Decide whether the term at tokens [first, last) lies in a negation scope."""
    window_start = max(0, first - NEGATION_WINDOW - 1)
    lowers = {i: doc[i].lower_ for i in range(window_start, first)}
    for position in range(first - 1, max(-1, first - NEGATION_WINDOW - 1), -1):
        word = lowers[position]
        if word in CLAUSE_BREAKS or word in BEING:
            break
        if word in NEGATION_CUES:
            return True
        if word == "of" and position > 0 and (lowers[position - 1], word) in NEGATION_PAIRS:
            return True
    for position in range(last, len(doc)):
        word = doc[position].lower_
        if word in CLAUSE_BREAKS or word == ",":
            break
        if word in POST_CUES:
            return True
        following = {token.lower_ for token in doc[position + 1 : position + 3]}
        if word in ("not", "n't") and AFTER_NOT & following:
            return True
    return False


def _without_overlaps(claims: list[Claim]) -> list[Claim]:
    """Keep the longest of overlapping claims (sorted by start)."""
    kept: list[Claim] = []
    for claim in claims:
        if kept and claim.start < kept[-1].end:
            if claim.end - claim.start > kept[-1].end - kept[-1].start:
                kept[-1] = claim
            continue
        kept.append(claim)
    return kept


def footprint_sizes(
    bounds: Any, geometry_types: Any, fallback_side_m: float | None
) -> list[Footprint | None]:
    """Return the size of each footprint from its bounds, for the scale check.

    Sizes come from the bounding box in degrees, converted with a spherical
    Earth (111.32 km per degree of latitude, times the cosine of the latitude
    for longitude); good to about 1 % for chips of a few kilometres.

    Args:
        bounds: Array of (minx, miny, maxx, maxy) per sample, NaN when missing.
        geometry_types: Geometry type name per sample (None when missing).
        fallback_side_m: Side of a square footprint assumed for samples
            without a polygon, or None to skip those samples.
    """
    sizes: list[Footprint | None] = []
    fallback = (
        Footprint(fallback_side_m * math.sqrt(2), fallback_side_m**2) if fallback_side_m else None
    )
    for (minx, miny, maxx, maxy), kind in zip(bounds, geometry_types, strict=True):
        if kind not in ("Polygon", "MultiPolygon") or math.isnan(minx):
            sizes.append(fallback)
            continue
        latitude = math.radians((miny + maxy) / 2)
        width = (maxx - minx) * 111_320.0 * math.cos(latitude)
        height = (maxy - miny) * 111_320.0
        sizes.append(Footprint(math.hypot(width, height), width * height))
    return sizes


__all__ = ["Claim", "ClaimMatcher", "Footprint", "footprint_sizes", "scale_claims"]
