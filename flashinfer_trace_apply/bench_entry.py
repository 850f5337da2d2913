"""An entry point FlashInfer-Bench's runner accepts, for an exported Solution.

FlashInfer-Bench calls a solution with exactly the definition's inputs (then
its outputs, destination-passing), positionally in the definition's order,
and its builder refuses an entry point with any other number of named
parameters. A solution written for this plugin takes the API's own
parameters as well (``out=``, ``enable_pdl=``, ``eps`` with a default...).
Export then adds one small module to the Solution whose function takes the
definition's names, plus ``**options`` (which FlashInfer-Bench does not count
and through which this plugin still passes a caller's other arguments), and
forwards everything by name to the original entry point.
"""

from __future__ import annotations

import keyword
from pathlib import PurePosixPath
from typing import Any, Dict, Optional, Sequence

from .calling_style import entry_parameters, signature_parameters
from .solution import Solution

__all__ = ["ADAPTER_FILE", "adapt"]

ADAPTER_FILE = "_flashinfer_bench_entry.py"


def _expected(definition: Any, destination_passing: bool) -> Optional[list]:
    inputs = list((definition or {}).get("inputs") or {})
    outputs = list((definition or {}).get("outputs") or {})
    names = inputs + (outputs if destination_passing else [])
    if not names or any(not n.isidentifier() or keyword.iskeyword(n) for n in names):
        return None
    return names


def _loaded_parameters(solution: Solution) -> Optional[list]:
    """The entry point's parameters when its source does not show them (a
    function built by a factory, say): import it, as ``check`` would."""
    from .loaders import load  # noqa: PLC0415

    try:
        return signature_parameters(load(solution, solution.definition).fn)
    except Exception:  # noqa: BLE001 - unreadable: the caller leaves the entry as it is
        return None


def _module_of(entry_file: str) -> Optional[str]:
    path = PurePosixPath(entry_file.lstrip("./"))
    if path.suffix != ".py" or not all(p.isidentifier() for p in (*path.parent.parts, path.stem)):
        return None
    return "." + ".".join((*path.parent.parts, path.stem))


def adapt(payload: Dict[str, Any], solution: Solution, definition: Any) -> Optional[str]:
    """Give ``payload`` (the Solution's dict, edited in place) an entry
    point FlashInfer-Bench accepts. Returns None when it needs none or has
    one now, else why it cannot have one."""
    if not solution.spec.is_python_family:
        return None  # compiled solutions are bound by their own binding spec
    params = entry_parameters(solution) or _loaded_parameters(solution)
    names = _expected(definition, bool(solution.spec.destination_passing_style))
    if params is None or names is None:
        return "entry point or definition not readable: left as it is"
    named = [p.name for p in params if not p.variadic]
    if named == names:
        return None  # already what FlashInfer-Bench calls
    missing = [n for n in names if n not in named]
    if missing and not any(p.variadic for p in params):
        return f"entry point lacks {', '.join(missing)}: left as it is"
    module = _module_of(solution.entry_file)
    if module is None or ADAPTER_FILE in {s.normalized_path for s in solution.sources}:
        return "entry file cannot be imported by name: left as it is"
    source = _adapter_source(module, solution.entry_symbol, names)
    payload["sources"] = [*payload["sources"], {"path": ADAPTER_FILE, "content": source}]
    payload["spec"]["entry_point"] = f"{ADAPTER_FILE}::run"
    return None


def _adapter_source(module: str, symbol: str, names: Sequence[str]) -> str:
    params = ", ".join(names)
    forwarded = ", ".join(f"{n}={n}" for n in names)
    return (
        '"""FlashInfer-Bench entry point, written by flashinfer-trace-apply export:\n'
        "it takes the definition's inputs (and outputs, destination-passing) in order\n"
        f'and forwards them by name, with any other arguments, to {symbol}."""\n\n'
        f"from {module} import {symbol} as _entry\n\n\n"
        f"def run({params}, **options):\n"
        f"    return _entry({forwarded}, **options)\n"
    )
