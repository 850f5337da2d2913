"""Read a curated solution folder from disk.

A curated folder holds ``solutions/**/*.json`` (one Solution per file, at most
one per definition), optionally ``definitions/**/*.json`` (FlashInfer-Bench
Definition JSON) and optionally ``trace_apply.yaml``, our own rules for the
folder (policy.py): dtypes a definition's inputs may have and where each
solution is routed (``applies_when``). FlashInfer-Bench's trace sets use the
same ``solutions/`` and ``definitions/`` layout (``workloads/`` and
``traces/`` are read by curate, not here); one with several solutions per
definition must be curated first. This runs once at configuration time, so
it favours plain, strict code with errors that name the files involved.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from .errors import ConfigError, DuplicateSolutionError
from .policy import POLICY_FILE, FolderPolicy, PolicyError, load_policy
from .solution import Solution

__all__ = ["load_solutions", "load_definitions", "CuratedSolutions", "UncuratedFolderError", "apply_policy"]


class CuratedSolutions(dict):
    """``{definition: Solution}`` that remembers its folder's rules, so that
    ``enable_apply(load_solutions(path))`` routes exactly as the environment
    hook does with the same folder (``definitions``: the folder's Definition
    JSONs with the policy's dtypes merged in; ``policy``: trace_apply.yaml)."""

    def __init__(self, solutions: Mapping[str, Solution] = (), *, folder: Optional[Path] = None,
                 definitions: Optional[Dict[str, Dict[str, Any]]] = None,
                 policy: Optional[FolderPolicy] = None) -> None:
        super().__init__(solutions)
        self.folder = folder
        self.definitions: Dict[str, Dict[str, Any]] = definitions or {}
        self.policy = policy or FolderPolicy()


class UncuratedFolderError(DuplicateSolutionError):
    """A folder (a FlashInfer-Bench trace set, typically) with several
    solutions for some definition: routing needs exactly one."""

    def __init__(self, folder: str | os.PathLike[str], groups: Mapping[str, List[str]]) -> None:
        self.folder = os.fspath(folder)
        self.groups = {k: [os.fspath(p) for p in v] for k, v in groups.items()}
        self.definition, files = next(iter(self.groups.items()))
        self.first, self.second = files[0], files[1]
        words = {2: "two", 3: "three"}
        shown = [f"{words.get(len(paths), len(paths))} solutions for definition '{name}': {', '.join(paths)}"
                 for name, paths in list(self.groups.items())[:3]]
        more = len(self.groups) - len(shown)
        ConfigError.__init__(
            self,
            f"{self.folder} is not curated ({'; '.join(shown)}{f'; and {more} more definitions' if more else ''}); "
            f"routing needs exactly one solution per definition: pick them with "
            f"'flashinfer-trace-apply curate {self.folder} -o CURATED' (or keep one file per definition)",
        )

    def __reduce__(self):  # type: ignore[override]
        return (type(self), (self.folder, self.groups))


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


def read_solution_files(path: str | os.PathLike[str]) -> Dict[str, List[tuple]]:
    """Every ``solutions/**/*.json`` as ``{definition: [(file, Solution), ...]}``
    (several per definition allowed: a trace set, as curate reads it)."""
    root = _existing_folder(path)
    folder = root / "solutions"
    if not folder.is_dir():
        raise ConfigError(
            f"solution folder {root} has no 'solutions' subdirectory "
            f"(expected {folder} holding one Solution JSON file per definition)"
        )
    found: Dict[str, List[tuple]] = {}
    for file in _json_files(folder):
        solution = Solution.from_json_file(file)
        found.setdefault(solution.definition, []).append((file, solution))
    return found


def load_solutions(path: str | os.PathLike[str]) -> CuratedSolutions:
    """Load every ``<path>/solutions/**/*.json``, keyed by definition name,
    with the folder's rules applied (its Definitions and trace_apply.yaml):
    see :class:`CuratedSolutions`."""
    from .calling_style import resolve  # noqa: PLC0415

    root = _existing_folder(path)
    files = read_solution_files(root)
    several = {name: [f for f, _ in entries] for name, entries in files.items() if len(entries) > 1}
    if several:
        raise UncuratedFolderError(root, several)
    definitions = load_definitions(root)
    policy = load_policy(root)
    found = CuratedSolutions(folder=root, definitions=definitions, policy=policy)
    decided: List[str] = []
    for name, [(file, solution)] in files.items():
        solution, note = resolve(solution, definitions.get(name), origin=file)
        if note:
            decided.append(note)
        found[name] = apply_policy(solution, policy)
    if decided:
        from .warn import warn  # noqa: PLC0415

        warn(
            f"{root}: destination_passing_style not stated, decided from the entry point's parameters "
            f"(inputs only: value-returning; inputs then outputs: destination-passing, as FlashInfer-Bench "
            f"does): {', '.join(decided)}",
            stacklevel=3,
        )
    return found


def apply_policy(solution: Solution, policy: FolderPolicy) -> Solution:
    """The solution with the policy's ``applies_when`` added to its own
    (older folders keep theirs in ``spec.applies_when``)."""
    extra = [t for t in policy.get(solution.definition).applies_when if t not in solution.spec.applies_when]
    if not extra:
        return solution
    return replace(solution, spec=replace(solution.spec, applies_when=(*solution.spec.applies_when, *extra)))


def _merge_dtypes(definitions: Dict[str, Dict[str, Any]], policy: FolderPolicy) -> None:
    """Each Definition input the policy names gets the policy's dtype list
    (the Definition's own file keeps one dtype, as its schema says)."""
    for name, rules in policy.definitions.items():
        if not rules.dtypes:
            continue
        definition = definitions.get(name)
        if definition is None:
            # Without the Definition's inputs the dtypes could not be
            # checked, and the solution would route every dtype.
            raise PolicyError(
                f"{policy.where(name, 'dtypes')}: definitions.{name}.dtypes: the folder has no Definition "
                f"named '{name}' in definitions/ to apply them to"
            )
        inputs = definition.get("inputs") if isinstance(definition.get("inputs"), dict) else {}
        for input_name, dtypes in rules.dtypes.items():
            if input_name not in inputs:
                raise PolicyError(
                    f"{policy.where(name, 'dtypes')}: definitions.{name}.dtypes.{input_name}: the definition "
                    f"has no input '{input_name}' (inputs: {', '.join(inputs) or 'none'})"
                )
            inputs[input_name] = {**(inputs[input_name] or {}), "dtype": list(dtypes)}


def load_definitions(path: str | os.PathLike[str], *, with_policy: bool = True) -> dict[str, dict[str, Any]]:
    """Load optional ``<path>/definitions/**/*.json``, keyed by ``name``,
    with the dtypes of the folder's ``trace_apply.yaml`` merged in (unless
    ``with_policy`` is False: the files as they are).

    Definitions are kept as plain dicts: this package only needs a few fields
    of them, and FlashInfer-Bench evolves that schema independently.
    """
    root = _existing_folder(path)
    found = _read_definitions(root)
    if with_policy:
        found = copy.deepcopy(found)
        _merge_dtypes(found, load_policy(root))
    return found


def _read_definitions(root: Path) -> dict[str, dict[str, Any]]:
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
