"""CLIP models loaded from local files, behind one interface for the alignment analyzer.

Three kinds of model, each given by options (nothing is ever downloaded):

- `open_clip`: an OpenCLIP architecture (`clip_model`, a built-in name such as
  `ViT-B-16` or a JSON model config file) with weights from `clip_checkpoint`.
- `hf`: a Hugging Face transformers CLIP saved with `save_pretrained` in the
  folder `clip_hf_folder` (config, weights, tokenizer and image processor files).
- `multispectral`: a Llama3-MS-CLIP-style model, an OpenCLIP architecture
  (`clip_model`, default `ViT-B-16`) whose patch embedding takes 10 or 12
  Sentinel-2 L2A bands, from `clip_multispectral_checkpoint`. The checkpoint
  may be a plain OpenCLIP state dict or the state dict of IBM's MS-CLIP
  Lightning module (keys under `clip_base_model.model.`).

This module needs torch; the analyzer imports it only after checking that torch is installed.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from eoaudit.chip_loading import ChipDataset, ChipTransform, Modality, chip_loader
from eoaudit.errors import InputError, MissingDependencyError, UsageError

logger = logging.getLogger(__name__)

BackendKind = Literal["open_clip", "hf", "multispectral"]
DEFAULT_MULTISPECTRAL_ARCHITECTURE = "ViT-B-16"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Prefixes of the MS-CLIP Lightning checkpoint. The text and image encoder
# wrappers hold the same CLIP module again, so their copies are dropped.
_MS_CLIP_PREFIX = "clip_base_model.model."
_MS_CLIP_DUPLICATES = ("text_encoder.model.", "image_encoder.model.")
_WRAPPER_PREFIXES = ("module.", "model.")


@dataclass(frozen=True)
class ModelSpec:
    """A model to load and its local file or folder.

    Attributes:
        kind: `open_clip`, `hf` or `multispectral`.
        architecture: OpenCLIP architecture name or JSON config path; None for `hf`.
        path: Checkpoint file, or the Hugging Face folder.
    """

    kind: BackendKind
    architecture: str | None
    path: Path

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ModelSpec | None:
        """Build the spec from analyzer options, or return None when no model is given.

        Raises:
            UsageError: When options name more than one model, or a checkpoint
                without its architecture.
        """
        checkpoint = options.get("clip_checkpoint")
        hf_folder = options.get("clip_hf_folder")
        multispectral = options.get("clip_multispectral_checkpoint")
        architecture = options.get("clip_model")
        given = [
            name
            for name, value in (
                ("--clip-checkpoint", checkpoint),
                ("--clip-hf-folder", hf_folder),
                ("--clip-multispectral-checkpoint", multispectral),
            )
            if value
        ]
        if len(given) > 1:
            raise UsageError(f"give one CLIP model, not {' and '.join(given)}")
        if hf_folder:
            if architecture:
                raise UsageError(
                    "--clip-model does not apply to --clip-hf-folder; the folder's config.json "
                    "sets the architecture"
                )
            return cls("hf", None, Path(hf_folder))
        if multispectral:
            return cls(
                "multispectral",
                str(architecture or DEFAULT_MULTISPECTRAL_ARCHITECTURE),
                Path(multispectral),
            )
        if checkpoint:
            if not architecture:
                raise UsageError(
                    "--clip-checkpoint needs --clip-model, the OpenCLIP architecture of the "
                    "checkpoint (e.g. ViT-B-16)"
                )
            return cls("open_clip", str(architecture), Path(checkpoint))
        if architecture:
            raise UsageError(
                f"--clip-model {architecture} needs --clip-checkpoint FILE with its weights; "
                "eoaudit never downloads weights"
            )
        return None

    def cache_key(self) -> str:
        """Return a key that changes when the model files change (path, size, mtime)."""
        parts = [self.kind, self.architecture or ""]
        files = sorted(self.path.rglob("*")) if self.path.is_dir() else [self.path]
        for file in files:
            if file.is_file():
                stat = file.stat()
                parts.append(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        if self.architecture and self.architecture.endswith(".json"):
            parts.append(Path(self.architecture).read_text(encoding="utf-8"))
        return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:20]


@dataclass
class ClipBackend:
    """A loaded CLIP model with its tokenizer and input settings.

    Attributes:
        spec: The model's spec.
        modality: `rgb` or `multispectral` input.
        image_size: Side of the square model input, pixels.
        context_length: Text tokens the model reads, start and end tokens included;
            longer captions are truncated.
        mean: Per-band input mean, after the transform's scaling.
        std: Per-band input standard deviation.
        device: Where the model runs.
        autocast_dtype: Mixed-precision type on GPU, None for float32.
        ms_positions: Band positions of a 12-band chip a multispectral model takes.
        encode_image_fn: Maps a normalised pixel batch to image features.
        encode_text_fn: Maps captions to text features (truncating them).
        token_count_fn: Maps captions to token counts without truncation.
    """

    spec: ModelSpec
    modality: Modality
    image_size: int
    context_length: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    autocast_dtype: torch.dtype | None
    encode_image_fn: Callable[[torch.Tensor], torch.Tensor]
    encode_text_fn: Callable[[list[str]], torch.Tensor]
    token_count_fn: Callable[[list[str]], list[int]]
    ms_positions: tuple[int, ...] = ()
    modules: list[torch.nn.Module] = field(default_factory=list)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Return unit-length float32 image embeddings of a normalised batch."""
        pixels = pixels.to(self.device, non_blocking=True)
        with self._autocast():
            features = self.encode_image_fn(pixels)
        return F.normalize(features.float(), dim=-1).cpu().numpy()

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Return unit-length float32 text embeddings; captions over the context are truncated."""
        with self._autocast():
            features = self.encode_text_fn(texts)
        return F.normalize(features.float(), dim=-1).cpu().numpy()

    def token_counts(self, texts: list[str]) -> list[int]:
        """Return each caption's token count, start and end tokens included."""
        return self.token_count_fn(texts)

    def transform(self, rules: dict[str, Any]) -> ChipTransform:
        """Build the chip transform for this model from the alignment rules."""
        multispectral = rules.get("multispectral", {})
        offsets = multispectral.get("offset", {})
        rgb = rules.get("rgb", {})
        return ChipTransform(
            modality=self.modality,
            mean=self.mean,
            std=self.std,
            image_size=self.image_size,
            crop_size=int(rules.get("crop_size", 224)),
            ms_positions=self.ms_positions or (1, 2, 3, 4, 5, 6, 7, 8, 10, 11),
            ms_offset_zarr=float(offsets.get("zarr", 0)),
            ms_offset_file=float(offsets.get("geotiff", 1000)),
            rgb_l2a_bands=tuple(int(b) for b in rgb.get("l2a_bands", (3, 2, 1))),
            rgb_l2a_divisor=float(rgb.get("l2a_divisor", 3000)),
        )


def resolve_device(name: str) -> torch.device:
    """Turn `auto`, `cpu` or `cuda` into a device.

    Raises:
        UsageError: On another name, or `cuda` without a CUDA GPU.
    """
    if name not in DEVICES:
        raise UsageError(f"--device {name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was given, but torch finds no CUDA GPU; use --device cpu")
    return torch.device(name)


def resolve_autocast(device: torch.device, precision: str) -> torch.dtype | None:
    """Return the autocast type for a device: bf16 or fp16 on GPU when `auto`, else float32.

    Raises:
        UsageError: On an unknown precision, or bf16/fp16 asked for on the CPU.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision != "auto":
            raise UsageError(f"--precision {precision} needs a CUDA GPU; use fp32 on the CPU")
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


_LOADED: dict[tuple[str, str, str, str], ClipBackend] = {}


def load_backend(
    spec: ModelSpec, rules: dict[str, Any], device: str = "auto", precision: str = "auto"
) -> ClipBackend:
    """Load a model once per process and return it; later calls reuse it.

    Args:
        spec: The model to load.
        rules: The alignment rules (multispectral band statistics).
        device: `auto`, `cpu` or `cuda`.
        precision: `auto`, `fp32`, `bf16` or `fp16`.

    Raises:
        InputError: When a model file is missing or does not fit the architecture.
        UsageError: On an unknown architecture, device or precision.
        MissingDependencyError: When open_clip or transformers is not installed.
    """
    torch_device = resolve_device(device)
    dtype = resolve_autocast(torch_device, precision)
    key = (spec.cache_key(), str(torch_device), str(dtype), repr(rules.get("multispectral")))
    if key in _LOADED:
        return _LOADED[key]

    if spec.kind == "hf":
        backend = _load_hf(spec, torch_device, dtype)
    else:
        backend = _load_open_clip(spec, torch_device, dtype, rules)
    # Keep one model at a time: CLIP models are hundreds of MB each.
    _LOADED.clear()
    _LOADED[key] = backend
    return backend


def _require_file(path: Path, option: str, what: str) -> None:
    if not path.is_file():
        raise InputError(f"{option} {path}: {what} not found; give the path of a local file")


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError:
        raise MissingDependencyError("open_clip_torch", "the alignment analyzer", "clip") from None
    return open_clip


def _open_clip_model(spec: ModelSpec) -> tuple[Any, str]:
    """Create the architecture with random weights; nothing is downloaded."""
    open_clip = _import_open_clip()
    architecture = str(spec.architecture)
    if architecture.startswith(("hf-hub:", "local-dir:")):
        raise UsageError(
            f"--clip-model {architecture}: give a built-in OpenCLIP architecture name or a "
            "JSON model config file, and the weights with a checkpoint option"
        )
    name = architecture
    if architecture.endswith(".json"):
        config = Path(architecture)
        _require_file(config, "--clip-model", "OpenCLIP model config")
        open_clip.add_model_config(config)
        name = config.stem
    if open_clip.get_model_config(name) is None:
        raise UsageError(
            f"--clip-model {architecture}: unknown OpenCLIP architecture; use a name from "
            "open_clip.list_models() (e.g. ViT-B-16) or a JSON model config file"
        )
    try:
        model = open_clip.create_model(name, pretrained=None, pretrained_text=False)
    except OSError as error:
        # Architectures with a Hugging Face text tower fetch its config from the hub.
        raise InputError(
            f"--clip-model {architecture}: the architecture needs files from the "
            f"Hugging Face hub, which eoaudit does not download ({error})"
        ) from None
    return model, name


def _load_open_clip(
    spec: ModelSpec, device: torch.device, dtype: torch.dtype | None, rules: dict[str, Any]
) -> ClipBackend:
    option = (
        "--clip-multispectral-checkpoint" if spec.kind == "multispectral" else "--clip-checkpoint"
    )
    _require_file(spec.path, option, "checkpoint file")
    open_clip = _import_open_clip()
    model, name = _open_clip_model(spec)

    ms_positions: tuple[int, ...] = ()
    if spec.kind == "multispectral":
        state = _multispectral_state_dict(spec.path)
        channels = _replace_patch_embedding(model, state, spec.path)
        statistics = rules.get("multispectral", {}).get(f"bands_{channels}")
        if statistics is None:
            raise InputError(
                f"{option} {spec.path}: the patch embedding takes {channels} bands; "
                "only 10 (B01 and B09 dropped) or 12 Sentinel-2 L2A bands are supported"
            )
        _load_state(model, state, spec.path, option)
        mean = tuple(float(v) for v in statistics["mean"])
        std = tuple(float(v) for v in statistics["std"])
        ms_positions = tuple(int(p) for p in statistics["positions"])
        modality: Modality = "multispectral"
    else:
        try:
            open_clip.load_checkpoint(model, str(spec.path), strict=True, weights_only=True)
        except (RuntimeError, KeyError, ValueError) as error:
            raise InputError(
                f"{option} {spec.path}: the checkpoint does not fit OpenCLIP {name} ({error})"
            ) from None
        mean = tuple(float(v) for v in model.visual.image_mean)
        std = tuple(float(v) for v in model.visual.image_std)
        modality = "rgb"

    model = model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(name)
    context_length = int(getattr(tokenizer, "context_length", 77))
    size = model.visual.image_size
    image_size = int(size[0] if isinstance(size, tuple | list) else size)

    def encode_text(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(texts).to(device))

    return ClipBackend(
        spec=spec,
        modality=modality,
        image_size=image_size,
        context_length=context_length,
        mean=mean,
        std=std,
        device=device,
        autocast_dtype=dtype,
        encode_image_fn=model.encode_image,
        encode_text_fn=encode_text,
        token_count_fn=_open_clip_token_counter(tokenizer),
        ms_positions=ms_positions,
        modules=[model],
    )


def _open_clip_token_counter(tokenizer: Any) -> Callable[[list[str]], list[int]]:
    from open_clip.tokenizer import SimpleTokenizer

    if isinstance(tokenizer, SimpleTokenizer):
        # encode() gives the BPE tokens without the start and end tokens.
        return lambda texts: [len(tokenizer.encode(text)) + 2 for text in texts]
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is None:
        raise UsageError("the OpenCLIP tokenizer of this architecture cannot count tokens")
    return lambda texts: [len(ids) for ids in inner(texts)["input_ids"]]


def _multispectral_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a multispectral checkpoint and strip the MS-CLIP wrapper prefixes."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError) as error:
        raise InputError(
            f"--clip-multispectral-checkpoint {path}: not a readable PyTorch checkpoint ({error})"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise InputError(
            f"--clip-multispectral-checkpoint {path}: contains no state dict; "
            "pass a checkpoint saved with torch.save(model.state_dict())"
        )
    state: dict[str, torch.Tensor] = {}
    ms_clip = any(key.startswith(_MS_CLIP_PREFIX) for key in loaded)
    for key, value in loaded.items():
        if ms_clip:
            if key.startswith(_MS_CLIP_PREFIX):
                state[key[len(_MS_CLIP_PREFIX) :]] = value
            # The rest is the encoder wrappers' copies and the loss temperature.
            continue
        if key.startswith(_MS_CLIP_DUPLICATES):
            continue
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix) and key[len(prefix) :].startswith(("visual.", "text")):
                key = key[len(prefix) :]
        state[key] = value
    return state


def _replace_patch_embedding(model: Any, state: dict[str, torch.Tensor], path: Path) -> int:
    """Give the vision tower a patch embedding with the checkpoint's band count."""
    weight = state.get("visual.conv1.weight")
    if weight is None or weight.ndim != 4:
        raise InputError(
            f"--clip-multispectral-checkpoint {path}: no visual.conv1.weight; expected an OpenCLIP "
            "ViT state dict or an MS-CLIP checkpoint"
        )
    old = model.visual.conv1
    model.visual.conv1 = torch.nn.Conv2d(
        in_channels=int(weight.shape[1]),
        out_channels=old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        bias=old.bias is not None,
    )
    return int(weight.shape[1])


def _load_state(model: Any, state: dict[str, torch.Tensor], path: Path, option: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise InputError(
            f"{option} {path}: the checkpoint does not fit the architecture; give the "
            f"matching one with --clip-model ({error})"
        ) from None


def _load_hf(spec: ModelSpec, device: torch.device, dtype: torch.dtype | None) -> ClipBackend:
    try:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel
    except ImportError:
        raise MissingDependencyError("transformers", "--clip-hf-folder", "clip") from None
    folder = spec.path
    if not (folder / "config.json").is_file():
        raise InputError(
            f"--clip-hf-folder {folder}: no config.json; give a folder written by "
            "CLIPModel.save_pretrained and CLIPProcessor.save_pretrained"
        )
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise InputError(
            f"--clip-hf-folder {folder}: cannot load the model, tokenizer and image processor "
            f"from the folder; save them with save_pretrained ({error})"
        ) from None
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    config: Any = model.config
    context_length = int(config.text_config.max_position_embeddings)
    image_size = int(config.vision_config.image_size)

    def encode_image(pixels: torch.Tensor) -> torch.Tensor:
        return _features(model.get_image_features(pixel_values=pixels))

    def encode_text(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=context_length,
            return_tensors="pt",
        ).to(device)
        return _features(
            model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
        )

    def count_tokens(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]

    return ClipBackend(
        spec=spec,
        modality="rgb",
        image_size=image_size,
        context_length=context_length,
        mean=tuple(float(v) for v in processor.image_mean),
        std=tuple(float(v) for v in processor.image_std),
        device=device,
        autocast_dtype=dtype,
        encode_image_fn=encode_image,
        encode_text_fn=encode_text,
        token_count_fn=count_tokens,
        modules=[model],
    )


def _features(output: Any) -> torch.Tensor:
    """Return the projected embeddings: transformers 5 wraps them in `pooler_output`."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Yield consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class EmbeddingCache:
    """Embeddings kept on disk between runs, one SQLite file per model.

    Keys are SHA-256 digests of what determines an embedding: the image
    reference and the chip transform settings for images, the text for
    captions and sentences. The model is part of the file name (see
    :meth:`ModelSpec.cache_key`). A None folder disables the cache.
    """

    def __init__(self, folder: Path | None, model_key: str) -> None:
        self.path = None if folder is None else folder / "alignment" / f"{model_key}.sqlite"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS embedding "
                    "(kind TEXT, key TEXT, vector BLOB, PRIMARY KEY (kind, key))"
                )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(str(self.path), timeout=60)

    def get(self, kind: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Return the cached vectors of `keys` that are present."""
        if self.path is None or not keys:
            return {}
        found: dict[str, np.ndarray] = {}
        with closing(self._connect()) as connection:
            for part in batches(list(keys), 500):
                marks = ",".join("?" * len(part))
                rows = connection.execute(
                    f"SELECT key, vector FROM embedding WHERE kind = ? AND key IN ({marks})",
                    (kind, *part),
                )
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, kind: str, vectors: dict[str, np.ndarray]) -> None:
        """Store vectors by key, replacing older ones."""
        if self.path is None or not vectors:
            return
        rows = [(kind, key, np.asarray(v, np.float32).tobytes()) for key, v in vectors.items()]
        with closing(self._connect()) as connection, connection:
            connection.executemany("INSERT OR REPLACE INTO embedding VALUES (?, ?, ?)", rows)


def digest(*parts: str) -> str:
    """Return the SHA-256 hex digest of the parts, joined with NUL."""
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


@dataclass
class ImageEmbeddings:
    """Embeddings of a list of image references, with the ones that failed.

    Attributes:
        vectors: Unit vectors by reference.
        errors: Error message by reference, for chips that could not be read.
        computed: How many were computed now rather than read from the cache.
    """

    vectors: dict[str, np.ndarray]
    errors: dict[str, str]
    computed: int


def embed_images(
    backend: ClipBackend,
    refs: Sequence[str],
    transform: ChipTransform,
    cache: EmbeddingCache,
    batch_size: int,
    workers: int,
    progress: bool | None = None,
) -> ImageEmbeddings:
    """Embed the chips of distinct image references, reading and filling the cache.

    Chips are decoded in `workers` DataLoader processes; a progress bar shows
    images/s (`progress=None` shows it only on a terminal).
    """
    from tqdm import tqdm

    unique = list(dict.fromkeys(refs))
    keys = {ref: digest(transform.settings_key(), ref) for ref in unique}
    cached = cache.get("image", list(keys.values()))
    vectors = {ref: cached[keys[ref]] for ref in unique if keys[ref] in cached}
    missing = [ref for ref in unique if ref not in vectors]
    errors: dict[str, str] = {}
    if not missing:
        return ImageEmbeddings(vectors, errors, 0)

    loader = chip_loader(
        ChipDataset(missing, transform),
        batch_size=batch_size,
        workers=min(workers, len(missing)),
        pin_memory=backend.device.type == "cuda",
    )
    fresh: dict[str, np.ndarray] = {}
    disable = None if progress is None else not progress
    with tqdm(total=len(missing), desc="alignment", unit="image", disable=disable) as bar:
        for batch in loader:
            for index, error in batch["errors"].items():
                errors[missing[index]] = error
            if batch["pixels"] is not None:
                embedded = backend.encode_images(batch["pixels"])
                for index, vector in zip(batch["index"], embedded, strict=True):
                    fresh[missing[index]] = vector
            bar.update(len(batch["index"]) + len(batch["errors"]))
    cache.put("image", {keys[ref]: vector for ref, vector in fresh.items()})
    vectors.update(fresh)
    return ImageEmbeddings(vectors, errors, len(fresh))


def embed_texts(
    backend: ClipBackend, texts: Sequence[str], cache: EmbeddingCache, batch_size: int
) -> dict[str, np.ndarray]:
    """Embed distinct texts, reading and filling the cache; return unit vectors by text."""
    unique = list(dict.fromkeys(texts))
    keys = {text: digest(text) for text in unique}
    cached = cache.get("text", list(keys.values()))
    vectors = {text: cached[keys[text]] for text in unique if keys[text] in cached}
    missing = [text for text in unique if text not in vectors]
    fresh: dict[str, np.ndarray] = {}
    for part in batches(missing, batch_size):
        for text, vector in zip(part, backend.encode_texts(list(part)), strict=True):
            fresh[text] = vector
    cache.put("text", {keys[text]: vector for text, vector in fresh.items()})
    vectors.update(fresh)
    return vectors
