"""Rule files: user-editable YAML shipped in the package (`eoaudit/rules/`).

A rule file is read from the installed package unless the user gives a folder
of their own (`--rules DIR`); a file of the same name there replaces the
packaged one, and files not there fall back to the packaged ones.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from eoaudit.errors import InputError


def packaged_rule_path(name: str) -> Path:
    """Return the path of a rule file shipped with the package, e.g. `gates`."""
    return Path(str(resources.files("eoaudit.rules").joinpath(f"{name}.yaml")))


def load_yaml(path: Path) -> Any:
    """Parse one YAML file.

    Raises:
        InputError: When the file is missing or not valid YAML.
    """
    if not path.is_file():
        raise InputError(f"{path}: rule file not found")
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: invalid YAML ({error})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; save the rule file as UTF-8") from None


def load_rule(name: str, rules_dir: Path | None = None) -> Any:
    """Load a rule file by name, preferring `rules_dir/<name>.yaml` when it exists."""
    if rules_dir is not None:
        if not rules_dir.is_dir():
            raise InputError(f"--rules {rules_dir}: folder not found")
        candidate = rules_dir / f"{name}.yaml"
        if candidate.is_file():
            return load_yaml(candidate)
    return load_yaml(packaged_rule_path(name))


def load_rules(rules_dir: Path | None = None) -> dict[str, Any]:
    """Load every packaged rule file, each replaced by the user's copy if present."""
    names = sorted(
        Path(entry.name).stem
        for entry in resources.files("eoaudit.rules").iterdir()
        if entry.name.endswith(".yaml")
    )
    return {name: load_rule(name, rules_dir) for name in names}
