"""Generate a small dataset in the exact Llama3-SSL4EO-S12 caption layout.

The real caption rows are only on Hugging Face, so this script writes
stand-ins: the (sample_id, time_id, file) keys are real, taken from the
SSL4EO-S12 v1.1 val metadata (CC-BY-4.0), and the caption, question and tag
texts are generated from word lists with a fixed seed. The layout matches the
published one: chunk CSVs of 256 rows named like the Zarr Zip files, columns
caption, question_1..question_3, file, sample_id (integer, no zero padding),
time_id, classes, tags, names; and one `val.parquet` with all rows.

Run from the repository root:

    python tests/data/llama3_ssl4eo/make_fixture.py PATH/TO/val_metadata.parquet

where val_metadata.parquet is the SSL4EO-S12 v1.1 `splits/val_metadata.parquet`.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import geopandas as gpd
import pandas as pd

SEED = 20261204
CHUNKS = ("ssl4eos12_val_seasonal_data_000001", "ssl4eos12_val_seasonal_data_000002")
OUT = Path(__file__).resolve().parent

OPENINGS = [
    "The image is a satellite view of a landscape that",
    "The image shows an aerial view of a region where",
    "This satellite image captures an area in which",
]
SCENES = [
    "a dense forest covers most of the land with patches of darker trees",
    "agricultural fields form a patchwork of rectangular plots in shades of green and brown",
    "a river winds through the valley and feeds a small lake near the centre",
    "a town with buildings and roads occupies the lower part of the image",
    "bare rocky ground and sand dominate the terrain with sparse vegetation",
    "grassland and meadows stretch between scattered shrubs",
    "a coastline separates the blue sea from a narrow beach and wetlands",
    "snow covers the higher ground while the valleys remain green",
]
DETAILS = [
    "The colours range from deep green to light brown, suggesting a mix of vegetation types.",
    "Several roads cross the area and connect small settlements.",
    "The texture of the surface indicates irregular terrain with gentle slopes.",
    "There are no visible water bodies in the northern half of the image.",
    "Some white objects, possibly clouds, cover a small part of the scene.",
    "The fields appear to be irrigated, as their colour is brighter than the surroundings.",
    "A few cars can be seen on the main road near the town.",
    "The river is approximately 500 kilometers long and flows towards the sea.",
]
CLOSINGS = [
    "Overall, the image depicts a rural landscape shaped by farming and natural vegetation.",
    "Overall, the scene shows how human settlement and nature coexist in this region.",
    "Overall, the image provides a detailed view of the land cover of the area.",
]
QUESTIONS = [
    (
        "What is the largest body of water visible in the image?",
        "The largest body of water is a lake.",
    ),
    ("What is the most prominent agricultural feature?", "The most prominent feature is a field."),
    ("What is the most noticeable natural feature in the image?", "A forest covers the hills."),
    ("Are there any buildings in the image?", "Yes, there are buildings in the town."),
]
TAGS = [
    "land",
    "natural",
    "wood",
    "water",
    "reservoir",
    "agricultural",
    "farmyard",
    "residential",
    "park",
    "river",
    "forest",
    "grass",
    "meadow",
    "school",
    "beach",
]
NAMES = ["Renhe Reservoir (reservoir)", "Green Valley (park)", "North River (river)", ""]


def caption(rng: random.Random) -> str:
    """Build one caption of about 100 words."""
    parts = [f"{rng.choice(OPENINGS)} {rng.choice(SCENES)}."]
    parts.append(f"In the centre, {rng.choice(SCENES)}.")
    parts.extend(rng.sample(DETAILS, 3))
    parts.append(rng.choice(CLOSINGS))
    return " ".join(parts)


def main() -> None:
    """Write the chunk CSVs and val.parquet next to this script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metadata", type=Path, help="SSL4EO-S12 v1.1 val_metadata.parquet")
    arguments = parser.parse_args()

    rng = random.Random(SEED)
    metadata = gpd.read_parquet(arguments.metadata)
    frames = []
    for chunk in CHUNKS:
        rows = metadata[metadata["file"] == f"{chunk}.zarr.zip"]
        records = []
        for sample_id, time_id, file in zip(
            rows["sample_id"], rows["time_id"], rows["file"], strict=True
        ):
            questions = rng.sample(QUESTIONS, 3)
            tags = rng.sample(TAGS, rng.randint(2, 6))
            records.append(
                {
                    "caption": caption(rng),
                    "question_1": " ".join(questions[0]),
                    "question_2": " ".join(questions[1]),
                    "question_3": " ".join(questions[2]),
                    "file": file,
                    "sample_id": int(sample_id),
                    "time_id": int(time_id),
                    "classes": ", ".join(tags[:3]),
                    "tags": ", ".join(tags),
                    "names": rng.choice(NAMES),
                }
            )
        frame = pd.DataFrame.from_records(records)
        frame.to_csv(OUT / f"{chunk}.csv", index=False)
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_parquet(OUT / "val.parquet", index=False)


if __name__ == "__main__":
    main()
