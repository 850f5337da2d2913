"""``flashinfer-trace-apply export FOLDER -o DATASET``: a curated folder as a
FlashInfer-Bench trace set.

Definitions and Solutions are written in FlashInfer-Bench's layout and
schema (one dtype per tensor; ``destination_passing_style`` always stated,
since its default differs from FlashInfer's), the folder's rules go to
``trace_apply.yaml`` beside them, and ``workloads/`` gets a few batch sizes
per definition so FlashInfer-Bench can benchmark the set. Workloads are
generated for definitions with one variable axis and tensor inputs only
(random data); the others are listed in the report as not given workloads.
With ``--workloads STATS_DIR`` the workloads are instead the call shapes
processes recorded there (``FLASHINFER_TRACE_APPLY_STATS_DIR``), each
distinct set of variable axes once, in the Definition's dtypes.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from .bench_entry import adapt
from .policy import POLICY_FILE, DefinitionPolicy, FolderPolicy, dump_policy

__all__ = ["EXPORT_BATCHES", "write_folder", "workloads_for", "recorded_workloads_for", "export"]

EXPORT_BATCHES = (1, 16, 128, 1024)


def _segment(text: str) -> str:
    # One path segment, whatever the author or op_type says.
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip(".")
    return cleaned or "_"


def schema_definition(definition: Mapping[str, Any]) -> tuple:
    """(Definition with one dtype per tensor, {input: all its dtypes}) for a
    Definition that may list several (older folders, or merged rules)."""
    data = copy.deepcopy(dict(definition))
    extra: Dict[str, List[str]] = {}
    for section in ("inputs", "outputs"):
        for name, spec in (data.get(section) or {}).items():
            if isinstance(spec, dict) and isinstance(spec.get("dtype"), list):
                if section == "inputs" and len(spec["dtype"]) > 1:
                    extra[name] = list(spec["dtype"])
                spec["dtype"] = spec["dtype"][0]
    for axis in (data.get("axes") or {}).values():
        if isinstance(axis, dict) and "type" not in axis:
            axis["type"] = "const" if "value" in axis else "var"
    return data, extra


def write_folder(out: Path, definitions: Mapping[str, Mapping[str, Any]], solutions: Mapping[str, Any],
                 policy: Mapping[str, DefinitionPolicy], workloads: Optional[Mapping[str, List[Dict[str, Any]]]] = None) -> None:
    """Write a folder both this plugin and FlashInfer-Bench load."""
    out.mkdir(parents=True, exist_ok=True)
    rules: Dict[str, DefinitionPolicy] = dict(policy)
    for name, definition in definitions.items():
        data, dtypes = schema_definition(definition)
        op_type = _segment(data.get("op_type") or "unknown")
        path = out / "definitions" / op_type / f"{_segment(name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        if dtypes:
            old = rules.get(name) or DefinitionPolicy()
            rules[name] = DefinitionPolicy(dtypes={**dtypes, **dict(old.dtypes)}, applies_when=old.applies_when)
    for name, solution in solutions.items():
        op_type = _segment((definitions.get(name) or {}).get("op_type") or "unknown")
        payload = solution.to_dict()
        adapt(payload, solution, definitions.get(name))  # FlashInfer-Bench calls with the definition's inputs
        payload["spec"].pop("applies_when", None)  # kept in the policy file
        payload["spec"]["destination_passing_style"] = bool(solution.spec.destination_passing_style)
        if not payload["spec"]["target_hardware"]:
            payload["spec"]["target_hardware"] = ["cuda"]  # FlashInfer-Bench needs one entry
        if payload["spec"].get("binding") is None:
            payload["spec"].pop("binding", None)
        path = out / "solutions" / _segment(solution.author or "unknown") / op_type / _segment(name) / f"{_segment(solution.name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
        if solution.spec.applies_when:
            old = rules.get(name) or DefinitionPolicy()
            merged = tuple(dict.fromkeys((*old.applies_when, *solution.spec.applies_when)))
            rules[name] = DefinitionPolicy(dtypes=old.dtypes, applies_when=merged)
    for name, items in (workloads or {}).items():
        if not items:
            continue
        op_type = _segment((definitions.get(name) or {}).get("op_type") or "unknown")
        path = out / "workloads" / op_type / f"{_segment(name)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(item) + "\n" for item in items))
    kept = {n: r for n, r in rules.items() if r.to_dict() and n in solutions}
    if kept:
        (out / POLICY_FILE).write_text(dump_policy(FolderPolicy(definitions=kept)))


def workloads_for(definition: Mapping[str, Any], batches=EXPORT_BATCHES) -> tuple:
    """(workload Trace dicts, reason when none can be generated)."""
    from .definitions import axis_kinds  # noqa: PLC0415

    variable = [a for a, kind in axis_kinds(definition).items() if kind == "var"]
    if len(variable) != 1:
        return [], f"{len(variable)} variable axes (workloads are generated for one)"
    scalars = [n for n, s in (definition.get("inputs") or {}).items() if (s or {}).get("shape") is None]
    if scalars:
        return [], f"scalar inputs {scalars} need values"
    return [_workload(definition, {variable[0]: batch}) for batch in batches], ""


def _workload(definition: Mapping[str, Any], axes: Dict[str, int]) -> Dict[str, Any]:
    # The uuid is a function of the definition and axes: exporting again names the same workloads.
    tag = "/".join(f"{a}={v}" for a, v in sorted(axes.items()))
    if len(axes) == 1:
        tag = str(next(iter(axes.values())))  # as earlier exports named them
    return {
        "definition": definition["name"],
        "solution": None,
        "evaluation": None,
        "workload": {
            "axes": dict(axes),
            "inputs": {name: {"type": "random"} for name in definition.get("inputs") or {}},
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"flashinfer-trace-apply/{definition['name']}/{tag}")),
        },
    }


def recorded_workloads_for(definition: Mapping[str, Any], shapes: List[Dict[str, Dict[str, Any]]]) -> tuple:
    """(workload Trace dicts for the recorded ``shapes``, a note on the ones
    left out). A FlashInfer-Bench Definition has one dtype per input, so a
    shape recorded in other dtypes is left out and said so."""
    from .definitions import axis_kinds  # noqa: PLC0415

    if not shapes:
        return [], "no recorded shapes"
    scalars = [n for n, s in (definition.get("inputs") or {}).items() if (s or {}).get("shape") is None]
    if scalars:
        return [], f"scalar inputs {scalars} need values (shapes record tensors only)"
    written, _ = schema_definition(definition)
    kinds = axis_kinds(written)
    variable = [a for a, k in kinds.items() if k == "var"]
    const = {a: (written["axes"][a] or {}).get("value") for a, k in kinds.items() if k == "const"}
    declared = {n: (s or {}).get("dtype") for n, s in (written.get("inputs") or {}).items()}
    items: Dict[tuple, Dict[str, Any]] = {}
    left: Dict[str, int] = {}
    for shape in shapes:
        axes, dtypes = shape["axes"], shape["dtypes"]
        other = sorted({f"{n}={d}" for n, d in dtypes.items() if n in declared and d != declared[n]})
        if other:
            reason = f"in other dtypes ({', '.join(other)}; the Definition says {', '.join(f'{n}={declared[n]}' for n in declared)})"
        elif any(a in axes and axes[a] != v for a, v in const.items()):
            reason = "with other const axes than the Definition's"
        elif any(a not in axes for a in variable):
            reason = f"without a value for {[a for a in variable if a not in axes]}"
        else:
            chosen = {a: axes[a] for a in variable}
            items.setdefault(tuple(chosen.items()), _workload(definition, chosen))
            continue
        left[reason] = left.get(reason, 0) + 1
    note = "; ".join(f"{n} recorded shape(s) {why} not exported" for why, n in left.items())
    return list(items.values()), note


def export(folder: str | os.PathLike[str], out: str | os.PathLike[str],
           workloads_dir: Optional[str] = None) -> Dict[str, Any]:
    """Write ``folder`` as a trace set at ``out``; returns the report. With
    ``workloads_dir`` (a stats directory) the workloads are its recorded shapes."""
    from .catalog import load_definitions, load_solutions  # noqa: PLC0415
    from .recorded_shapes import read_recorded  # noqa: PLC0415

    recorded = read_recorded(workloads_dir) if workloads_dir is not None else None  # errors before writing anything
    solutions = load_solutions(folder)
    definitions = load_definitions(folder)
    rows = []
    workloads: Dict[str, List[Dict[str, Any]]] = {}
    for name, solution in sorted(solutions.items()):
        definition = definitions.get(name)
        if definition is None:
            rows.append({"definition": name, "solution": solution.name, "workloads": 0,
                         "note": "no Definition in the folder: FlashInfer-Bench cannot use this solution"})
            continue
        if recorded is not None:
            items, why = recorded_workloads_for(definition, recorded.shapes.get(name, []))
        else:
            items, why = workloads_for(definition)
        workloads[name] = items
        rows.append({"definition": name, "solution": solution.name, "workloads": len(items), "note": why})
    write_folder(Path(out), {n: d for n, d in definitions.items() if n in solutions}, dict(solutions),
                 solutions.policy.definitions, workloads)
    report: Dict[str, Any] = {"folder": str(folder), "out": str(out), "rows": rows}
    if recorded is not None:
        report["workloads"] = recorded.coverage(solutions)
    return report
