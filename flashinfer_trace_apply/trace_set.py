"""Read a FlashInfer-Bench trace set as its tools write it.

    definitions/**/*.json                               Definition
    solutions/<author>/<op_type>/<definition>/<n>.json  Solution (several per definition)
    workloads/**/*.jsonl                                workload-only Trace per line
    traces/**/*.jsonl                                   benchmarked Trace per line

Read with our own plain code (flashinfer-bench need not be installed):
curate needs the traces' status, hardware, errors and speed-ups, and every
error names the file (and line) to fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .catalog import _read_definitions, read_solution_files
from .errors import ConfigError
from .policy import FolderPolicy, load_policy
from .solution import Solution

__all__ = ["TraceSetData", "read_trace_set", "read_jsonl"]


@dataclass
class TraceSetData:
    root: Path
    definitions: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    solutions: Dict[str, List[Tuple[Path, Solution]]] = field(default_factory=dict)
    workloads: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)  # definition -> Trace dicts
    traces: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    policy: FolderPolicy = field(default_factory=FolderPolicy)  # trace_apply.yaml, if the set has one


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {type(exc).__name__}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: is not valid JSON: {exc.msg}") from None
        if not isinstance(item, dict) or not isinstance(item.get("definition"), str):
            raise ConfigError(f"{path}:{number}: a trace must be a JSON object with a 'definition'")
        out.append(item)
    return out


def read_trace_set(path: str | os.PathLike[str]) -> TraceSetData:
    root = Path(path).expanduser()
    data = TraceSetData(root=root)
    data.solutions = read_solution_files(root)
    data.definitions = _read_definitions(root)
    data.policy = load_policy(root)
    for kind in ("workloads", "traces"):
        target = getattr(data, kind)
        folder = root / kind
        if folder.is_dir():
            for file in sorted(folder.rglob("*.jsonl")):
                for item in read_jsonl(file):
                    target.setdefault(item["definition"], []).append(item)
    return data
