"""Turning chips into model input tensors, and chips into small RGB previews.

A chip is read with :func:`eoaudit.images.read_chip` (Zarr Zip or GeoTIFF),
then :class:`ChipTransform` selects bands, scales the values, crops the centre
and resizes it to the model's input size. :class:`ChipDataset` does this for a
list of `image` references inside DataLoader workers, so decoding runs beside
the model.

This module needs torch; import it only after checking that torch is installed.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from eoaudit.errors import EoauditError, InputError
from eoaudit.images import CHIP_READ_ERRORS, ZarrChipRef, parse_image_ref, read_chip

logger = logging.getLogger(__name__)

Modality = Literal["rgb", "multispectral"]

L2A_BANDS = 12
"""Bands of an SSL4EO-S12 v1.1 / TerraMesh S2L2A chip (B10 is not in L2A)."""


@dataclass(frozen=True)
class ChipTransform:
    """Band selection, scaling, centre crop, resize and normalisation of one chip.

    Attributes:
        modality: `rgb` for 3-band models, `multispectral` for Sentinel-2 band models.
        mean: Per-band mean after scaling, one per model input band.
        std: Per-band standard deviation after scaling.
        image_size: Side of the model's square input in pixels.
        crop_size: Side of the centre crop taken before resizing; a chip
            smaller than it is not cropped.
        ms_positions: Band positions a multispectral model takes from a 12-band chip.
        ms_offset_zarr: Added to multispectral Zarr Zip chips before normalisation.
        ms_offset_file: Added to multispectral GeoTIFF chips before normalisation.
        rgb_l2a_bands: Band positions that make RGB from a 12-band L2A chip.
        rgb_l2a_divisor: L2A value that maps to 1.0 in that RGB.
    """

    modality: Modality
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int = 224
    crop_size: int = 224
    ms_positions: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 10, 11)
    ms_offset_zarr: float = 0.0
    ms_offset_file: float = 1000.0
    rgb_l2a_bands: tuple[int, ...] = (3, 2, 1)
    rgb_l2a_divisor: float = 3000.0

    def settings_key(self) -> str:
        """Return a string that changes whenever the transform's output would."""
        return repr(self)

    def __call__(self, chip: np.ndarray, ref: str) -> torch.Tensor:
        """Turn a `(bands, height, width)` chip into a normalised float32 tensor.

        The chip is cropped before anything is copied, and each step after
        the float32 conversion works in place, so a chip allocates one float32
        array of the output size, or two when it is resized.

        Raises:
            InputError: When the chip's band count does not fit the model.
        """
        pixels = self._select_and_scale(centre_crop(chip, self.crop_size), ref)
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(
                torch.from_numpy(pixels)[None],
                size=(self.image_size, self.image_size),
                mode="bicubic",
                align_corners=False,
                antialias=True,
            )[0].numpy()
        pixels -= np.asarray(self.mean, dtype=np.float32)[:, None, None]
        pixels /= np.asarray(self.std, dtype=np.float32)[:, None, None]
        return torch.from_numpy(pixels)

    def _select_and_scale(self, chip: np.ndarray, ref: str) -> np.ndarray:
        """Return the model's bands of `chip` as a new float32 array on the model's scale."""
        bands = chip.shape[0]
        if self.modality == "multispectral":
            wanted = len(self.ms_positions)
            if bands == L2A_BANDS:
                chip = chip[list(self.ms_positions)]
            elif bands != wanted:
                raise InputError(
                    f"{ref}: chip has {bands} band(s), but the multispectral model takes "
                    f"{wanted} Sentinel-2 L2A bands from a 12-band chip; use the S2L2A chips"
                )
            is_zarr = isinstance(parse_image_ref(ref), ZarrChipRef)
            offset = self.ms_offset_zarr if is_zarr else self.ms_offset_file
            pixels = chip.astype(np.float32)
            pixels += np.float32(offset)
            return pixels

        if bands == 3:
            if chip.dtype != np.uint8:
                raise InputError(
                    f"{ref}: 3-band chip has data type {chip.dtype}, expected 8-bit RGB (uint8)"
                )
            pixels = chip.astype(np.float32)
            pixels /= np.float32(255.0)
            return pixels
        if bands == L2A_BANDS:
            pixels = chip[list(self.rgb_l2a_bands)].astype(np.float32)
            pixels /= np.float32(self.rgb_l2a_divisor)
            return np.clip(pixels, 0.0, 1.0, out=pixels)
        raise InputError(
            f"{ref}: chip has {bands} band(s); an RGB model takes a 3-band 8-bit chip "
            "or a 12-band Sentinel-2 L2A chip"
        )


def centre_crop(chip: np.ndarray, size: int) -> np.ndarray:
    """Crop the central `size` x `size` pixels of a `(bands, height, width)` array.

    A side shorter than `size` is kept whole. When the margin is odd, the
    extra pixel is dropped at the bottom or right.
    """
    height, width = chip.shape[-2:]
    top = max(0, (height - size) // 2)
    left = max(0, (width - size) // 2)
    return chip[..., top : top + min(size, height), left : left + min(size, width)]


def rgb_preview(chip: np.ndarray, size: int, transform: ChipTransform) -> bytes:
    """Make a small true-colour PNG of a chip for the report.

    3-band 8-bit chips are shown as they are. 12-band L2A chips use the RGB
    band positions and divisor of `transform`. Other chips show their first band in grey.
    """
    if chip.shape[0] == 3 and chip.dtype == np.uint8:
        rgb = chip
    elif chip.shape[0] == L2A_BANDS:
        scaled = chip[list(transform.rgb_l2a_bands)].astype(np.float32) / transform.rgb_l2a_divisor
        rgb = (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    else:
        band = chip[0].astype(np.float32)
        low, high = np.nanpercentile(band, [2, 98]) if band.size else (0.0, 1.0)
        grey = np.clip((band - low) / max(high - low, 1e-6), 0.0, 1.0) * 255
        rgb = np.repeat(grey.astype(np.uint8)[None], 3, axis=0)
    image = Image.fromarray(np.ascontiguousarray(np.moveaxis(rgb, 0, -1)))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


class ChipDataset(Dataset[dict[str, Any]]):
    """Chips of a list of `image` references as model input tensors.

    An item is `{"index": i, "pixels": tensor or None, "error": str}`: an
    unreadable chip yields `pixels=None` and the error message instead of
    raising, so one bad file does not stop the run.
    """

    def __init__(self, refs: Sequence[str], transform: ChipTransform) -> None:
        self.refs = list(refs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.refs[index]
        try:
            pixels = self.transform(read_chip(ref), ref)
        except (EoauditError, *CHIP_READ_ERRORS) as error:
            return {"index": index, "pixels": None, "error": str(error)}
        return {"index": index, "pixels": pixels, "error": ""}


def collate_chips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable chips of a batch and keep the errors of the others.

    The stacking is torch's `default_collate`, which in a DataLoader worker
    writes the batch straight into shared memory instead of copying it there
    afterwards.
    """
    good = [item for item in items if item["pixels"] is not None]
    return {
        "index": [item["index"] for item in good],
        "pixels": default_collate([item["pixels"] for item in good]) if good else None,
        "errors": {item["index"]: item["error"] for item in items if item["pixels"] is None},
    }


def chip_loader(
    dataset: ChipDataset, batch_size: int, workers: int, pin_memory: bool = False
) -> DataLoader[dict[str, Any]]:
    """Return a DataLoader that decodes chips in `workers` processes (0: in this one)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_chips,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )
