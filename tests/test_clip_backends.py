"""CLIP backends and chip loading, on small randomly initialised models and real GeoTIFFs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from test_alignment_fixtures import (  # noqa: F401 (single_thread_torch is autouse)
    geotiff_dataset,
    single_thread_torch,
    tiny_hf_clip_folder,
    tiny_open_clip_config,
    write_zarr_zip,
)

from eoaudit.analyzers.alignment import loader_workers
from eoaudit.chip_loading import ChipDataset, ChipTransform, centre_crop, chip_loader
from eoaudit.clip_backends import ModelSpec, load_backend
from eoaudit.engine import AuditOptions, run_audit
from eoaudit.errors import InputError, UsageError
from eoaudit.images import read_chip
from eoaudit.readers import ReadOptions, read_dataset
from eoaudit.ruleset import load_rules

MS_CLIP_BANDS = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
"""Positions of B02..B8A, B11, B12 in the 12-band L2A order; B01 and B09 are dropped."""


@pytest.fixture(scope="module")
def rules() -> dict:
    return load_rules()["alignment"]


def test_clipscore_matches_torchmetrics(tmp_path: Path) -> None:
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    folder = tiny_hf_clip_folder(
        tmp_path / "hf", image_size=224, seed=3, negate_image_projection=True
    )
    rng = np.random.default_rng(0)
    texts = [
        "a river crossing farmland",
        "dense forest",
        "a town beside a lake",
        "snow",
        "bare rock and sand dunes in the desert",
        "a harbour",
        "green fields with a road",
        "an airport runway",
        "clouds over the sea",
        "a mine",
    ]
    chips = {f"c{i}.tif": rng.integers(0, 256, (3, 224, 224), dtype=np.uint8) for i in range(10)}
    captions = [(f"c{i}.tif", text) for i, text in enumerate(texts)]
    dataset = read_dataset(
        geotiff_dataset(tmp_path / "data", chips, captions), ReadOptions(format="geotiff-dir")
    )
    audit = run_audit(
        dataset,
        AuditOptions(
            analyzers=["alignment"],
            analyzer_options={"clip_hf_folder": str(folder), "device": "cpu", "decode_workers": 0},
        ),
    )
    ours = audit.samples["alignment.clipscore"]

    # torchmetrics 1.9 expects tensors from get_*_features; transformers 5 returns
    # an output object whose pooler_output is the projected embedding.
    class TensorFeatures(torch.nn.Module):
        def __init__(self, model: CLIPModel) -> None:
            super().__init__()
            self.model = model
            self.config = model.config

        def get_image_features(self, *args: object, **kwargs: object) -> torch.Tensor:
            output = self.model.get_image_features(*args, **kwargs)
            return output if isinstance(output, torch.Tensor) else output.pooler_output

        def get_text_features(self, *args: object, **kwargs: object) -> torch.Tensor:
            output = self.model.get_text_features(*args, **kwargs)
            return output if isinstance(output, torch.Tensor) else output.pooler_output

    def load() -> tuple[TensorFeatures, CLIPProcessor]:
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        return TensorFeatures(model), CLIPProcessor.from_pretrained(folder, local_files_only=True)

    metric = CLIPScore(model_name_or_path=load)
    reference = []
    for sample_id, (name, caption) in zip(audit.samples.index, captions, strict=True):
        assert audit.samples.loc[sample_id, "caption"] == caption
        metric.reset()
        score = metric(torch.from_numpy(chips[name]), caption)
        reference.append(score.detach().item() / 40.0)  # torchmetrics scales by 100, Hessel by 2.5

    np.testing.assert_allclose(ours.to_numpy(), np.array(reference), atol=1e-4)
    # Clamped pairs agree trivially, so most pairs must have a positive cosine, and
    # one clamped pair checks the clamp.
    assert (np.array(reference) > 0).sum() >= 6
    assert (np.array(reference) == 0).sum() >= 1


def test_multispectral_backend_on_real_geotiffs(
    tmp_path: Path, shared_data: Path, rules: dict
) -> None:
    import open_clip

    config = tiny_open_clip_config(tmp_path, "tiny-ms-clip", image_size=224, patch=32)
    open_clip.add_model_config(config)
    torch.manual_seed(1)
    model = open_clip.create_model("tiny-ms-clip", pretrained=None)
    model.visual.conv1 = torch.nn.Conv2d(10, 32, kernel_size=32, stride=32, bias=False)
    # The layout of IBM's MS-CLIP Lightning checkpoint: the CLIP module under
    # clip_base_model.model, copies under the encoder wrappers, a temperature.
    state = {f"clip_base_model.model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"text_encoder.model.{k}": v for k, v in model.state_dict().items()})
    state["temperature"] = torch.tensor(0.07)
    checkpoint = tmp_path / "Llama3_MS_CLIP_weights.pt"
    torch.save(state, checkpoint)

    folder = tmp_path / "ms"
    folder.mkdir()
    sources = sorted((shared_data / "terramesh-examples" / "S2L2A").glob("*.tif"))
    for source in sources:
        shutil.copy(source, folder / source.name)
    pd.DataFrame(
        {"file": [s.name for s in sources], "caption": ["farmland and forest"] * len(sources)}
    ).to_csv(folder / "captions.csv", index=False)

    spec = ModelSpec("multispectral", str(config), checkpoint)
    backend = load_backend(spec, rules, "cpu")
    assert backend.modality == "multispectral"
    transform = backend.transform(rules)

    with rasterio.open(sources[0]) as source:
        raw = source.read()
    assert raw.shape[0] == 12
    mean = np.array(rules["multispectral"]["bands_10"]["mean"], dtype=np.float32)
    std = np.array(rules["multispectral"]["bands_10"]["std"], dtype=np.float32)
    expected = (raw[MS_CLIP_BANDS].astype(np.float32) + 1000 - mean[:, None, None]) / std[
        :, None, None
    ]
    pixels = transform(raw, str(sources[0]))
    np.testing.assert_allclose(pixels.numpy(), expected, rtol=1e-5, atol=1e-5)

    model.eval()
    with torch.no_grad():
        direct = torch.nn.functional.normalize(
            model.encode_image(torch.from_numpy(expected)[None]), dim=-1
        )[0]
    np.testing.assert_allclose(backend.encode_images(pixels[None])[0], direct.numpy(), atol=1e-5)

    dataset = read_dataset(folder, ReadOptions(format="geotiff-dir"))
    audit = run_audit(
        dataset,
        AuditOptions(
            analyzers=["alignment"],
            analyzer_options={
                "clip_multispectral_checkpoint": str(checkpoint),
                "clip_model": str(config),
                "device": "cpu",
                "decode_workers": 0,
            },
        ),
    )
    metrics = audit.result.metrics
    assert metrics["alignment.pairs_scored"].value == len(sources)
    assert audit.samples["alignment.cosine"].between(-1, 1).all()


def _multispectral_checkpoint(folder: Path, name: str) -> tuple[Path, Path, torch.nn.Module]:
    import open_clip

    config = tiny_open_clip_config(folder, name, image_size=224, patch=32)
    open_clip.add_model_config(config)
    torch.manual_seed(4)
    model = open_clip.create_model(name, pretrained=None)
    model.visual.conv1 = torch.nn.Conv2d(10, 32, kernel_size=32, stride=32, bias=False)
    checkpoint = folder / f"{name}.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint, model.eval()


def test_multispectral_zarr_chips_are_cropped(tmp_path: Path, rules: dict) -> None:
    rng = np.random.default_rng(5)
    bands = rng.integers(0, 6000, (2, 2, 12, 264, 264), dtype=np.int16)
    refs = write_zarr_zip(tmp_path / "ssl4eos12_val_seasonal_data_000001.zarr.zip", bands)
    config, checkpoint, model = _multispectral_checkpoint(tmp_path, "tiny-zarr-clip")
    table = tmp_path / "captions.csv"
    pd.DataFrame(
        {
            "sample_id": [f"z{i}" for i in range(4)],
            "caption": ["fields", "forest", "town", "lake"],
            "image": refs,
        }
    ).to_csv(table, index=False)
    dataset = read_dataset(table, ReadOptions(format="table"))

    spec = ModelSpec("multispectral", str(config), checkpoint)
    backend = load_backend(spec, rules, "cpu")
    mean = np.array(rules["multispectral"]["bands_10"]["mean"], dtype=np.float32)[:, None, None]
    std = np.array(rules["multispectral"]["bands_10"]["std"], dtype=np.float32)[:, None, None]
    # Zarr chips keep the L2A offset that the statistics include: nothing is added.
    centre = bands[1, 0][MS_CLIP_BANDS, 20:244, 20:244].astype(np.float32)
    expected = (centre - mean) / std
    pixels = backend.transform(rules)(bands[1, 0], refs[2])
    np.testing.assert_allclose(pixels.numpy(), expected, rtol=1e-5, atol=1e-5)

    audit = run_audit(
        dataset,
        AuditOptions(
            analyzers=["alignment"],
            analyzer_options={
                "clip_multispectral_checkpoint": str(checkpoint),
                "clip_model": str(config),
                "device": "cpu",
                "decode_workers": 1,
            },
        ),
    )
    with torch.no_grad():
        image = torch.nn.functional.normalize(
            model.encode_image(torch.from_numpy(expected)[None]), dim=-1
        )
    assert audit.result.metrics["alignment.pairs_scored"].value == 4
    scored = audit.samples.set_index("sample_id")["alignment.cosine"]
    text = torch.nn.functional.normalize(
        model.encode_text(__import__("open_clip").get_tokenizer("tiny-zarr-clip")(["town"])), dim=-1
    )
    assert scored["z2"] == pytest.approx(float(text[0] @ image[0]), abs=1e-5)


def test_forked_loader_workers_reopen_zarr_zip(tmp_path: Path) -> None:
    """DataLoader workers fork after the parent has read a chip (as the thumbnails do).

    They inherit its open Zarr Zip. Reading through that shared file from two
    processes mixed up bytes, which zipfile reported as a bad CRC.
    """
    bands = np.random.default_rng(8).integers(0, 6000, (16, 4, 12, 96, 96), dtype=np.int16)
    refs = write_zarr_zip(tmp_path / "ssl4eos12_val_seasonal_data_000001.zarr.zip", bands)
    transform = ChipTransform("multispectral", (0.0,) * 10, (1.0,) * 10, image_size=96)
    np.testing.assert_array_equal(read_chip(refs[5]), bands[1, 1])

    batches = list(chip_loader(ChipDataset(refs, transform), batch_size=4, workers=2))

    assert [error for batch in batches for error in batch["errors"].values()] == []
    pixels = torch.cat([batch["pixels"] for batch in batches]).numpy()
    expected = bands.reshape(64, 12, 96, 96)[:, MS_CLIP_BANDS].astype(np.float32)
    np.testing.assert_array_equal(pixels, expected)


def test_zarr_zip_without_bands_is_named(tmp_path: Path) -> None:
    import zarr
    from zarr.storage import ZipStore

    path = tmp_path / "ssl4eos12_val_seasonal_data_000001.zarr.zip"
    store = ZipStore(path, mode="w")
    zarr.open_group(store, mode="w", zarr_format=2).create_array(
        "sample_id", data=np.array([["0000000_0"]])
    )
    store.close()
    ref = f"zarr-zip://{path}?sample=0000000&time=0"

    with pytest.raises(InputError, match=r"000001\.zarr\.zip: missing 'bands' array"):
        read_chip(ref)


def test_chip_transform_crops_centre_of_264_chip() -> None:
    chip = np.arange(3 * 264 * 264, dtype=np.int64).reshape(3, 264, 264)
    cropped = centre_crop(chip, 224)
    np.testing.assert_array_equal(cropped, chip[:, 20:244, 20:244])

    rgb = (np.arange(3 * 264 * 264) % 256).astype(np.uint8).reshape(3, 264, 264)
    transform = ChipTransform("rgb", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), image_size=224)
    pixels = transform(rgb, "chip.tif").numpy()
    expected = (rgb[:, 20:244, 20:244].astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(pixels, expected, rtol=1e-6, atol=1e-6)


def test_chip_transform_rejects_wrong_band_count() -> None:
    transform = ChipTransform("multispectral", (0.0,) * 10, (1.0,) * 10)
    with pytest.raises(InputError, match=r"x\.tif: chip has 4 band\(s\)"):
        transform(np.zeros((4, 16, 16), np.int16), "x.tif")


def test_open_clip_checkpoint_loads(tmp_path: Path, rules: dict) -> None:
    import open_clip

    config = tiny_open_clip_config(tmp_path, "tiny-rgb-clip")
    open_clip.add_model_config(config)
    torch.manual_seed(2)
    model = open_clip.create_model("tiny-rgb-clip", pretrained=None).eval()
    checkpoint = tmp_path / "weights.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)

    spec = ModelSpec.from_options({"clip_model": str(config), "clip_checkpoint": str(checkpoint)})
    assert spec is not None
    backend = load_backend(spec, rules, "cpu")
    tokenizer = open_clip.get_tokenizer("tiny-rgb-clip")
    with torch.no_grad():
        direct = torch.nn.functional.normalize(model.encode_text(tokenizer(["a lake"])), dim=-1)
    np.testing.assert_allclose(backend.encode_texts(["a lake"]), direct.numpy(), atol=1e-6)
    # "field" is one BPE token, plus the start and end tokens.
    assert backend.token_counts(["field " * 100]) == [102]
    assert backend.context_length == 77


def test_bf16_autocast_embeddings_match_fp32(tmp_path: Path, rules: dict) -> None:
    """The mixed-precision path gives nearly the float32 embeddings.

    The CLI allows bf16 only on a GPU. Here the same autocast code runs on
    the CPU, which torch supports for bf16, so the path is exercised without one.
    """
    import dataclasses

    import open_clip

    config = tiny_open_clip_config(tmp_path, "tiny-bf16-clip")
    open_clip.add_model_config(config)
    torch.manual_seed(4)
    model = open_clip.create_model("tiny-bf16-clip", pretrained=None).eval()
    checkpoint = tmp_path / "weights.pt"
    torch.save(model.state_dict(), checkpoint)
    backend = load_backend(ModelSpec("open_clip", str(config), checkpoint), rules, "cpu")
    mixed = dataclasses.replace(backend, autocast_dtype=torch.bfloat16)
    pixels = torch.randn(4, 3, backend.image_size, backend.image_size)
    texts = ["a lake", "fields and a river", "a town", "snow on mountains"]

    full_images, mixed_images = backend.encode_images(pixels), mixed.encode_images(pixels)
    full_texts, mixed_texts = backend.encode_texts(texts), mixed.encode_texts(texts)

    assert mixed_images.dtype == np.float32
    assert mixed_texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mixed_images, axis=1), 1.0, atol=1e-5)
    # bf16 rounding changes the values, which shows that autocast took effect.
    assert not np.array_equal(mixed_images, full_images)
    assert (mixed_images * full_images).sum(axis=1).min() > 0.99
    assert (mixed_texts * full_texts).sum(axis=1).min() > 0.99


def test_missing_checkpoint_names_file(tmp_path: Path, rules: dict) -> None:
    spec = ModelSpec("open_clip", "ViT-B-16", tmp_path / "absent.pt")
    with pytest.raises(
        InputError, match=r"--clip-checkpoint .*absent\.pt: checkpoint file not found"
    ):
        load_backend(spec, rules, "cpu")


def test_hub_architecture_is_rejected(tmp_path: Path, rules: dict) -> None:
    file = tmp_path / "w.pt"
    file.write_bytes(b"")
    spec = ModelSpec("open_clip", "hf-hub:org/model", file)
    with pytest.raises(UsageError, match="built-in OpenCLIP architecture name"):
        load_backend(spec, rules, "cpu")


def test_unknown_architecture_is_rejected(tmp_path: Path, rules: dict) -> None:
    file = tmp_path / "w.pt"
    file.write_bytes(b"")
    spec = ModelSpec("open_clip", "ViT-Q-99", file)
    with pytest.raises(UsageError, match="unknown OpenCLIP architecture"):
        load_backend(spec, rules, "cpu")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"clip_checkpoint": "a.pt"}, "needs --clip-model"),
        ({"clip_model": "ViT-B-16"}, "needs --clip-checkpoint"),
        ({"clip_checkpoint": "a.pt", "clip_hf_folder": "m"}, "give one CLIP model"),
        ({"clip_hf_folder": "m", "clip_model": "ViT-B-16"}, "does not apply"),
    ],
)
def test_model_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ModelSpec.from_options(options)


def test_cuda_device_needs_gpu() -> None:
    from eoaudit.clip_backends import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(UsageError, match="torch finds no CUDA GPU"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize(
    ("cores", "device", "expected"),
    [(32, "cuda", 16), (32, "cpu", 4), (2, "cuda", 1), (1, "cpu", 0)],
)
def test_loader_workers_default_per_device(
    monkeypatch: pytest.MonkeyPatch, cores: int, device: str, expected: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert loader_workers({}, device) == expected
    assert loader_workers({"decode_workers": 3}, device) == 3


def test_negative_loader_workers_are_rejected() -> None:
    with pytest.raises(UsageError, match=r"--loader-workers\) must be 0 or more, got -1"):
        loader_workers({"decode_workers": -1}, "cpu")
