"""Speed of the alignment analyzer: whole image pipeline against the model's forward pass.

Writes synthetic 264 px chips (Zarr Zip in the SSL4EO-S12 v1.1 layout, or
GeoTIFF files), builds an OpenCLIP model with random weights (nothing is
downloaded) and measures, in images per second:

- decode: the DataLoader alone (read the chip, select bands, scale, crop,
  normalise in `--workers` processes), the ceiling of the pipeline;
- forward: `encode_image` on random tensors of the model's input shape, in
  batches of `--batch-size`, with the analyzer's autocast settings;
- pipeline: the analyzer's image path (read the chip, select bands, scale, crop,
  normalise in DataLoader workers, then `encode_image`), without the cache;
- audit: `run_audit` with only the alignment analyzer (images, captions,
  pools, report data), counted per sample.

It runs on the CPU and, when torch finds a CUDA GPU, again on the GPU.

    .venv/bin/python benchmarks/alignment.py --images 128 --modality multispectral
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eoaudit.analyzers.alignment import loader_workers
from eoaudit.chip_loading import ChipDataset, chip_loader
from eoaudit.clip_backends import EmbeddingCache, ModelSpec, embed_images, load_backend
from eoaudit.engine import AuditOptions, run_audit
from eoaudit.images import ZarrChipRef
from eoaudit.readers import ReadOptions, read_dataset
from eoaudit.ruleset import load_rules

CHIP_PX = 264
LOCATIONS_PER_FILE = 64
TIMES = 4


def write_zarr_chips(folder: Path, count: int, bands: int, rng: np.random.Generator) -> list[str]:
    """Write `count` chips into SSL4EO-S12-style Zarr Zip files of 64 x 4 acquisitions."""
    import zarr
    from zarr.storage import ZipStore

    refs: list[str] = []
    per_file = LOCATIONS_PER_FILE * TIMES
    dtype = np.int16 if bands == 12 else np.uint8
    high = 6000 if bands == 12 else 255
    for number, start in enumerate(range(0, count, per_file)):
        chips = min(per_file, count - start)
        locations = -(-chips // TIMES)
        path = folder / f"ssl4eos12_bench_seasonal_data_{number + 1:06d}.zarr.zip"
        pixels = rng.integers(0, high, (locations, TIMES, bands, CHIP_PX, CHIP_PX), dtype=dtype)
        ids = np.array([[f"{loc:07d}_{t}" for t in range(TIMES)] for loc in range(locations)])
        store = ZipStore(path, mode="w")
        root = zarr.open_group(store, mode="w", zarr_format=2)
        root.create_array("bands", data=pixels, chunks=(1, 1, bands, CHIP_PX, CHIP_PX))
        root.create_array("sample_id", data=ids)
        store.close()
        for index in range(chips):
            refs.append(str(ZarrChipRef(path, f"{index // TIMES:07d}", index % TIMES)))
    return refs


def write_geotiff_chips(
    folder: Path, count: int, bands: int, rng: np.random.Generator
) -> list[str]:
    """Write `count` GeoTIFF chips of 264 px."""
    import rasterio
    from rasterio.transform import from_origin

    refs = []
    dtype = np.int16 if bands == 12 else np.uint8
    high = 6000 if bands == 12 else 255
    for index in range(count):
        path = folder / f"chip{index:05d}.tif"
        pixels = rng.integers(0, high, (bands, CHIP_PX, CHIP_PX), dtype=dtype)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=CHIP_PX,
            height=CHIP_PX,
            count=bands,
            dtype=pixels.dtype,
            crs="EPSG:32633",
            transform=from_origin(500_000, 5_000_000, 10, 10),
        ) as target:
            target.write(pixels)
        refs.append(str(path))
    return refs


def make_checkpoint(folder: Path, architecture: str, modality: str) -> Path:
    """Save a randomly initialised model's state dict, with a 10-band patch embedding if asked."""
    import open_clip

    model = open_clip.create_model(architecture, pretrained=None)
    if modality == "multispectral":
        old = model.visual.conv1
        model.visual.conv1 = torch.nn.Conv2d(
            10, old.out_channels, kernel_size=old.kernel_size, stride=old.stride, bias=False
        )
    path = folder / "weights.pt"
    torch.save(model.state_dict(), path)
    return path


def timed(function: object, *args: object, **kwargs: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start, result


def measure(args: argparse.Namespace, device: str, folder: Path) -> dict[str, object]:
    rules = load_rules()["alignment"]
    workers = loader_workers({"decode_workers": args.workers}, device)
    rng = np.random.default_rng(0)
    bands = 12 if args.modality == "multispectral" else 3
    chips = folder / f"chips-{device}"
    chips.mkdir(exist_ok=True)
    writer = write_zarr_chips if args.source == "zarr" else write_geotiff_chips
    refs = writer(chips, args.images, bands, rng)
    checkpoint = make_checkpoint(folder, args.model, args.modality)
    kind = "multispectral" if args.modality == "multispectral" else "open_clip"
    spec = ModelSpec(kind, args.model, checkpoint)  # type: ignore[arg-type]
    backend = load_backend(spec, rules, device, args.precision)
    transform = backend.transform(rules)
    channels = 10 if args.modality == "multispectral" else 3

    # Forward pass alone, on random tensors of the input shape, after one warm-up batch.
    batch = torch.randn(args.batch_size, channels, backend.image_size, backend.image_size)
    if backend.device.type == "cuda":
        batch = batch.pin_memory()
    backend.encode_images(batch)
    batches = -(-args.images // args.batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        backend.encode_images(batch)
    if backend.device.type == "cuda":
        torch.cuda.synchronize()
    forward = batches * args.batch_size / (time.perf_counter() - start)

    # Decoding alone: read, select bands, crop and normalise in the DataLoader, no model.
    loader = chip_loader(ChipDataset(refs, transform), args.batch_size, workers)
    start = time.perf_counter()
    decoded = sum(len(batch["index"]) for batch in loader)
    decode = decoded / (time.perf_counter() - start)

    # The analyzer's image path: decode, transform and embed, no cache.
    seconds, embedded = timed(
        embed_images,
        backend,
        refs,
        transform,
        EmbeddingCache(None, "bench"),
        batch_size=args.batch_size,
        workers=workers,
        progress=False,
    )
    assert len(embedded.vectors) == args.images, embedded.errors  # type: ignore[attr-defined]
    pipeline = args.images / seconds

    # A whole audit with only the alignment analyzer.
    table = folder / f"captions-{device}.csv"
    pd.DataFrame(
        {
            "sample_id": [f"b{i:05d}" for i in range(len(refs))],
            "caption": [f"fields and a river, sample {i}" for i in range(len(refs))],
            "image": refs,
        }
    ).to_csv(table, index=False)
    dataset = read_dataset(table, ReadOptions(format="table"))
    options = {
        "clip_model": args.model,
        "device": device,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "decode_workers": workers,
        "progress": False,
    }
    options["clip_multispectral_checkpoint" if kind == "multispectral" else "clip_checkpoint"] = (
        str(checkpoint)
    )
    seconds, _ = timed(
        run_audit, dataset, AuditOptions(analyzers=["alignment"], analyzer_options=options)
    )
    return {
        "device": device,
        "workers": workers,
        "forward": forward,
        "decode": decode,
        "pipeline": pipeline,
        "audit": args.images / seconds,
        "autocast": str(backend.autocast_dtype or "fp32").replace("torch.", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16", help="OpenCLIP architecture")
    parser.add_argument("--modality", choices=["multispectral", "rgb"], default="multispectral")
    parser.add_argument("--source", choices=["zarr", "geotiff"], default="zarr")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        help="DataLoader workers [default: the analyzer's default for the device]",
    )
    parser.add_argument(
        "--device",
        choices=["all", "cpu", "cuda"],
        default="all",
        help="where to measure (all: the CPU, then a CUDA GPU when torch finds one)",
    )
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch finds no CUDA GPU")
    devices = [args.device] if args.device != "all" else ["cpu"]
    if args.device == "all" and torch.cuda.is_available():
        devices.append("cuda")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )
    print(
        f"# {args.model}, {args.modality} from {args.source}, {args.images} chips of "
        f"{CHIP_PX} px, batch {args.batch_size}"
    )
    print(
        "device | workers | autocast | decode img/s | forward img/s | pipeline img/s "
        "| pipeline/forward | audit samples/s"
    )
    with tempfile.TemporaryDirectory() as temporary:
        for device in devices:
            row = measure(args, device, Path(temporary))
            ratio = float(row["pipeline"]) / float(row["forward"])  # type: ignore[arg-type]
            print(
                f"{row['device']} | {row['workers']} | {row['autocast']} | {row['decode']:.1f} | "
                f"{row['forward']:.2f} | {row['pipeline']:.2f} | {ratio:.0%} | {row['audit']:.2f}"
            )


if __name__ == "__main__":
    main()
