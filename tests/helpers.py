"""Builders shared by the tests: files in the real layouts, written into tmp folders."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyproj
import zarr
from zarr.storage import LocalStore


def write_ssl4eo_zarr_zip(
    path: Path,
    locations: list[str],
    centres: list[tuple[float, float]],
    epsg_codes: list[int],
    times: np.ndarray,
    cloud_masks: np.ndarray | None = None,
    bands: int = 12,
    size: int = 16,
) -> None:
    """Write a Zarr format 2 zip in the SSL4EO-S12 v1.1 layout that xarray produces.

    Variables: bands (sample, time, band, y, x) int16, center_lat, center_lon,
    crs, sample_id (`<location>_<t>`), time_ (datetime64[ns]), cloud_mask
    (sample, time, y, x) uint8, and the pixel-centre coordinates x_, y_ of a
    `size` x `size` chip of 10 m pixels centred on each location.
    """
    count = len(locations)
    folder = Path(tempfile.mkdtemp(prefix="zarr-", dir=path.parent))
    group = zarr.open_group(LocalStore(folder), mode="w", zarr_format=2)

    def array(name: str, data: np.ndarray, dims: list[str]) -> None:
        created = group.create_array(
            name, shape=data.shape, dtype=data.dtype, attributes={"_ARRAY_DIMENSIONS": dims}
        )
        created[...] = data

    rng = np.random.default_rng(7)
    array(
        "bands",
        rng.integers(0, 10000, size=(count, 4, bands, size, size), dtype=np.int16),
        ["sample", "time", "band", "y", "x"],
    )
    array("center_lat", np.array([c[0] for c in centres]), ["sample"])
    array("center_lon", np.array([c[1] for c in centres]), ["sample"])
    array("crs", np.array(epsg_codes, dtype=np.int64), ["sample"])
    ids = np.array([[f"{loc}_{t}" for t in range(4)] for loc in locations], dtype="<U9")
    array("sample_id", ids, ["sample", "time"])
    array("time_", times.astype("datetime64[ns]"), ["sample", "time"])
    if cloud_masks is not None:
        array("cloud_mask", cloud_masks.astype(np.uint8), ["sample", "time", "y", "x"])

    xs = np.zeros((count, size))
    ys = np.zeros((count, size))
    for i, ((lat, lon), epsg) in enumerate(zip(centres, epsg_codes, strict=True)):
        x, y = pyproj.Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
        offsets = (np.arange(size) - (size - 1) / 2) * 10.0
        xs[i] = x + offsets
        ys[i] = y - offsets
    array("x_", xs, ["sample", "x"])
    array("y_", ys, ["sample", "y"])
    zarr.consolidate_metadata(group.store)

    # Zip the folder so that every key is stored once, as in the published files.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())
    shutil.rmtree(folder)
