"""Builders shared by the alignment tests: tiny CLIP models and GeoTIFF datasets.

Every model is created from a configuration with random weights and saved in
the test's temporary folder, so nothing is downloaded. This module has no tests.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_open_clip_config(
    folder: Path, name: str, image_size: int = 32, patch: int = 16, context_length: int = 77
) -> Path:
    """Write an OpenCLIP model config JSON named `<name>.json` and return its path."""
    config = json.loads(json.dumps(TINY_OPEN_CLIP))
    config["vision_cfg"]["image_size"] = image_size
    config["vision_cfg"]["patch_size"] = patch
    config["text_cfg"]["context_length"] = context_length
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def write_clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt of the CLIP BPE from the file open_clip ships."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path = folder / "vocab.json"
    merges_path = folder / "merges.txt"
    vocab_path.write_text(json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def tiny_hf_clip_folder(
    folder: Path, image_size: int = 224, seed: int = 0, negate_image_projection: bool = False
) -> Path:
    """Save a randomly initialised small transformers CLIP with its processor in `folder`.

    A random CLIP tends to put all images on one side of all captions, so most
    cosines have the same sign. `negate_image_projection` flips the image side.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    vocab, merges = write_clip_tokenizer_files(folder / "bpe")
    tokenizer = CLIPTokenizer(str(vocab), str(merges))
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={
            **layers,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
        },
        vision_config={
            **layers,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 32,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model_folder = folder / "model"
    model = CLIPModel(config)
    if negate_image_projection:
        with torch.no_grad():
            model.visual_projection.weight.neg_()
    model.save_pretrained(model_folder)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(model_folder)
    return model_folder


def write_geotiff(path: Path, pixels: np.ndarray) -> None:
    """Write a `(bands, height, width)` array as a UTM GeoTIFF with 10 m pixels."""
    bands, height, width = pixels.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=bands,
        dtype=pixels.dtype,
        crs="EPSG:32633",
        transform=from_origin(500_000, 5_000_000, 10, 10),
    ) as target:
        target.write(pixels)


def geotiff_dataset(
    folder: Path, chips: dict[str, np.ndarray], captions: list[tuple[str, str]]
) -> Path:
    """Write GeoTIFF chips and a captions.csv (`sample_id`, `file`, `caption`) into `folder`.

    Args:
        folder: Dataset folder to create.
        chips: Pixels by file name.
        captions: `(file name, caption)` per sample, in sample order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, pixels in chips.items():
        write_geotiff(folder / name, pixels)
    pd.DataFrame(
        {
            "sample_id": [f"s{i:03d}" for i in range(len(captions))],
            "file": [name for name, _ in captions],
            "caption": [text for _, text in captions],
        }
    ).to_csv(folder / "captions.csv", index=False)
    return folder


def write_zarr_zip(path: Path, bands: np.ndarray) -> list[str]:
    """Write chips in the SSL4EO-S12 v1.1 Zarr Zip layout and return their `image` references.

    Args:
        path: The `.zarr.zip` file to write.
        bands: `(locations, times, bands, height, width)` pixels.
    """
    import zarr
    from zarr.storage import ZipStore

    from eoaudit.images import ZarrChipRef

    locations, times = bands.shape[:2]
    ids = np.array([[f"{loc:07d}_{t}" for t in range(times)] for loc in range(locations)])
    store = ZipStore(path, mode="w")
    root = zarr.open_group(store, mode="w", zarr_format=2)
    root.create_array("bands", data=bands, chunks=(1, 1, *bands.shape[2:]))
    root.create_array("sample_id", data=ids)
    store.close()
    return [
        str(ZarrChipRef(path, f"{loc:07d}", t)) for loc in range(locations) for t in range(times)
    ]


@pytest.fixture(scope="module", autouse=True)
def single_thread_torch() -> Iterator[None]:
    """Run torch on one thread: on a busy 2-core CI machine two threads run several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
