"""Helpers for tests/test_import_hook.py: curated folders, child-process
environments and scripts, and the worker that a ``spawn`` pool runs.

The child scripts ``import hook_helpers`` (the tests put this folder on
``PYTHONPATH``), so this module must stay standard-library only at import
time: importing it must not import torch, FlashInfer or
``flashinfer_trace_apply``, or the "off" checks would see them loaded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

TESTS_DIR = Path(__file__).resolve().parent

ENABLE_VAR = "FLASHINFER_TRACE_APPLY"
PATH_VAR = "FLASHINFER_TRACE_APPLY_PATH"
CACHE_VAR = "FLASHINFER_TRACE_APPLY_CACHE_DIR"

DEFINITION = "rmsnorm_h64"
SOLUTION_NAME = "torch_rmsnorm_h64"
RMSNORM_API = "flashinfer.norm.rmsnorm"
HIDDEN = 64
CHILD_TIMEOUT_S = 180

# The solution counts its calls in a module global, so a child can prove that
# the solution itself (not FlashInfer, not a fallback) produced the result.
RMSNORM_SOURCE = '''\
import torch

CALLS = 0


def run(hidden_states, weight, eps=1e-6):
    global CALLS
    CALLS += 1
    x = hidden_states.to(torch.float32)
    variance = x.pow(2).mean(dim=-1, keepdim=True)
    y = x * torch.rsqrt(variance + eps) * weight.to(torch.float32)
    return y.to(hidden_states.dtype)
'''

FAILING_SOURCE = '''\
raise RuntimeError("boom: this solution cannot be imported")


def run(hidden_states, weight, eps=1e-6):
    return hidden_states
'''


# -- curated folders -----------------------------------------------------------


def solution_dict(
    definition: str = DEFINITION,
    name: str = SOLUTION_NAME,
    source: str = RMSNORM_SOURCE,
) -> Dict[str, Any]:
    """A FlashInfer-Bench Solution (python language, CPU) as a JSON dict."""
    return {
        "name": name,
        "definition": definition,
        "author": "tests",
        "description": "float32 torch rmsnorm, cast back to the input dtype",
        "spec": {
            "language": "python",
            "target_hardware": ["cpu"],
            "entry_point": "kernel.py::run",
            "dependencies": [],
            "destination_passing_style": False,
            "binding": None,
        },
        "sources": [{"path": "kernel.py", "content": source}],
    }


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def write_curated_folder(root: Path, solution: Optional[Dict[str, Any]] = None) -> Path:
    """``root/solutions/rmsnorm/sol.json``; returns ``root``."""
    write_json(root / "solutions" / "rmsnorm" / "sol.json", solution or solution_dict())
    return root


# -- child processes -------------------------------------------------------------


def child_env(cache_dir: Path, overrides: Optional[Mapping[str, Optional[str]]] = None) -> Dict[str, str]:
    """os.environ without any FLASHINFER_TRACE_APPLY* variable, with a private
    cache dir and this folder on PYTHONPATH; ``overrides`` (None = unset)
    applied last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENABLE_VAR)}
    env[CACHE_VAR] = str(cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p
    )
    # Show every warning, including ones raised at interpreter start-up; the
    # scripts also set "always" themselves around ``import flashinfer``.
    env["PYTHONWARNINGS"] = "always"
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_python(args: List[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        env=dict(env),
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )


def run_child(script: str, env: Mapping[str, str], cwd: Path) -> Tuple[Dict[str, Any], subprocess.CompletedProcess]:
    """Run ``python -c script``; parse the JSON on its last stdout line."""
    proc = run_python(["-c", script], env, cwd)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"child failed (rc={proc.returncode})\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    try:
        report = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"child's last stdout line is not JSON ({exc})\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        ) from None
    return report, proc


# Common head of every child script: import FlashInfer with every warning
# recorded, then describe what the import left behind in ``report``.
PRELUDE = r'''
import json, sys, warnings
import hook_helpers as _h

report = {"import_error": None}
with warnings.catch_warnings(record=True) as _caught:
    warnings.simplefilter("always")
    try:
        import flashinfer
    except BaseException as _exc:
        report["import_error"] = f"{type(_exc).__name__}: {_exc}"
        print(json.dumps(report))
        raise SystemExit(0)
report["import_warnings"] = _h.describe_warnings(_caught)
report["fita_loaded"] = "flashinfer_trace_apply" in sys.modules
report["wrapt_loaded"] = "wrapt" in sys.modules
report["rmsnorm_module"] = flashinfer.rmsnorm.__module__
report["rmsnorm_routed"] = hasattr(flashinfer.rmsnorm, "__fita_route__")
report["routed_attributes"] = _h.routed_attributes(flashinfer)
report["builtin_enabled"] = _h.builtin_enabled()
report["fita_enabled"] = (
    sys.modules["flashinfer_trace_apply"].is_enabled() if report["fita_loaded"] else None
)
'''

EPILOGUE = "\nprint(json.dumps(report))\n"


def script(body: str = "") -> str:
    return PRELUDE + body + EPILOGUE


# -- used inside the children ------------------------------------------------------


def describe_warnings(caught: List[Any]) -> List[Dict[str, str]]:
    return [
        {
            "category": f"{w.category.__module__}.{w.category.__qualname__}",
            "message": str(w.message),
        }
        for w in caught
    ]


_TRACE_APPLY_WORDS = re.compile(r"trace[ _]?apply", re.IGNORECASE)


def trace_apply_warnings(described: List[Dict[str, str]]) -> List[Dict[str, str]]:
    """The warnings about Trace Apply: ours (TraceApplyWarning) and any the
    built-in engine raises (plain UserWarning naming trace apply). Unrelated
    import-time warnings (e.g. cutlass deprecations) are left out."""
    return [
        w
        for w in described
        if w["category"].endswith("TraceApplyWarning") or _TRACE_APPLY_WORDS.search(w["message"])
    ]


def _routed(value: Any) -> bool:
    try:
        return getattr(value, "__fita_route__", None) is not None
    except Exception:  # noqa: BLE001 - odd objects in a module namespace
        return False


def routed_attributes(module: Any) -> List[str]:
    """Names of the module's functions, and methods of its classes, that
    flashinfer_trace_apply has replaced by a routing wrapper."""
    found = []
    for name, value in sorted(vars(module).items()):
        if _routed(value):
            found.append(name)
        elif isinstance(value, type):
            found += [f"{name}.{attr}" for attr, member in sorted(vars(value).items()) if _routed(member)]
    return found


def builtin_enabled() -> Optional[bool]:
    """FlashInfer's built-in engine state (None when it was never imported)."""
    builtin = sys.modules.get("flashinfer.trace_apply")
    return None if builtin is None else bool(builtin.is_enabled())


def rmsnorm_inputs() -> Tuple[Any, Any]:
    import torch  # noqa: PLC0415

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, HIDDEN, generator=gen).to(torch.bfloat16)
    w = (torch.rand(HIDDEN, generator=gen) + 0.5).to(torch.bfloat16)
    return x, w


def rmsnorm_reference(x: Any, w: Any, eps: float = 1e-6) -> Any:
    import torch  # noqa: PLC0415

    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def matches_reference(out: Any, x: Any, w: Any) -> bool:
    import torch  # noqa: PLC0415

    ref = rmsnorm_reference(x, w)
    return bool(
        isinstance(out, torch.Tensor)
        and out.dtype == x.dtype
        and out.shape == x.shape
        and torch.allclose(out.float(), ref.float(), rtol=1e-2, atol=1e-2)
    )


def solution_calls() -> int:
    """Calls counted by the rmsnorm solution module(s) imported in this process."""
    return sum(
        getattr(mod, "CALLS", 0)
        for name, mod in list(sys.modules.items())
        if name.startswith("_fita_solution_") and mod is not None
    )


def spawn_worker() -> Tuple[bool, int, bool, int, List[Dict[str, str]]]:
    """Runs in a ``spawn`` pool process: a fresh interpreter whose only
    configuration is the inherited environment."""
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import flashinfer  # noqa: PLC0415
    import flashinfer_trace_apply as fita  # noqa: PLC0415

    x, w = rmsnorm_inputs()
    out = flashinfer.rmsnorm(x, w)
    hits = fita.stats().get(RMSNORM_API, {}).get("hit", 0)
    return (
        fita.is_enabled(),
        hits,
        matches_reference(out, x, w),
        solution_calls(),
        trace_apply_warnings(describe_warnings(caught)),
    )
