"""Enable-time configuration: what a session routes, under which rules, and
what is said about it, once, when it starts.

Everything here runs once per ``enable_apply`` and never per call. It turns
the user's mapping (or the curated folder the environment names) and the
Definitions beside it into a :class:`Configuration`: validated solutions,
per-definition rules (dtypes, constraints, ``applies_when``), the hardware
each solution admits, and a :class:`Report` of what will not be routed or
checked. The session (``api``) builds routes from it; dispatch reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .env import ENABLE_VAR, PATH_VAR, read_env
from .errors import ConfigError
from .warn import warn


@dataclass
class Report:
    """Problems found while configuring, said once, as one warning each kind."""

    lines: List[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def emit(self, stacklevel: int = 4) -> None:
        for line in self.lines:
            warn(line, stacklevel=stacklevel)
        self.lines = []


@dataclass
class Configuration:
    solutions: Dict[str, Any]  # definition name -> callable or Solution
    definitions: Dict[str, Any]  # definition name -> Definition JSON (dict)
    rules: Dict[str, Any] = field(default_factory=dict)  # name -> DefinitionRules
    hardware: Dict[str, Any] = field(default_factory=dict)  # name -> HardwareSupport
    sm: Optional[int] = None  # this process's GPU, read only when some solution names hardware
    policies: Dict[str, Any] = field(default_factory=dict)  # name -> Policy, only where one is active
    report: Report = field(default_factory=Report)


def validate_mapping(solutions: Any) -> Dict[str, Any]:
    """``{name: callable or Solution}``, each value checked; a Solution in
    any accepted form becomes ours."""
    from .solution import Solution  # noqa: PLC0415

    if not isinstance(solutions, Mapping):
        raise TypeError(f"enable_apply() takes a mapping {{definition_name: solution}}, got {type(solutions).__name__}")
    checked: Dict[str, Any] = {}
    for name, value in solutions.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"definition names must be non-empty strings, got {name!r}")
        if callable(value) and not isinstance(value, type):
            checked[name] = value
            continue
        try:
            checked[name] = Solution.coerce(value)
        except Exception as exc:
            raise TypeError(
                f"solution for definition '{name}' must be a callable or a Solution: {exc}"
            ) from exc
    return checked


def coerce_definitions(definitions: Any) -> Dict[str, Any]:
    """A folder (its ``definitions/``), a mapping of Definition JSONs, or
    FlashInfer-Bench / FlashInfer Definition objects."""
    if definitions is None:
        return {}
    if isinstance(definitions, (str, os.PathLike)):
        from .catalog import load_definitions  # noqa: PLC0415

        return load_definitions(definitions)
    from .definitions import definition_map  # noqa: PLC0415

    try:
        return definition_map(definitions)
    except TypeError as exc:
        raise TypeError(f"definitions must be a folder, a mapping {{name: Definition}} or Definition objects: {exc}") from None


def environment_folder() -> Optional[str]:
    """The curated folder ``FLASHINFER_TRACE_APPLY_PATH`` names (``~``
    expanded, as everywhere else), or None when unset."""
    return read_env().path


def check_environment_folder() -> str:
    """The folder the start-up hook loads, or a ConfigError saying what is wrong."""
    path = environment_folder()
    if not path:
        raise ConfigError(f"{ENABLE_VAR}=1 but {PATH_VAR} is not set; set it to a curated solutions folder")
    if not os.path.isdir(path):
        raise ConfigError(f"{PATH_VAR}={path!r} is not a directory")
    return path


def from_environment() -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(solutions, definitions) of the folder the environment names."""
    from .catalog import load_definitions, load_solutions  # noqa: PLC0415

    path = environment_folder()
    if not path:
        return {}, {}
    return load_solutions(path), load_definitions(path)


def admitted(mapping: Dict[str, Any], folder_policy: Any) -> Tuple[Dict[str, Any], List[str]]:
    """(the names the folder policy's allow/deny patterns admit, the rest)."""
    if folder_policy is None:
        return mapping, []
    kept = {n: v for n, v in mapping.items() if folder_policy.admits(n)}
    return kept, sorted(n for n in mapping if n not in kept)


def prebuild_names(mapping: Dict[str, Any], folder_policy: Any, everything: bool) -> List[str]:
    """What to load at enable: everything (the variable), else the
    definitions whose policy entry says ``prebuild: true``."""
    if everything:
        return sorted(mapping)
    if folder_policy is None:
        return []
    return sorted(n for n in mapping if folder_policy.get(n).prebuild)


def configure(mapping: Dict[str, Any], definitions: Dict[str, Any], folder_policy: Any = None) -> Configuration:
    """Rules and hardware support per registered name, with the report of
    what will not be routed here or not be checked per call."""
    from .definitions import add_applies_when, rules_from_definition  # noqa: PLC0415

    config = Configuration(solutions=mapping, definitions=definitions)
    config.rules = {name: rules_from_definition(d) for name, d in definitions.items() if name in mapping}
    unusable: List[str] = []
    for name, value in mapping.items():
        spec = getattr(value, "spec", None)
        if spec is not None and spec.applies_when:
            config.rules[name], problems = add_applies_when(
                config.rules.get(name), name, spec.applies_when, definitions.get(name)
            )
            unusable += problems
    _read_hardware(config)
    _read_policies(config, folder_policy)
    if unusable:
        config.report.add(
            f"not routed, the original runs instead: {'; '.join(unusable)}; such calls count as fallback_constraint"
        )
    unchecked = [f"{n}: {c!r}" for n, r in config.rules.items() for c in r.unchecked]
    if unchecked:
        config.report.add(
            "constraints that need tensor data are not checked per call (a GPU sync per call, "
            f"impossible in CUDA-graph capture): {', '.join(unchecked)}"
        )
    return config


def _read_hardware(config: Configuration) -> None:
    """The GPU is queried only if some solution names its hardware: a
    CUDA query costs start-up time in every worker, and without targets
    nothing would be filtered anyway."""
    from .hardware import current_sm, read_targets  # noqa: PLC0415

    targets = {
        name: tuple(spec.target_hardware)
        for name, value in config.solutions.items()
        if (spec := getattr(value, "spec", None)) is not None and spec.target_hardware
    }
    if not targets:
        return
    config.sm = current_sm()
    excluded, unreadable = [], []
    for name, entries in targets.items():
        support = read_targets(entries)
        config.hardware[name] = support
        unreadable += [f"{name}: {e!r}" for e in support.unreadable]
        if not support.allows(config.sm):
            excluded.append(f"{name} (targets {list(entries)})")
    if excluded:
        config.report.add(
            f"not routed on this GPU (sm{config.sm}): {', '.join(excluded)}; such calls count as fallback_unsupported_arch"
        )
    if unreadable:
        config.report.add(f"target_hardware entries not understood (ignored): {', '.join(unreadable)}")


def _read_policies(config: Configuration, folder_policy: Any) -> None:
    """Verify and on-error policies: the environment's for every name, with
    the folder policy's per-definition keys over them."""
    from .policy_settings import for_definition, from_environment  # noqa: PLC0415

    base = from_environment()
    for name in config.solutions:
        entry = folder_policy.get(name) if folder_policy is not None else None
        overrides = entry.operating() if entry is not None else {}
        where = folder_policy.where(name, next(iter(overrides))) if overrides else ""
        policy = for_definition(base, overrides, where or name)
        if policy.active:
            config.policies[name] = policy
