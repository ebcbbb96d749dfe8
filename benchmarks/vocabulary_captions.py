"""Seeded generator of Llama3-SSL4EO-S12-like captions for the vocabulary benchmark.

Captions are about 100 words: seven to nine sentences drawn from templates in
the style of the Llama3 captions (an opening, land-cover statements, spatial
relations, colours and textures, a summary), with slot words drawn from
Zipf-weighted word lists, so that openings repeat as they do in LLM output
while the vocabulary has a long tail. Samples come in groups of four
acquisitions per location with a 2.64 km square footprint, as in SSL4EO-S12.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from shapely import box

OPENINGS = [
    "The image shows",
    "This satellite image shows",
    "The satellite image depicts",
    "In this image we can see",
    "The scene captures",
    "This image features",
    "The picture displays",
    "An aerial view reveals",
]
COVER = (
    "forest trees woodland grassland meadow pasture farmland fields cropland vineyard orchard "
    "shrubland scrub heath wetland marsh swamp river lake reservoir pond stream canal coast "
    "beach dunes desert rock quarry glacier snow ice village town city suburb buildings houses "
    "roads highway railway bridge airport harbour factory warehouse greenhouse plantation "
    "savanna steppe tundra mangroves lagoon estuary floodplain terraces valley ridge hills "
    "mountains plateau canyon delta island peninsula bay cliffs"
).split()
ADJECTIVES = (
    "dense sparse green dark light bright brown yellow grey white patchy irregular regular "
    "rectangular circular narrow wide small large scattered fragmented continuous smooth rough "
    "textured uniform mixed dry wet lush barren fertile cultivated natural rural urban remote "
    "winding straight elongated compact extensive isolated densely thinly"
).split()
PLACES = (
    "northern southern eastern western central upper lower left right middle top bottom "
    "north-eastern south-western north-western south-eastern"
).split()
RELATIONS = [
    "next to",
    "surrounded by",
    "bordered by",
    "adjacent to",
    "interspersed with",
    "separated from",
    "close to",
    "along",
    "between",
    "near",
]
TEMPLATES = [
    "{opening} a {adj} {cover} {rel} {adj2} {cover2}.",
    "In the {place} part of the image there is a {adj} {cover} with {adj2} {cover2}.",
    "The {place} area is covered by {adj} {cover}, while the {place2} side shows {cover2}.",
    "A {adj} {cover} runs through the {place} portion of the scene {rel} the {cover2}.",
    "Several {adj} patches of {cover} are visible {rel} a {adj2} {cover2}.",
    "The {cover} appears {adj} and {adj2}, suggesting {adj3} {cover2} in the area.",
    "Overall, the image presents a {adj} landscape of {cover}, {cover2} and {cover3}.",
    "The colours range from {adj} to {adj2}, which indicates {cover} and {cover2}.",
    "There are no {cover} visible in the {place} part of the image.",
    "A {adj} {cover} of about {number} metres crosses the {place} half of the image.",
]


def _zipf_weights(size: int, exponent: float = 1.1) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    return weights / weights.sum()


def generate_captions(count: int, seed: int = 0) -> list[str]:
    """Return `count` captions of about 100 words, the same for the same seed."""
    random = np.random.default_rng(seed)
    sentences_per_caption = random.integers(7, 10, size=count)
    total = int(sentences_per_caption.sum())
    draws = {
        "cover": random.choice(COVER, size=(total, 3), p=_zipf_weights(len(COVER))),
        "adj": random.choice(ADJECTIVES, size=(total, 3), p=_zipf_weights(len(ADJECTIVES))),
        "place": random.choice(PLACES, size=(total, 2)),
        "rel": random.choice(RELATIONS, size=total),
        "template": random.integers(1, len(TEMPLATES), size=total),
        "opening": random.choice(OPENINGS, size=count, p=_zipf_weights(len(OPENINGS), 1.5)),
        "number": random.integers(10, 3000, size=total),
    }
    captions = []
    row = 0
    for index in range(count):
        sentences = []
        for position in range(int(sentences_per_caption[index])):
            template = TEMPLATES[0 if position == 0 else int(draws["template"][row])]
            cover, adjective, place = draws["cover"][row], draws["adj"][row], draws["place"][row]
            sentences.append(
                template.format(
                    opening=draws["opening"][index],
                    cover=cover[0],
                    cover2=cover[1],
                    cover3=cover[2],
                    adj=adjective[0],
                    adj2=adjective[1],
                    adj3=adjective[2],
                    place=place[0],
                    place2=place[1],
                    rel=draws["rel"][row],
                    number=draws["number"][row],
                )
            )
            row += 1
        captions.append(" ".join(sentences))
    return captions


def generate_samples(start: int, count: int, seed: int = 0) -> pd.DataFrame:
    """Return samples `start` to `start + count` of a seeded synthetic dataset.

    Each call seeds its own generator from (`seed`, `start`), so a chunk can be
    generated where it is analysed; `start` should be a multiple of 4 so that
    locations are not split.
    """
    random = np.random.default_rng([seed, start, 1])
    locations = (start + np.arange(count)) // 4
    unique, first = np.unique(locations, return_inverse=True)
    lon = random.uniform(-120, 150, size=len(unique))[first]
    lat = random.uniform(-40, 60, size=len(unique))[first]
    half_lat = 1320 / 111_320.0
    half_lon = half_lat / np.cos(np.radians(lat))
    return pd.DataFrame(
        {
            "sample_id": [f"{location:07d}_{i % 4}" for i, location in enumerate(locations)],
            "caption": generate_captions(count, seed * 1_000_003 + start),
            "location_id": [f"{location:07d}" for location in locations],
            "geometry": box(lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat),
        }
    )
