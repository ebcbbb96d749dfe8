"""Default option values from `eoaudit.toml` or the `[tool.eoaudit]` table of pyproject.toml.

Keys are the long option names of `eoaudit run`, with dashes or underscores
(`chunk-size = 5000`, `on_bad_rows = "error"`). Options given on the command
line win over the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from eoaudit.errors import InputError

CONFIG_FILE = "eoaudit.toml"


def find_config(start: Path) -> Path | None:
    """Return `eoaudit.toml`, or a pyproject.toml with `[tool.eoaudit]`, in `start`."""
    candidate = start / CONFIG_FILE
    if candidate.is_file():
        return candidate
    pyproject = start / "pyproject.toml"
    if pyproject.is_file() and "eoaudit" in _read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def load_config(path: Path, allowed: dict[str, str]) -> dict[str, Any]:
    """Read option defaults from a config file.

    Args:
        path: `eoaudit.toml` (options at the top level) or a pyproject.toml
            (options under `[tool.eoaudit]`).
        allowed: Long option names with underscores (`chunk_size`), mapped to
            the parameter names they set.

    Raises:
        InputError: When the file is not valid TOML or sets an unknown option.
    """
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("eoaudit", {})
    options = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in allowed:
            raise InputError(
                f"{path}: unknown option {key!r}; allowed: "
                f"{', '.join(sorted(n.replace('_', '-') for n in allowed))}"
            )
        options[allowed[name]] = value
    return options


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: invalid TOML ({error})") from None
