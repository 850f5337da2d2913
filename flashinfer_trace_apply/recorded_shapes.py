"""The call shapes every process recorded in a stats directory
(``FLASHINFER_TRACE_APPLY_STATS_DIR``), merged per definition, for
``check --workloads DIR`` and ``export --workloads DIR``.

A stats file is read whole or not at all: anything malformed is one error
naming the file and the entry, never a shape silently dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from .errors import ConfigError

__all__ = ["Recorded", "read_recorded", "var_axes"]


@dataclass
class Recorded:
    directory: str
    files: int
    shapes: Dict[str, List[Dict[str, Dict[str, Any]]]] = field(default_factory=dict)  # definition -> shapes

    def coverage(self, definitions: Any) -> Dict[str, Any]:
        """Which of ``definitions`` have recorded shapes (and how many),
        which have none, and which recorded definitions are not among them."""
        names = sorted(definitions)
        return {
            "directory": self.directory,
            "files": self.files,
            "recorded": {n: len(self.shapes[n]) for n in names if n in self.shapes},
            "not_recorded": [n for n in names if n not in self.shapes],
            "not_in_folder": sorted(n for n in self.shapes if n not in set(names)),
        }


def _dtype_names() -> set:
    import torch  # noqa: PLC0415

    return {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}


def _shape(where: str, item: Any, dtypes_known: set) -> Dict[str, Dict[str, Any]]:
    if not isinstance(item, dict) or not isinstance(item.get("axes"), dict) or not isinstance(item.get("dtypes"), dict):
        raise ConfigError(f"{where}: a shape must be an object with 'axes' and 'dtypes' objects")
    for axis, size in item["axes"].items():
        if type(size) is not int or size < 0:
            raise ConfigError(f"{where}: axis {axis!r} must be a non-negative integer, not {size!r}")
    for name, dtype in item["dtypes"].items():
        if not isinstance(dtype, str) or dtype not in dtypes_known:
            raise ConfigError(f"{where}: input {name!r} has dtype {dtype!r}, which torch does not know")
    return {"axes": dict(item["axes"]), "dtypes": dict(item["dtypes"])}


def read_recorded(directory: str) -> Recorded:
    """Every process's recorded shapes in ``directory``, merged per
    definition (each distinct shape once, in a stable order)."""
    from .stats_report import read_dir  # noqa: PLC0415

    records = read_dir(directory)
    if not records:
        raise ConfigError(f"stats directory {directory} holds no stats files (*.json): nothing was recorded there")
    known = _dtype_names()
    merged: Dict[str, Dict[str, Dict[str, Dict[str, Any]]]] = {}
    for record in records:
        file = str(Path(directory) / record["file"])
        book = record.get("workloads", {})  # a process that routed nothing recorded nothing
        if not isinstance(book, dict):
            raise ConfigError(f"{file}: 'workloads' must map definition names to lists of shapes")
        for definition, shapes in book.items():
            if not isinstance(shapes, list):
                raise ConfigError(f"{file}: workloads[{definition!r}] must be a list of shapes")
            for index, item in enumerate(shapes):
                shape = _shape(f"{file}: workloads[{definition!r}][{index}]", item, known)
                key = json.dumps(shape, sort_keys=True)
                merged.setdefault(definition, {})[key] = shape
    ordered = {name: [shapes[k] for k in sorted(shapes, key=_order(shapes))] for name, shapes in sorted(merged.items())}
    return Recorded(str(directory), len(records), ordered)


def _order(shapes: Dict[str, Dict[str, Dict[str, Any]]]) -> Any:
    # Dtypes, then axis values in name order: the same shapes always replay in the same order.
    def key(k: str) -> Tuple:
        s = shapes[k]
        return (sorted(s["dtypes"].items()), sorted(s["axes"].items()))

    return key


def var_axes(axes: Dict[str, int], variable: Any) -> Dict[str, int]:
    """The recorded values of the variable axes, in ``variable``'s order."""
    return {a: axes[a] for a in variable if a in axes}
