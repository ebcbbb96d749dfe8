"""Reader for the Karpathy caption JSON of RSICD, UCM-captions and Sydney-captions.

The file contains `{"dataset": ..., "images": [{"filename", "imgid", "split",
"sentences": [{"raw", "tokens", "sentid", "imgid"}, ...]}, ...]}`. Each sentence
becomes one sample with id `<imgid>_<sentid>`; `image_id` is the image file
name, which groups the (usually five) captions of one image. These datasets
carry no location or acquisition time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from eoaudit.errors import InputError
from eoaudit.readers.options import ReadOptions
from eoaudit.samples import (
    CAPTION,
    IMAGE,
    IMAGE_ID,
    SAMPLE_ID,
    BadRows,
    SampleSet,
    build_samples,
    empty_caption_finding,
)


def looks_like_karpathy(data: Any) -> bool:
    """Return True for a parsed JSON document in the Karpathy caption layout."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return False
    first = data["images"][0] if data["images"] else {}
    return isinstance(first, dict) and "sentences" in first


def read(path: Path, options: ReadOptions) -> SampleSet:
    """Read a Karpathy caption JSON file into samples.

    Raises:
        InputError: When the file is not valid JSON in this layout.
    """
    data = _load_json(path, options.encoding)
    if not looks_like_karpathy(data):
        raise InputError(
            f"{path}: not a Karpathy caption file (expected an 'images' list whose entries "
            "have 'sentences'); use --format table for other JSON layouts"
        )
    bad_rows = BadRows(str(path), options.on_bad_rows)
    rows = []
    for image_number, image in enumerate(data["images"], start=1):
        filename = image.get("filename")
        image_key = image.get("imgid", image_number - 1)
        for sentence_number, sentence in enumerate(image.get("sentences", []), start=1):
            raw = sentence.get("raw")
            if raw is None and isinstance(sentence.get("tokens"), list):
                raw = " ".join(sentence["tokens"])
            rows.append(
                {
                    SAMPLE_ID: f"{image_key}_{sentence.get('sentid', sentence_number - 1)}",
                    CAPTION: raw if isinstance(raw, str) else "",
                    IMAGE: filename,
                    IMAGE_ID: str(filename if filename is not None else image_key),
                    "imgid": image_key,
                    "sentid": sentence.get("sentid"),
                    "split": image.get("split"),
                    "dataset": data.get("dataset"),
                }
            )
    if not rows:
        raise InputError(f"{path}: the file lists no sentences; there is nothing to audit")
    frame = pd.DataFrame(rows)
    samples = build_samples(frame, geometry=None, source=str(path), bad_rows=bad_rows)
    findings = bad_rows.findings()
    empty = empty_caption_finding(samples)
    if empty:
        findings.append(empty)
    return SampleSet(samples, str(path), "karpathy", len(frame), findings)


def _load_json(path: Path, encoding: str) -> Any:
    try:
        with path.open(encoding=encoding) as handle:
            return json.load(handle)
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path}: byte at offset {error.start} is not valid {encoding}; "
            "re-encode the file as UTF-8 or pass --encoding"
        ) from None
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}, line {error.lineno}, column {error.colno}: invalid JSON ({error.msg})"
        ) from None
