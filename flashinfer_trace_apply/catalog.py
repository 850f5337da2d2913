"""Read a curated solution folder from disk.

A curated folder holds ``solutions/**/*.json`` (one Solution per file, at most
one per definition) and optionally ``definitions/**/*.json`` (FlashInfer-Bench
Definition JSON). This runs once at configuration time, so it favours plain,
strict code with errors that name the files involved over speed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, DuplicateSolutionError
from .solution import Solution

__all__ = ["load_solutions", "load_definitions"]


def _existing_folder(path: str | os.PathLike[str]) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise ConfigError(f"solution folder {root} does not exist")
    if not root.is_dir():
        raise ConfigError(f"solution folder {root} is not a directory")
    return root


def _json_files(folder: Path) -> list[Path]:
    # Sorted so that which file is "first" in a duplicate error, and the
    # order of the result, do not depend on the file system.
    return sorted(p for p in folder.rglob("*.json") if p.is_file())


def load_solutions(path: str | os.PathLike[str]) -> dict[str, Solution]:
    """Load every ``<path>/solutions/**/*.json``, keyed by definition name."""
    root = _existing_folder(path)
    folder = root / "solutions"
    if not folder.is_dir():
        raise ConfigError(
            f"solution folder {root} has no 'solutions' subdirectory "
            f"(expected {folder} holding one Solution JSON file per definition)"
        )
    found: dict[str, Solution] = {}
    origin_of: dict[str, Path] = {}
    for file in _json_files(folder):
        solution = Solution.from_json_file(file)
        previous = origin_of.get(solution.definition)
        if previous is not None:
            raise DuplicateSolutionError(solution.definition, previous, file)
        found[solution.definition] = solution
        origin_of[solution.definition] = file
    return found


def load_definitions(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Load optional ``<path>/definitions/**/*.json``, keyed by ``name``.

    Definitions are kept as plain dicts: this package only needs a few fields
    of them, and FlashInfer-Bench evolves that schema independently.
    """
    root = _existing_folder(path)
    folder = root / "definitions"
    if not folder.is_dir():
        return {}
    found: dict[str, dict[str, Any]] = {}
    origin_of: dict[str, Path] = {}
    for file in _json_files(folder):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{file}: is not valid JSON: line {exc.lineno} column "
                f"{exc.colno}: {exc.msg}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{file}: cannot be read: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(
                f"{file}: a definition must be a JSON object "
                f"(got {type(data).__name__})"
            )
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{file}: name must be a non-empty string")
        previous = origin_of.get(name)
        if previous is not None:
            raise ConfigError(
                f"two definitions named '{name}': {previous} and {file}"
            )
        found[name] = data
        origin_of[name] = file
    return found
