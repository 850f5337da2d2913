"""``flashinfer-trace-apply curate DATASET... -o FOLDER``: one solution per
definition, out of FlashInfer-Bench trace sets.

A candidate has PASSED traces only (on this machine's hardware, when there
is a GPU to match; ``--hardware`` names one), each within the tolerances
(``--atol``/``--rtol``, FlashInfer-Bench's defaults). FlashInfer-Bench's
speed-ups are measured against the Python reference, not FlashInfer, so on a
GPU each candidate is timed against FlashInfer's own kernel with check's GPU
timing at the dataset's workload sizes: the fastest (geometric mean over the
sizes) is kept, with ``applies_when`` set to the size range where it beats
FlashInfer's kernel; one that never does is not deployed. Without a GPU the
choice comes from the traces alone (best speed-up among PASSED) and the
report says so. The folder written loads here and in FlashInfer-Bench.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .policy import DefinitionPolicy

__all__ = ["curate", "format_report"]


def _norm_hw(text: str) -> str:
    return "".join(c for c in str(text).upper() if c.isalnum())


def hardware_matches(trace_hw: str, here: Optional[str]) -> bool:
    """``NVIDIA_H100`` matches a device named ``NVIDIA H100 80GB HBM3``."""
    if here is None:
        return True
    a, b = _norm_hw(trace_hw), _norm_hw(here)
    return bool(a) and (a in b or b in a)


def _within(trace: Dict[str, Any], atol: float, rtol: float) -> bool:
    correctness = (trace.get("evaluation") or {}).get("correctness") or {}
    abs_err, rel_err = correctness.get("max_absolute_error", 0.0), correctness.get("max_relative_error", 0.0)
    ok = lambda v, bound: isinstance(v, (int, float)) and not math.isnan(v) and v <= bound  # noqa: E731
    return ok(abs_err, atol) and ok(rel_err, rtol)


def _geomean(values: List[float]) -> Optional[float]:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _candidates(name: str, dataset: Any, hardware: Optional[str], atol: float, rtol: float) -> tuple:
    """([(file, solution, traces)], {solution name: why not})."""
    keep, dropped = [], {}
    for file, solution in dataset.solutions.get(name, []):
        traces = [t for t in dataset.traces.get(name, []) if t.get("solution") == solution.name]
        here = [t for t in traces if hardware_matches(((t.get("evaluation") or {}).get("environment") or {}).get("hardware", ""), hardware)]
        if not here:
            dropped[solution.name] = "no traces" + (f" on {hardware}" if hardware and traces else "")
            continue
        bad = [t for t in here if (t.get("evaluation") or {}).get("status") != "PASSED"]
        if bad:
            dropped[solution.name] = f"{len(bad)} of {len(here)} traces not PASSED ({bad[0]['evaluation'].get('status')})"
            continue
        loose = [t for t in here if not _within(t, atol, rtol)]
        if loose:
            dropped[solution.name] = f"{len(loose)} of {len(here)} traces beyond atol={atol:g}/rtol={rtol:g}"
            continue
        keep.append((file, solution, here))
    return keep, dropped


def _var_axis(definition: Dict[str, Any]) -> Optional[str]:
    from .definitions import axis_kinds  # noqa: PLC0415

    variable = [a for a, k in axis_kinds(definition).items() if k == "var"]
    return variable[0] if len(variable) == 1 else None


def _applies_when(axis: str, wins: Dict[int, bool]) -> tuple:
    """(constraints, None) for the size range where the candidate wins, or
    (None, why) when it never does or the range is not one interval."""
    sizes = sorted(wins)
    won = [s for s in sizes if wins[s]]
    if not won:
        return None, "FlashInfer's kernel is faster at every workload size"
    if len(won) == len(sizes):
        return (), None
    if won == sizes[: len(won)]:
        return (f"{axis} <= {won[-1]}",), None
    if won == sizes[-len(won):]:
        return (f"{axis} >= {won[0]}",), None
    return (f"{axis} >= {won[0]}", f"{axis} <= {won[-1]}"), None


def _time_on_gpu(name: str, solution: Any, definition: Dict[str, Any], sizes: List[int]) -> Dict[int, tuple]:
    """size -> (original_us, solution_us) for sizes where the solution passes check."""
    import torch  # noqa: PLC0415

    from .check import check_one  # noqa: PLC0415

    dtype = torch.bfloat16
    dtypes = [((s or {}).get("dtype")) for s in (definition.get("inputs") or {}).values()]
    for candidate in ("bfloat16", "float16"):
        if any(candidate == d or (isinstance(d, list) and candidate in d) for d in dtypes):
            dtype = getattr(torch, candidate)
            break
    out = {}
    for size in sizes:
        row = check_one(name, solution, size, "cuda", dtype, definition, timing=True)
        if row.result == "pass" and row.original_us and row.solution_us:
            out[size] = (row.original_us, row.solution_us)
    return out


def curate(datasets: List[str], out: str | os.PathLike[str], *, atol: float = 1e-2, rtol: float = 1e-2,
           hardware: Optional[str] = None, use_gpu: Optional[bool] = None,
           progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Curate ``datasets`` into ``out``; returns the report."""
    import torch  # noqa: PLC0415

    from .calling_style import resolve  # noqa: PLC0415
    from .export import write_folder  # noqa: PLC0415
    from .trace_set import read_trace_set  # noqa: PLC0415

    on_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    here = hardware or (torch.cuda.get_device_name() if on_gpu else None)
    if on_gpu:
        os.environ.pop("TRITON_INTERPRET", None)
    loaded = [read_trace_set(p) for p in datasets]
    names = sorted({n for d in loaded for n in d.solutions})
    rows: List[Dict[str, Any]] = []
    chosen_solutions: Dict[str, Any] = {}
    chosen_definitions: Dict[str, Dict[str, Any]] = {}
    rules: Dict[str, DefinitionPolicy] = {}
    workloads: Dict[str, List[Dict[str, Any]]] = {}
    for index, name in enumerate(names):
        definition = next((d.definitions[name] for d in loaded if name in d.definitions), None)
        candidates, dropped = [], {}
        for dataset in loaded:
            keep, why = _candidates(name, dataset, here, atol, rtol)
            candidates += [(dataset, *k) for k in keep]
            dropped.update(why)
        row: Dict[str, Any] = {"definition": name, "chosen": None, "candidates": len(candidates) + len(dropped),
                               "passed": len(candidates), "speedup": None, "applies_when": [], "note": ""}
        rows.append(row)
        if definition is None:
            row["note"] = "no Definition in the dataset"
            continue
        if not candidates:
            row["note"] = "; ".join(f"{k}: {v}" for k, v in sorted(dropped.items())) or "no solutions"
            continue
        applies: tuple = ()
        if on_gpu:
            axis = _var_axis(definition)
            sizes = sorted({int(t["workload"]["axes"].get(axis)) for d in loaded for t in d.workloads.get(name, [])
                            if axis and isinstance(t.get("workload", {}).get("axes", {}).get(axis), int)}) or [1, 128, 4096]
            best = None
            for dataset, file, solution, _ in candidates:
                solution, _note = resolve(solution, definition, origin=file)
                timed = _time_on_gpu(name, solution, definition, sizes)
                score = _geomean([o / s for o, s in timed.values()])
                if score is not None and (best is None or score > best[0]):
                    best = (score, solution, timed, dataset)
            if best is None:
                row["note"] = "no candidate passed check on this GPU"
                continue
            score, solution, timed, dataset = best
            # The range measured here replaces whatever the file said.
            solution = replace(solution, spec=replace(solution.spec, applies_when=()))
            applies, why = _applies_when(axis or "batch", {s: o > t for s, (o, t) in timed.items()})
            if applies is None:
                row["note"] = f"{solution.name}: {why}; not deployed"
                continue
            row["speedup"], row["measured_against"] = score, "FlashInfer's kernel (this GPU)"
        else:
            def trace_speedup(candidate):
                return _geomean([((t["evaluation"].get("performance") or {}).get("speedup_factor") or 0.0) for t in candidate[3]]) or 0.0
            candidates.sort(key=lambda c: (-trace_speedup(c), c[2].name))
            dataset, file, solution, _ = candidates[0]
            solution, _note = resolve(solution, definition, origin=file)
            row["speedup"], row["measured_against"] = trace_speedup(candidates[0]), "the reference (traces; no GPU here)"
        # The source's own rules travel with the solution (dtypes; and its
        # applies_when unless this GPU's timing just decided one).
        source = dataset.policy.get(name)
        if not on_gpu:
            applies = tuple(dict.fromkeys((*source.applies_when, *solution.spec.applies_when)))
        row["chosen"], row["applies_when"] = solution.name, list(applies)
        chosen_solutions[name], chosen_definitions[name] = solution, definition
        if applies or source.dtypes:
            rules[name] = DefinitionPolicy(dtypes=source.dtypes, applies_when=tuple(applies))
        workloads[name] = [t for d in loaded for t in d.workloads.get(name, [])]
        if progress is not None:
            progress(f"[{index + 1}/{len(names)}] {name}: {solution.name}")
    write_folder(Path(out), chosen_definitions, chosen_solutions, rules, workloads)
    mode = ("timed against FlashInfer's kernel on " + str(here)) if on_gpu else (
        "no GPU here: chosen from the traces alone (FlashInfer-Bench's speed-ups are against its Python "
        "reference, not FlashInfer's kernel); run curate on the target GPU to judge against FlashInfer")
    return {"datasets": [str(p) for p in datasets], "out": str(out), "gpu": bool(on_gpu), "mode": mode,
            "hardware": here, "rows": rows}


def format_report(report: Dict[str, Any]) -> str:
    header = ["definition", "chosen", "passed/candidates", "speedup", "applies_when", "note"]
    lines = [header]
    for r in report["rows"]:
        lines.append([r["definition"], r["chosen"] or "-", f"{r['passed']}/{r['candidates']}",
                      "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                      " and ".join(r["applies_when"]) or "-", r["note"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    chosen = sum(1 for r in report["rows"] if r["chosen"])
    return f"{report['mode']}\n{table}\n{chosen} of {len(report['rows'])} definitions curated into {report['out']}"
