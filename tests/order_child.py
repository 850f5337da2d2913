"""Child process for tests/test_engine_order.py: runs one order of events
(``import flashinfer``, enables and disables of our plugin, FlashInfer's
built-in and FlashInfer-Bench, ``from flashinfer import rmsnorm``) and
prints, as JSON on its last line, what each ``probe`` step saw.

Usage: python order_child.py '<json list of steps>'
Standard library only at import time (the parent's "hook off" checks rely on it).
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings

ROUTED = []  # which solution ran, appended by the solutions themselves
HIDDEN = 64
DEFINITION = f"rmsnorm_h{HIDDEN}"
APIS = (("flashinfer.norm", "rmsnorm"), ("flashinfer", "rmsnorm"), ("flashinfer.norm", "fused_add_rmsnorm"))


def ours_solution(hidden_states, weight, eps=1e-6):
    ROUTED.append("ours")
    return hidden_states * weight


def ours_fused_solution(hidden_states, residual, weight, eps=1e-6):
    ROUTED.append("ours")
    residual = hidden_states + residual
    return residual * weight, residual


def builtin_solution(hidden_states, weight, eps=1e-6):
    ROUTED.append("builtin")
    return hidden_states * weight


def _attr(path: str, name: str):
    return getattr(sys.modules[path], name)


def _layers(obj) -> list:
    """The engines whose wrappers stack at an attribute, outermost first."""
    layers = []
    seen = 0
    while obj is not None and seen < 16:
        if hasattr(obj, "__fita_route__"):
            layers.append("ours")
        elif getattr(obj, "_trace_apply", False):
            layers.append("builtin")
        elif (getattr(obj, "__module__", "") or "").startswith("flashinfer_bench"):
            layers.append("flashinfer_bench")
        obj = getattr(obj, "__wrapped__", None)
        seen += 1
    return layers


def _pristine(obj):
    while hasattr(obj, "__fita_route__") or getattr(obj, "_trace_apply", False):
        obj = obj.__wrapped__
    return obj


def probe(state: dict) -> dict:
    import torch

    flashinfer = sys.modules["flashinfer"]
    x, w = torch.randn(2, HIDDEN), torch.ones(HIDDEN)
    out = {}
    calls = (
        ("module", lambda: flashinfer.norm.rmsnorm, lambda f: f(x, w)),
        ("bound", lambda: state.get("bound"), lambda f: f(x, w)),
        ("fused", lambda: flashinfer.norm.fused_add_rmsnorm, lambda f: f(x.clone(), x.clone(), w)),
    )
    for label, fn, call in calls:
        target = fn()
        if target is None:
            continue
        del ROUTED[:]
        try:
            call(target)
            ran = "original"
        except Exception:  # noqa: BLE001 - FlashInfer's CPU kernel path (and the built-in's wrapper) need CUDA
            ran = "original-or-builtin (raised on CPU)"
        out[label] = ROUTED[0] if ROUTED else ran
        out[label + "_layers"] = _layers(target)
    fita = sys.modules.get("flashinfer_trace_apply")
    builtin = sys.modules.get("flashinfer.trace_apply")
    out["ours_enabled"] = bool(fita and fita.is_enabled())
    out["builtin_enabled"] = bool(builtin and builtin.is_enabled())
    out["max_layers"] = max(len(_layers(_attr(m, a))) for m, a in APIS)
    out["stacked_twice"] = any(
        len(layers) != len(set(layers)) for layers in (_layers(_attr(m, a)) for m, a in APIS)
    )
    return out


def run(steps: list) -> dict:
    state: dict = {"probes": [], "warnings": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in steps:
            if step == "unarm_our_hook":
                # A process where our start-up hook is not armed (the package
                # installed elsewhere): the built-in's env hook then runs alone.
                sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PostImportFinder"]
            elif step == "import":
                import flashinfer  # noqa: F401

                # FlashInfer's own objects (under a built-in wrapper its env hook put there).
                state["before"] = {f"{m}.{a}": id(_pristine(_attr(m, a))) for m, a in APIS}
                state["fresh"] = {f"{m}.{a}": _layers(_attr(m, a)) == [] for m, a in APIS}
            elif step == "bind":
                from flashinfer import rmsnorm

                state["bound"] = rmsnorm
            elif step == "ours_enable":
                import flashinfer_trace_apply as fita

                mapping = {DEFINITION: ours_solution, f"fused_add_rmsnorm_h{HIDDEN}": ours_fused_solution}
                state.setdefault("returns", []).append(fita.enable_apply(mapping))
            elif step == "ours_disable":
                import flashinfer_trace_apply as fita

                fita.disable_apply()
            elif step == "builtin_enable":
                import flashinfer.trace_apply as builtin

                state.setdefault("returns", []).append(builtin.enable_apply({DEFINITION: builtin_solution}))
            elif step == "builtin_disable":
                import flashinfer.trace_apply as builtin

                builtin.disable_apply()
            elif step == "fib_enable":
                from flashinfer_bench.apply import enable_apply as fib_enable

                state["fib_runtime"] = fib_enable(tempfile.mkdtemp(prefix="fib-empty-"))
            elif step == "fib_disable":
                from flashinfer_bench.apply import disable_apply as fib_disable

                fib_disable()
            elif step == "probe":
                state["probes"].append(probe(state))
            elif step == "identical":
                state["identical"] = {
                    f"{m}.{a}": id(_attr(m, a)) == state["before"][f"{m}.{a}"] for m, a in APIS
                }
            else:
                raise ValueError(f"unknown step {step!r}")
        state["warnings"] = [str(w.message) for w in caught if "trace" in str(w.message).lower()]
    state.pop("bound", None)
    state.pop("fib_runtime", None)
    return state


if __name__ == "__main__":
    result = run(json.loads(sys.argv[1]))
    print(json.dumps(result))
