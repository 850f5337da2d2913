#!/usr/bin/env python3
"""Route FlashInfer APIs to their own template references, through our plugin
and through FlashInfer's built-in trace_apply, and compare every observable
effect with FlashInfer's original kernel on the same inputs.

Scope: every free-function API of ``flashinfer.norm``, ``.activation``,
``.rope``, ``.page``, ``.cascade`` and the deterministic APIs of
``.sampling`` (no ``generator``/``seed`` parameter) whose trace template has
both ``reference`` and ``init``, read from ``flashinfer.api_logging._TRACE_REGISTRY``.
An API with several such templates is run once per template.

Per case, on CUDA:

1. ``inputs = template.init(<var axes>=small ints, device="cuda")``; the
   definition name is ``api.fi_trace(**inputs)["name"]``.
2. The original kernel runs on a clone of ``inputs``. Its observable effects
   are recorded: the return value(s) (and which argument a returned tensor
   aliases, e.g. ``out=``), and every tensor argument (tuple members
   included) after the call; an argument whose bytes changed was written.
3. For each engine, on a fresh clone, with only that engine on and
   ``{definition: reference}`` registered: the same call (same keyword
   arguments). The solution is the template's ``reference``, wrapped so that
   it takes the definition's input names (a reference parameter named after
   the API parameter instead gets its value under the definition name; one
   that no definition input feeds, like ``eps``, keeps its own name, so an
   engine that passes call arguments through reaches it).
4. Status per engine: ``match`` (routed, every effect within the template's
   ``check``; effects the template does not name within FlashInfer's default
   tolerances for the dtype; arguments the original leaves alone must stay
   bit-identical), ``mismatch (<effects>)``, ``not routed``,
   ``error (<exception>)``, or ``skipped (<why>)``.
5. Diagnostics (JSON, and notes under the table): the reference called
   directly against the original's outputs (where they already differ, a
   value mismatch is the reference's, not the routing's); and, where the
   reference returns other dtypes than the original produces (fp32 for bf16,
   say) and an engine failed, that engine once more with the reference's
   results cast to the original's dtypes (``--no-cast-rerun`` to skip). The
   status in the table is always the faithful first run.

APIs with an ``out=``-style parameter that init leaves out (``out``,
``lse``, or a parameter named like a template output) are run a second
time, as ``<api> [out=]``, with those buffers passed (pre-filled with a
sentinel), which exercises the engines' write-into-caller-buffer path.

Usage (repository root; CUDA GPU; no network needed):

    python scripts/harness_reference_routing.py --json harness.json
    python scripts/harness_reference_routing.py --apis rmsnorm,rope --json part.json
    python scripts/harness_reference_routing.py --json harness.json --resume --time-budget 480

``--json`` is rewritten after every case; with ``--resume`` finished records
are kept and only the rest runs, so a run cut short (a 10-minute limit, a
``--time-budget``) is finished by the same command again.

CPU only: ``--list`` (what would run, and why the rest is excluded) and
``--dry-run`` (build inputs with init(device="cpu") where possible, name each
call, call each wrapped reference directly, and call the API once through
each engine; no verdicts, since the original kernels need CUDA).

FlashInfer JIT-compiles each kernel family on first use. Cases run family by
family; on CUDA the nvcc-built modules the selected families use are built
in background threads at start (``--no-prebuild`` to skip), while the
CuTe-DSL norm kernels compile in the main thread.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import re
import sys
import threading
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

FAMILIES = ("norm", "activation", "rope", "page", "cascade", "sampling")
ENGINES = ("ours", "builtin")
ENGINE_TITLES = {"ours": "ours", "builtin": "built-in"}

# Value for every Var axis of an init (small, odd, not a power of two, so a
# broadcast or a wrong row count shows); a few axes need specific values.
DEFAULT_AXIS_VALUE = 5
AXIS_OVERRIDES = {"B": 2, "M": 16, "K_doubled": 256}

RANDOM_PARAMS = ("generator", "seed")  # an API that takes these draws randomly
OUT_STYLE_NAMES = ("out", "lse")
SENTINEL_BYTE = 0x5A

_CUDA_BROKEN = re.compile(r"illegal memory access|device-side assert|CUDA error|unspecified launch failure", re.I)
_NO_KERNEL = re.compile(
    r"not supported|unsupported|compute capability|requires .*sm|sm_?1[0-2]\d|sm_?90|no kernel image"
    r"|not implemented for|only supported on|is not available",
    re.I,
)


_WHERE_PREFIX = re.compile(r"^Trace Apply: \S+ -> definition '[^']*' -> solution '[^']*': ")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def short(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    fi_api: str
    family: str
    label: str
    module: Any
    attr: str
    public: Callable  # the public object before any engine is enabled
    original: Callable
    template: Any
    out_variant: bool = False
    out_params: Tuple[str, ...] = ()


@dataclass
class Excluded:
    fi_api: str
    label: str
    reason: str


def _family(module_name: str) -> Optional[str]:
    parts = module_name.split(".")
    if len(parts) >= 2 and parts[0] == "flashinfer" and parts[1] in FAMILIES:
        return parts[1]
    return None


def _wraps(obj: Any, original: Callable) -> bool:
    for _ in range(16):
        if obj is None:
            return False
        if obj is original:
            return True
        obj = getattr(obj, "__wrapped__", None)
    return False


def _fi_api_namer() -> Callable[[Callable], str]:
    from flashinfer import api_logging

    namer = getattr(api_logging, "_trace_fi_api_for", None)
    if namer is None:
        return lambda fn: f"{fn.__module__}.{fn.__qualname__}"
    return namer


def discover() -> Tuple[List[Case], List[Excluded], Dict[str, List[str]]]:
    """(runnable cases, excluded registry entries with reasons, public
    functions of the in-scope modules that have no trace template)."""
    import flashinfer  # noqa: F401 - fills the registry
    from flashinfer.api_logging import _TRACE_REGISTRY

    namer = _fi_api_namer()
    entries = list(_TRACE_REGISTRY)
    counts: Dict[int, int] = {}
    for original, template, _label in entries:
        if template.init is not None and template.reference is not None:
            counts[id(original)] = counts.get(id(original), 0) + 1
    cases: List[Case] = []
    excluded: List[Excluded] = []
    seen_originals = set()
    for original, template, label in entries:
        module_name = getattr(original, "__module__", "") or ""
        family = _family(module_name)
        if family is None:
            continue
        seen_originals.add(id(original))
        fi_api = namer(original)

        def skip(reason: str) -> None:
            excluded.append(Excluded(fi_api, label, reason))

        if "." in original.__qualname__:
            skip("wrapper-class method (plan/run), not a free function")
            continue
        module = sys.modules.get(module_name)
        attr = original.__name__
        public = getattr(module, attr, None) if module is not None else None
        if public is None or not _wraps(public, original):
            skip(f"no public attribute {module_name}.{attr} wrapping the registered function")
            continue
        if template.reference is None and template.init is None:
            skip("template has neither reference nor init")
            continue
        if template.reference is None:
            skip("template has no reference")
            continue
        if template.init is None:
            skip("template has no init")
            continue
        if family == "sampling":
            try:
                params = inspect.signature(original).parameters
            except (TypeError, ValueError):
                params = {}
            random_params = [p for p in RANDOM_PARAMS if p in params]
            if random_params:
                skip(f"result depends on random draws (takes {', '.join(random_params)})")
                continue
        case_id = fi_api if counts.get(id(original), 0) <= 1 else f"{fi_api} [{label}]"
        cases.append(Case(case_id, fi_api, family, label, module, attr, public, original, template))
    cases.sort(key=lambda c: FAMILIES.index(c.family))  # stable: registry order within a family

    untraced: Dict[str, List[str]] = {}
    origs = {id(o) for o, _, _ in entries}
    for fam in FAMILIES:
        module = sys.modules.get(f"flashinfer.{fam}")
        if module is None:
            continue
        names = []
        for name, value in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(value):
                continue
            if getattr(value, "__module__", None) != module.__name__:
                continue
            obj, hit = value, False
            for _ in range(16):
                if obj is None:
                    break
                if id(obj) in origs:
                    hit = True
                    break
                obj = getattr(obj, "__wrapped__", None)
            if not hit:
                names.append(name)
        if names:
            untraced[fam] = names
    return cases, excluded, untraced


def select(cases: Sequence[Case], apis: Optional[str]) -> List[Case]:
    if not apis:
        return list(cases)
    wanted = [w.strip().lower() for w in apis.split(",") if w.strip()]
    return [c for c in cases if any(w in c.id.lower() or w in c.label.lower() for w in wanted)]


# ---------------------------------------------------------------------------
# Inputs and the reference solution
# ---------------------------------------------------------------------------


def var_axes(template: Any) -> Dict[str, int]:
    axes = {}
    for p in inspect.signature(template.init).parameters.values():
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            axes[p.name] = AXIS_OVERRIDES.get(p.name, DEFAULT_AXIS_VALUE)
    return axes


def build_inputs(template: Any, device: str) -> Tuple[Dict[str, int], Dict[str, Any]]:
    axes = var_axes(template)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = template.init(**axes, device=device)
    if not isinstance(inputs, dict):
        raise TypeError(f"init returned {type(inputs).__name__}, not a dict of keyword arguments")
    if "plan" in inputs and "run" in inputs:
        raise TypeError("init returned a plan/run pair (wrapper API)")
    return axes, inputs


def definition_kwargs(template: Any, inputs: Dict[str, Any]) -> Dict[str, Any]:
    """The definition's inputs, by definition name, read from API arguments."""
    out: Dict[str, Any] = {}
    for key, desc in template.inputs.items():
        param = getattr(desc, "param", None) or key
        value = inputs.get(param)
        tuple_idx = getattr(desc, "tuple_idx", None)
        if tuple_idx is not None and value is not None:
            value = value[tuple_idx] if isinstance(value, (tuple, list)) and len(value) > tuple_idx else None
        if value is not None:
            out[key] = value
    return out


def make_solution(template: Any, definition: str) -> Callable:
    """The template's reference, taking the definition's input names.

    Each reference parameter is fed from: the definition input of the same
    name; else the definition input(s) read from the API parameter of that
    name (one input: renamed; several with tuple indices: rebuilt as a
    tuple, e.g. ``paged_kv_cache=(k_cache, v_cache)``); else it is exposed
    under its own name (``eps``, ``kv_layout``, ...). ``**kwargs`` of the
    reference pass through. Arguments the caller leaves out take the
    reference's own defaults.
    """
    P = inspect.Parameter
    ref = template.reference
    ref_sig = inspect.signature(ref)
    by_param: Dict[str, List[Tuple[Optional[int], str]]] = {}
    for key, desc in template.inputs.items():
        param = getattr(desc, "param", None) or key
        by_param.setdefault(param, []).append((getattr(desc, "tuple_idx", None), key))

    plan: List[Tuple[str, str, Any]] = []  # (reference name, kind, source name(s))
    exposed: Dict[str, Any] = {}
    var_kw: Optional[str] = None
    ref_names = {p.name for p in ref_sig.parameters.values()}
    for p in ref_sig.parameters.values():
        if p.kind is P.VAR_KEYWORD:
            var_kw = p.name
            continue
        if p.kind is P.VAR_POSITIONAL:
            continue
        sources = by_param.get(p.name, [])
        if p.name in template.inputs:
            plan.append((p.name, "name", p.name))
            exposed.setdefault(p.name, p.default)
        elif len(sources) == 1 and sources[0][0] is None and sources[0][1] not in ref_names:
            key = sources[0][1]
            plan.append((p.name, "name", key))
            exposed.setdefault(key, p.default)
        elif sources and all(idx is not None for idx, _ in sources) and not any(k in ref_names for _, k in sources):
            keys = [k for _, k in sorted(sources)]
            plan.append((p.name, "tuple", keys))
            for key in keys:
                exposed.setdefault(key, None if p.default is not P.empty else P.empty)
        else:
            plan.append((p.name, "name", p.name))
            exposed.setdefault(p.name, p.default)
    params = [P(name, P.KEYWORD_ONLY, default=default) for name, default in exposed.items()]
    if var_kw is not None:
        params.append(P(var_kw, P.VAR_KEYWORD))
    signature = inspect.Signature(params)

    def solution(**kwargs: Any) -> Any:
        given = signature.bind(**kwargs).arguments  # a real function's TypeError
        call: Dict[str, Any] = {}
        for ref_name, kind, source in plan:
            if kind == "name":
                if source in given:
                    call[ref_name] = given[source]
            else:
                values = [given.get(k) for k in source]
                if any(v is not None for v in values):
                    call[ref_name] = tuple(values)
        if var_kw is not None:
            call.update(given.get(var_kw, {}))
        return ref(**call)

    solution.__signature__ = signature  # type: ignore[attr-defined]
    solution.__name__ = f"reference_{definition}"
    solution.__qualname__ = solution.__name__
    solution.__doc__ = f"{ref.__module__}.{ref.__qualname__}, called by the definition's input names"
    return solution


def make_casting_solution(solution: Callable, dtypes: Sequence[Optional[torch.dtype]]) -> Callable:
    """``solution`` with each returned floating tensor cast to ``dtypes[i]``
    (the dtype the original produced for that output). Diagnostic only: it
    separates a dtype convention problem from a routing problem."""

    def cast(i: int, value: Any) -> Any:
        dtype = dtypes[i] if i < len(dtypes) else None
        if isinstance(value, torch.Tensor) and dtype is not None and value.is_floating_point() and value.dtype != dtype:
            return value.to(dtype)
        return value

    def casting(**kwargs: Any) -> Any:
        result = solution(**kwargs)
        if isinstance(result, (tuple, list)):
            return type(result)(cast(i, v) for i, v in enumerate(result))
        return cast(0, result)

    casting.__signature__ = inspect.signature(solution)  # type: ignore[attr-defined]
    casting.__name__ = casting.__qualname__ = solution.__name__ + "_cast"
    return casting


# ---------------------------------------------------------------------------
# Observations and comparison
# ---------------------------------------------------------------------------


def clone_args(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: clone_args(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(clone_args(v) for v in value)
    return value


def tensor_leaves(args: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """``{path: tensor}`` for every tensor argument, tuple/list members as ``name[i]``."""
    out: Dict[str, torch.Tensor] = {}

    def walk(path: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            out[path] = value
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                walk(f"{path}[{i}]", v)

    for name, value in args.items():
        walk(name, value)
    return out


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.numel() == 0:
        return True
    try:
        return bool(torch.equal(a.reshape(-1).contiguous().view(torch.uint8), b.reshape(-1).contiguous().view(torch.uint8)))
    except (RuntimeError, TypeError):
        return bool(torch.equal(a, b))


def describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)} {str(value.dtype).replace('torch.', '')} {value.device.type}"
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, (int, float, bool, str)) or value is None:
        return value
    return type(value).__name__


@dataclass
class Observation:
    kind: str  # "none" | "tensor" | "tuple" | "list" | "other"
    items: List[Any]  # returned values (one for "tensor"/"other")
    aliases: Dict[int, str]  # return index -> argument path it aliases
    args: Dict[str, torch.Tensor]  # every tensor argument after the call

    def summary(self, pristine: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        return {
            "returns": describe(self.items if self.kind in ("tuple", "list") else (self.items[0] if self.items else None)),
            "return_kind": self.kind,
            "return_aliases": {str(i): p for i, p in self.aliases.items()},
            "written": [p for p, t in self.args.items() if p in pristine and not same_bits(t, pristine[p])],
        }


def observe(result: Any, args: Dict[str, Any]) -> Observation:
    leaves = tensor_leaves(args)
    if result is None:
        kind, items = "none", []
    elif isinstance(result, torch.Tensor):
        kind, items = "tensor", [result]
    elif isinstance(result, tuple):
        kind, items = "tuple", list(result)
    elif isinstance(result, list):
        kind, items = "list", list(result)
    else:
        kind, items = "other", [result]
    aliases: Dict[int, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, torch.Tensor):
            continue
        for path, t in leaves.items():
            if t.device == item.device and t.data_ptr() == item.data_ptr() and t.shape == item.shape and t.dtype == item.dtype:
                aliases[i] = path
                break
    return Observation(kind, items, aliases, leaves)


def default_close(expected: torch.Tensor, actual: torch.Tensor) -> bool:
    """torch.allclose with FlashInfer's default tolerances for the dtype;
    exact for integer/bool tensors; NaN equals NaN."""
    if not (expected.is_floating_point() or actual.is_floating_point()):
        return bool(torch.equal(expected, actual))
    try:
        from flashinfer.trace.template import default_tolerances

        rtol, atol = default_tolerances(expected.dtype)
    except Exception:  # noqa: BLE001
        rtol, atol = 1e-2, 1e-2
    return bool(torch.allclose(actual.float(), expected.float(), rtol=rtol, atol=atol, equal_nan=True))


def output_keys_by_effect(template: Any, orig: Observation, pristine: Dict[str, torch.Tensor]) -> Dict[str, str]:
    """Which template output each effect of the original call is:
    ``{"return[i]" | arg path: output key}``."""
    keys = list(template.outputs)
    mapping: Dict[str, str] = {}
    if orig.kind != "none":
        for i in range(min(len(orig.items), len(keys))):
            mapping[f"return[{i}]"] = keys[i]
    written = [p for p, t in orig.args.items() if p in pristine and not same_bits(t, pristine[p])]
    unmatched: List[str] = []
    for path in written:
        base = path.split("[", 1)[0]
        key = next((k for k, d in template.outputs.items() if getattr(d, "param", None) == base), None)
        if key is None and base in template.outputs:
            key = base
        if key is None:
            for i, alias in orig.aliases.items():
                if alias == path and f"return[{i}]" in mapping:
                    key = mapping[f"return[{i}]"]
        if key is None:
            unmatched.append(path)
        else:
            mapping[path] = key
    left = [k for k in keys if k not in mapping.values()]
    if unmatched and len(unmatched) == len(left):
        mapping.update(zip(unmatched, left))
    return mapping


def expected_outputs(template: Any, orig: Observation, pristine: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``{template output key: the original's tensor for it}``."""
    out: Dict[str, torch.Tensor] = {}
    for effect, key in output_keys_by_effect(template, orig, pristine).items():
        value = orig.items[int(effect[7:-1])] if effect.startswith("return[") else orig.args.get(effect)
        if isinstance(value, torch.Tensor):
            out.setdefault(key, value)
    return out


def values_match(template: Any, key: Optional[str], expected_by_key: Dict[str, torch.Tensor], expected: torch.Tensor, actual: torch.Tensor) -> Tuple[bool, str]:
    """(ok, how): the template's check on this output (the other outputs
    set to the original's on both sides), else default_close."""
    if key is not None and template.check is not None:
        exp = dict(expected_by_key)
        exp[key] = expected
        act = dict(exp)
        act[key] = actual
        try:
            return bool(template.check(exp, act)), "template check"
        except Exception:  # noqa: BLE001 - a check written for lists
            pass
        try:
            return bool(template.check([expected], [actual])), "template check"
        except Exception:  # noqa: BLE001
            pass
    return default_close(expected, actual), "allclose"


def _meta_problem(name: str, expected: Any, actual: Any) -> Optional[str]:
    if isinstance(expected, torch.Tensor) != isinstance(actual, torch.Tensor):
        return f"{name} is {describe(actual)}, original {describe(expected)}"
    if not isinstance(expected, torch.Tensor):
        try:
            equal = bool(expected == actual)
        except Exception:  # noqa: BLE001
            equal = False
        return None if equal else f"{name} is {describe(actual)!r}, original {describe(expected)!r}"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{name} shape {list(actual.shape)}, original {list(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"{name} dtype {str(actual.dtype).replace('torch.', '')}, original {str(expected.dtype).replace('torch.', '')}"
    if actual.device != expected.device:
        return f"{name} on {actual.device}, original on {expected.device}"
    return None


def _comparable(expected: Any, actual: Any) -> bool:
    """Values can be compared (same shape; dtype and device may differ)."""
    return isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor) and tuple(expected.shape) == tuple(actual.shape)


def compare(template: Any, orig: Observation, got: Observation, pristine: Dict[str, torch.Tensor]) -> Tuple[List[str], List[Dict[str, Any]]]:
    """(problems, per-effect checks) of ``got`` against the original's ``orig``."""
    problems: List[str] = []
    checks: List[Dict[str, Any]] = []
    keys = output_keys_by_effect(template, orig, pristine)
    expected_by_key = expected_outputs(template, orig, pristine)

    def check_values(effect: str, expected: torch.Tensor, actual: torch.Tensor) -> bool:
        actual = actual.to(expected.device)
        ok, how = values_match(template, keys.get(effect), expected_by_key, expected, actual)
        record = {"effect": effect, "output": keys.get(effect), "how": how, "ok": ok}
        if expected.numel() and actual.shape == expected.shape:
            try:
                diff = (actual.float() - expected.float()).abs()
                finite = torch.isfinite(diff)
                record["max_abs_diff"] = float(diff[finite].max()) if bool(finite.any()) else None
            except Exception:  # noqa: BLE001
                pass
        checks.append(record)
        return ok

    # Return values.
    if got.kind != orig.kind and not {got.kind, orig.kind} <= {"tuple", "list"}:
        problems.append(f"return is {got.kind} ({describe(got.items)}), original {orig.kind}")
    elif len(got.items) != len(orig.items):
        problems.append(f"return has {len(got.items)} values, original {len(orig.items)}")
    if orig.kind not in ("none",) and got.kind not in ("none",):
        for i, (exp, act) in enumerate(zip(orig.items, got.items)):
            name = "return" if orig.kind in ("tensor", "other") else f"return[{i}]"
            meta = _meta_problem(name, exp, act)
            if meta:
                problems.append(meta)
            if not isinstance(exp, torch.Tensor) or not _comparable(exp, act):
                continue
            if i in orig.aliases and got.aliases.get(i) != orig.aliases[i]:
                problems.append(f"{name} is not the caller's {orig.aliases[i]} buffer")
            if not check_values(f"return[{i}]", exp, act):
                problems.append(f"{name} values")

    # Arguments: written ones must be written alike; the rest left bit-identical.
    for path, before in pristine.items():
        exp = orig.args.get(path)
        act = got.args.get(path)
        if exp is None or act is None:
            continue
        if same_bits(exp, before):
            if not same_bits(act, before):
                problems.append(f"{path} modified (the original leaves it alone)")
            continue
        if same_bits(act, before):
            problems.append(f"{path} not written")
            continue
        meta = _meta_problem(path, exp, act)
        if meta:
            problems.append(meta)
        if _comparable(exp, act) and not check_values(path, exp, act):
            problems.append(f"{path} values")
    return problems, checks


# ---------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------


class Engine:
    name = ""

    def enable(self, mapping: Dict[str, Callable]) -> Any:
        raise NotImplementedError

    def disable(self) -> None:
        raise NotImplementedError

    def counters(self, fi_api: str) -> Dict[str, int]:
        raise NotImplementedError

    def is_enabled(self) -> bool:
        raise NotImplementedError


class Ours(Engine):
    name = "ours"

    def __init__(self) -> None:
        import flashinfer_trace_apply as fita

        self.fita = fita

    def enable(self, mapping):
        return self.fita.enable_apply(mapping)

    def disable(self):
        self.fita.disable_apply()

    def counters(self, fi_api):
        return dict(self.fita.stats().get(fi_api, {}))

    def is_enabled(self):
        return bool(self.fita.is_enabled())


class BuiltIn(Engine):
    name = "builtin"

    def __init__(self) -> None:
        import flashinfer.trace_apply as builtin

        self.builtin = builtin

    def enable(self, mapping):
        return self.builtin.enable_apply(mapping)

    def disable(self):
        self.builtin.disable_apply()  # note: also clears its stats

    def counters(self, fi_api):
        return dict(self.builtin.stats().get(fi_api, {}))

    def is_enabled(self):
        return bool(self.builtin.is_enabled())


def make_engines(names: Sequence[str]) -> Dict[str, Engine]:
    engines: Dict[str, Engine] = {}
    for name in names:
        try:
            engines[name] = Ours() if name == "ours" else BuiltIn()
        except Exception as exc:  # noqa: BLE001 - e.g. a FlashInfer without the built-in
            log(f"engine {name} unavailable: {type(exc).__name__}: {exc}")
    return engines


def all_off(engines: Dict[str, Engine]) -> List[str]:
    notes = []
    for engine in engines.values():
        try:
            if engine.is_enabled():
                engine.disable()
                notes.append(f"{engine.name} was enabled at start (environment?); disabled it")
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{engine.name}: could not check/disable: {exc}")
    return notes


# ---------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def call_public(case: Case, args: Dict[str, Any]) -> Any:
    # Looked up at call time: an engine replaces the module attribute.
    return getattr(case.module, case.attr)(**args)


def exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {short(exc, 300)}"


def cuda_usable() -> bool:
    try:
        x = torch.ones(4, device="cuda")
        x.add_(1)
        torch.cuda.synchronize()
        return True
    except Exception:  # noqa: BLE001
        return False


def out_style_params(case: Case, inputs: Dict[str, Any]) -> List[str]:
    try:
        params = inspect.signature(case.original).parameters
    except (TypeError, ValueError):
        return []
    names = []
    for name, p in params.items():
        if name in inputs or p.default is not None:
            continue
        if name in OUT_STYLE_NAMES or name in case.template.outputs:
            names.append(name)
    return names


def out_buffers(case: Case, names: Sequence[str], returned: Observation) -> Dict[str, torch.Tensor]:
    """Buffers for out=-style parameters, shaped like what the original
    returned for that output, filled with a sentinel byte pattern."""
    keys = list(case.template.outputs)
    buffers: Dict[str, torch.Tensor] = {}
    for name in names:
        index = next((i for i, (k, d) in enumerate(case.template.outputs.items()) if getattr(d, "param", None) == name), None)
        if index is None and name in case.template.outputs:
            index = keys.index(name)
        if index is None and name == "out" and len(returned.items) >= 1:
            index = 0
        if index is None or index >= len(returned.items) or not isinstance(returned.items[index], torch.Tensor):
            continue
        buf = torch.empty_like(returned.items[index])
        try:
            buf.view(torch.uint8).fill_(SENTINEL_BYTE)
        except (RuntimeError, TypeError):
            buf.zero_()
        buffers[name] = buf
    return buffers


def status_word(status: str) -> str:
    return status.split(" (", 1)[0]


def run_engine(engine: Engine, case: Case, definition: str, solution: Callable, pristine_args: Dict[str, Any],
               orig: Optional[Observation], pristine: Dict[str, torch.Tensor], device: str) -> Dict[str, Any]:
    record: Dict[str, Any] = {"status": None}
    args = clone_args(pristine_args)
    started = time.perf_counter()
    result: Any = None
    exc: Optional[BaseException] = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            record["enable_returned"] = engine.enable({definition: solution})
        except Exception as e:  # noqa: BLE001
            exc = e
            record["exception_at"] = "enable"
        if exc is None:
            try:
                result = call_public(case, args)
                sync(device)
            except Exception as e:  # noqa: BLE001
                exc = e
                record["exception_at"] = "call"
                record["traceback"] = traceback.format_exc(limit=-6)
        try:
            record["counters"] = engine.counters(case.fi_api)
        except Exception as e:  # noqa: BLE001
            record["counters"] = {"<stats failed>": exc_text(e)}
        try:
            engine.disable()
        except Exception as e:  # noqa: BLE001
            record["disable_error"] = exc_text(e)
    record["warnings"] = sorted({short(f"{w.category.__name__}: {w.message}", 400) for w in caught})
    record["time_s"] = round(time.perf_counter() - started, 4)
    current = getattr(case.module, case.attr, None)
    if current is not case.public:
        record["not_restored"] = True
        setattr(case.module, case.attr, case.public)
    counters = record["counters"] if isinstance(record["counters"], dict) else {}
    record["routed"] = int(counters.get("hit", 0) or 0) > 0
    attempted = record["routed"] or int(counters.get("error", 0) or 0) > 0
    if exc is not None:
        record["exception"] = exc_text(exc)
        if orig is None and not attempted and record.get("exception_at") == "call":
            # Dry run: the call fell through to FlashInfer's kernel, which needs CUDA.
            record["status"] = f"not routed (then the original raised on {device})"
            return record
        where = "enable: " if record.get("exception_at") == "enable" else ""
        # The row already names the API, definition and solution.
        message = _WHERE_PREFIX.sub("", " ".join(str(exc).split()))
        record["status"] = f"error ({where}{type(exc).__name__}: {short(message, 150)})"
        return record
    observed = observe(result, args)
    record["observed"] = observed.summary(pristine)
    if not record["routed"]:
        why = [k for k, v in counters.items() if k != "hit" and v]
        if record.get("enable_returned") == 0:
            why.append("enable wrapped nothing")
        warned = [w for w in record["warnings"] if "never matched" not in w]
        if warned:
            why.append("warned: " + short(warned[0].split(": ", 1)[-1], 140))
        record["status"] = "not routed" + (f" ({'; '.join(why)})" if why else "")
        return record
    if orig is None:  # dry run: nothing to compare with
        record["status"] = "routed"
        return record
    problems, checks = compare(case.template, orig, observed, pristine)
    record["checks"] = checks
    record["problems"] = problems
    if problems:
        shown = "; ".join(problems[:3]) + (f"; +{len(problems) - 3} more" if len(problems) > 3 else "")
        record["status"] = f"mismatch ({shown})"
    else:
        record["status"] = "match"
    return record


def run_case(case: Case, engines: Dict[str, Engine], device: str, dry_run: bool,
             shared: Dict[str, Any], cast_rerun: bool = True) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"id": case.id, "fi_api": case.fi_api, "family": case.family, "template": case.label,
                           "variant": "out=" if case.out_variant else None, "definition": None}

    def all_skipped(why: str) -> Dict[str, Any]:
        rec["engines"] = {name: {"status": f"skipped ({why})"} for name in engines}
        return rec

    # 1. Inputs and the definition name.
    try:
        if case.out_variant:
            axes, inputs = shared["axes"], clone_args(shared["inputs"])
        else:
            axes, inputs = build_inputs(case.template, device)
        rec["axes"] = axes
    except Exception as exc:  # noqa: BLE001
        rec["init_error"] = exc_text(exc)
        return all_skipped(f"init failed: {exc_text(exc)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            definition = case.public.fi_trace(**inputs)["name"]
        rec["definition"] = definition
    except Exception as exc:  # noqa: BLE001
        rec["fi_trace_error"] = exc_text(exc)
        return all_skipped(f"fi_trace failed: {exc_text(exc)}")
    solution = make_solution(case.template, definition)
    rec["solution_signature"] = str(inspect.signature(solution))

    if not case.out_variant:
        broken = shared.get("cuda_broken")
        shared.clear()
        if broken:
            shared["cuda_broken"] = broken
        shared.update(case_id=case.id, axes=axes, inputs=inputs, definition=definition)

    # 2. The original kernel.
    orig: Optional[Observation] = None
    if case.out_variant:
        inputs.update({k: v.clone() for k, v in shared["out_buffers"].items()})
        rec["out_params"] = sorted(shared["out_buffers"])
    rec["inputs"] = {k: describe(v) for k, v in inputs.items()}
    pristine = {p: t.clone() for p, t in tensor_leaves(inputs).items()}
    if dry_run:
        try:
            ret = solution(**definition_kwargs(case.template, clone_args(inputs)))
            rec["reference_direct"] = {"ok": True, "returns": describe(ret)}
            if not case.out_variant:
                # Stand-in for the original's results: only to exercise the [out=] rerun.
                names = out_style_params(case, inputs)
                shared["out_buffers"] = out_buffers(case, names, observe(ret, {})) if names else {}
                rec["out_rerun"] = sorted(shared["out_buffers"])
        except Exception as exc:  # noqa: BLE001
            rec["reference_direct"] = {"ok": False, "error": exc_text(exc)}
    else:
        args = clone_args(inputs)
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = call_public(case, args)
                sync(device)
        except Exception as exc:  # noqa: BLE001
            rec["original"] = {"error": exc_text(exc), "time_s": round(time.perf_counter() - started, 3),
                               "traceback": traceback.format_exc(limit=-6)}
            if _CUDA_BROKEN.search(str(exc)) and not cuda_usable():
                shared["cuda_broken"] = case.id
            why = "no CUDA kernel on this GPU" if _NO_KERNEL.search(str(exc)) else "original kernel failed"
            return all_skipped(f"{why}: {exc_text(exc)}")
        orig = observe(result, args)
        rec["original"] = {"time_s": round(time.perf_counter() - started, 3), **orig.summary(pristine)}
        if not case.out_variant:
            names = out_style_params(case, inputs)
            shared["out_buffers"] = out_buffers(case, names, orig) if names else {}
            rec["out_rerun"] = sorted(shared["out_buffers"])

    # 3. Each engine.
    rec["engines"] = {}
    for name, engine in engines.items():
        rec["engines"][name] = run_engine(engine, case, definition, solution, inputs, orig, pristine, device)
        exc = rec["engines"][name].get("exception", "")
        if device == "cuda" and _CUDA_BROKEN.search(exc) and not cuda_usable():
            shared["cuda_broken"] = case.id
            return rec

    # 4. The reference called directly, against the original's outputs: a
    #    value mismatch where these already differ is the reference's, not routing's.
    if orig is None:
        return rec
    keys = list(case.template.outputs)
    expected_by_key = expected_outputs(case.template, orig, pristine)
    try:
        direct = solution(**definition_kwargs(case.template, clone_args(inputs)))
        sync(device)
        items = list(direct) if isinstance(direct, (tuple, list)) else [direct]
        verdict: Dict[str, Any] = {"returns": describe(direct), "outputs_declared": keys}
        differ = []
        for i, value in enumerate(items):
            key = keys[i] if i < len(keys) else None
            expected = expected_by_key.get(key) if key else None
            if not isinstance(value, torch.Tensor) or expected is None:
                continue
            if tuple(value.shape) != tuple(expected.shape):
                differ.append(f"{key} shape {list(value.shape)} vs {list(expected.shape)}")
                continue
            ok, how = values_match(case.template, key, expected_by_key, expected, value.to(expected.device))
            if not ok:
                differ.append(f"{key} values ({how})")
        missing = [k for k in keys[len(items):] if k in expected_by_key]
        if missing:
            differ.append(f"returns no {', '.join(missing)}")
        verdict["verdict"] = "differs: " + "; ".join(differ) if differ else "agrees"
    except Exception as exc:  # noqa: BLE001
        direct, items = None, []
        verdict = {"verdict": f"raised {exc_text(exc)}"}
    rec["reference_vs_original"] = verdict

    # 5. Where the reference returns other dtypes than the original's outputs
    #    and an engine failed: once more with the results cast (diagnostic).
    failed = [n for n, r in rec["engines"].items() if status_word(r["status"]) in ("error", "mismatch")]
    if cast_rerun and failed:
        wanted = {k: v.dtype for k, v in expected_by_key.items()}
        differs = any(
            isinstance(v, torch.Tensor) and v.is_floating_point() and i < len(keys)
            and keys[i] in wanted and v.dtype != wanted[keys[i]]
            for i, v in enumerate(items)
        )
        if differs:
            casting = make_casting_solution(solution, [wanted.get(k) for k in keys])
            for name in failed:
                rerun = run_engine(engines[name], case, definition, casting, inputs, orig, pristine, device)
                rec["engines"][name]["cast_rerun"] = rerun
                if device == "cuda" and _CUDA_BROKEN.search(rerun.get("exception", "")) and not cuda_usable():
                    shared["cuda_broken"] = case.id
                    break
    return rec


# ---------------------------------------------------------------------------
# Prebuilding nvcc modules in the background
# ---------------------------------------------------------------------------


def _spec_factories(family: str) -> List[Tuple[str, Callable[[], Any]]]:
    def jit(module: str, fn: str, *args: Any) -> Callable[[], Any]:
        def make() -> Any:
            import importlib

            return getattr(importlib.import_module(f"flashinfer.jit.{module}"), fn)(*args)

        return make

    table = {
        "norm": [("norm", jit("norm", "gen_norm_module"))],
        "activation": [(f"{a}_and_mul", jit("activation", "gen_act_and_mul_module", a)) for a in ("silu", "gelu_tanh", "gelu")],
        "rope": [("rope", jit("rope", "gen_rope_module"))],
        "page": [("page", jit("page", "gen_page_module"))],
        "cascade": [("cascade", jit("cascade", "gen_cascade_module"))],
        "sampling": [("sampling", jit("sampling", "gen_sampling_module"))],
    }
    return table.get(family, [])


def start_prebuild(families: Sequence[str]) -> Optional[threading.Thread]:
    """Build the nvcc JIT modules of ``families`` in parallel, each under its
    own FlashInfer lock (a later first call waits for it, then finds it
    built). Best effort: any failure leaves that module to FlashInfer's
    normal lazy build."""
    specs = []
    for family in families:
        for name, make in _spec_factories(family):
            try:
                spec = make()
                if getattr(spec, "aot_artifacts", None) or not callable(getattr(spec, "build", None)):
                    continue
                if "need_lock" not in inspect.signature(spec.build).parameters:
                    continue
                specs.append((name, spec))
            except Exception as exc:  # noqa: BLE001
                log(f"prebuild: {name}: {exc_text(exc)}")
    if not specs:
        return None

    def build_one(item: Tuple[str, Any]) -> None:
        name, spec = item
        started = time.perf_counter()
        try:
            spec.build(need_lock=True)
            log(f"prebuild: {name} ready ({time.perf_counter() - started:.1f}s)")
        except Exception as exc:  # noqa: BLE001
            log(f"prebuild: {name} failed ({exc_text(exc)}); left to the lazy build")

    def run() -> None:
        with ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="prebuild") as pool:
            list(pool.map(build_one, specs))

    log(f"prebuild: building {', '.join(n for n, _ in specs)} in the background")
    thread = threading.Thread(target=run, name="prebuild", daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def md_cell(text: Optional[str]) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def engine_cell(result: Dict[str, Any]) -> str:
    text = result.get("status", "")
    cast = result.get("cast_rerun")
    if cast:
        text += f"; with results cast to the original's dtypes: {cast.get('status')}"
    return text


def markdown(records: List[Dict[str, Any]], engine_names: Sequence[str]) -> str:
    head = ["API", "definition"] + [ENGINE_TITLES[e] for e in engine_names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in records:
        api = rec["id"].replace("flashinfer.", "", 1) + (" [out=]" if rec.get("variant") == "out=" else "")
        definition = f"`{rec['definition']}`" if rec.get("definition") else ""
        cells = [api, definition] + [engine_cell(rec.get("engines", {}).get(e, {})) for e in engine_names]
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    notes = []
    for rec in records:
        verdict = (rec.get("reference_vs_original") or {}).get("verdict", "")
        if verdict and verdict != "agrees":
            api = rec["id"].replace("flashinfer.", "", 1) + (" [out=]" if rec.get("variant") == "out=" else "")
            notes.append(f"- {api}: the reference called directly {verdict}")
    if notes:
        lines += ["", "Where the template's reference, called directly, already disagrees with the original kernel"
                  " (value mismatches there are the reference's, not the routing's):", ""] + notes
    return "\n".join(lines)


def summarize(records: List[Dict[str, Any]], engine_names: Sequence[str]) -> Dict[str, Dict[str, int]]:
    summary: Dict[str, Dict[str, int]] = {}
    for engine in engine_names:
        counts: Dict[str, int] = {}
        for rec in records:
            status = rec.get("engines", {}).get(engine, {}).get("status")
            if status:
                word = status_word(status)
                counts[word] = counts.get(word, 0) + 1
        summary[engine] = counts
        cast: Dict[str, int] = {}
        for rec in records:
            status = rec.get("engines", {}).get(engine, {}).get("cast_rerun", {}).get("status")
            if status:
                word = status_word(status)
                cast[word] = cast.get(word, 0) + 1
        if cast:
            summary[engine + "+cast"] = cast
    return summary


def summary_line(summary: Dict[str, Dict[str, int]]) -> str:
    order = ["match", "mismatch", "not routed", "error", "skipped", "routed"]
    parts = []
    for engine, counts in summary.items():
        words = sorted(counts, key=lambda w: order.index(w) if w in order else len(order))
        title = ENGINE_TITLES.get(engine.split("+")[0], engine)
        if engine.endswith("+cast"):
            title += " (reruns with results cast to the original's dtypes)"
        parts.append(f"{title}: " + ", ".join(f"{counts[w]} {w}" for w in words))
    return "summary: " + " | ".join(parts)


def environment(device: str) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    try:
        import flashinfer

        meta["flashinfer"] = getattr(flashinfer, "__version__", "?")
    except Exception:  # noqa: BLE001
        pass
    try:
        import flashinfer_trace_apply as fita

        meta["flashinfer_trace_apply"] = getattr(fita, "__version__", "?")
    except Exception:  # noqa: BLE001
        pass
    if device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
        meta["capability"] = "sm%d%d" % torch.cuda.get_device_capability()
    try:
        import subprocess

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        meta["git"] = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        meta["git_dirty"] = bool(dirty)
    except Exception:  # noqa: BLE001
        pass
    return meta


def write_json(path: Optional[str], payload: Dict[str, Any]) -> None:
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, default=str)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def print_list(cases: List[Case], selected: List[Case], excluded: List[Excluded], untraced: Dict[str, List[str]]) -> None:
    print(f"# APIs this harness runs ({len(selected)} of {len(cases)} eligible)\n")
    print("| # | family | API | template | var axes | out= rerun |")
    print("|---|---|---|---|---|---|")
    for i, case in enumerate(selected, 1):
        try:
            params = inspect.signature(case.original).parameters
        except (TypeError, ValueError):
            params = {}
        outs = [n for n, p in params.items() if p.default is None and (n in OUT_STYLE_NAMES or n in case.template.outputs)]
        axes = ", ".join(f"{k}={v}" for k, v in var_axes(case.template).items())
        rerun = f"{', '.join(outs)} (those init leaves out)" if outs else "-"
        print(f"| {i} | {case.family} | {case.fi_api} | {case.label} | {axes} | {rerun} |")
    print(f"\n# Excluded registry entries ({len(excluded)})\n")
    print("| family | API | template | why |")
    print("|---|---|---|---|")
    for ex in excluded:
        print(f"| {_family(ex.fi_api) or ''} | {ex.fi_api} | {ex.label} | {md_cell(ex.reason)} |")
    if untraced:
        print("\n# Public functions of these modules without a trace template (not runnable)\n")
        for fam, names in untraced.items():
            print(f"- flashinfer.{fam}: {', '.join(names)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apis", help="comma-separated substrings of the API name or template label (any matches)")
    parser.add_argument("--json", metavar="PATH", help="write full records here (rewritten after every case)")
    parser.add_argument("--list", action="store_true", help="print the APIs that would run and why others are excluded; no kernels")
    parser.add_argument("--dry-run", action="store_true", help="build inputs and call the references on CPU; no original kernels")
    parser.add_argument("--engines", default="ours,builtin", help="comma-separated: ours, builtin (default both)")
    parser.add_argument("--no-out-variants", action="store_true", help="skip the [out=] reruns")
    parser.add_argument("--no-cast-rerun", action="store_true",
                        help="do not rerun a failing engine with the reference's results cast to the original's dtypes")
    parser.add_argument("--no-prebuild", action="store_true", help="do not build nvcc JIT modules in the background")
    parser.add_argument("--resume", action="store_true", help="keep finished records from --json PATH and run only the rest")
    parser.add_argument("--time-budget", type=float, metavar="S", help="start no new case after S seconds (rest: skipped (time budget))")
    args = parser.parse_args(argv)

    cases, excluded, untraced = discover()
    selected = select(cases, args.apis)
    if args.list:
        print_list(cases, selected, excluded, untraced)
        return 0

    engine_names = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engine_names:
        if e not in ENGINES:
            parser.error(f"unknown engine {e!r} (choose from {', '.join(ENGINES)})")
    dry_run = args.dry_run or not torch.cuda.is_available()
    if not args.dry_run and dry_run:
        log("no CUDA device: running as --dry-run (inputs, names, references and engine calls on CPU; no verdicts)")
    device = "cpu" if dry_run else "cuda"

    engines = make_engines(engine_names)
    notes = all_off(engines)
    if device == "cpu" and not torch.cuda.is_available():
        # FlashInfer's built-in asks torch.cuda.is_current_stream_capturing(),
        # which raises on a CPU-only torch; nothing can be capturing here.
        torch.cuda.is_current_stream_capturing = lambda: False  # type: ignore[assignment]
        notes.append("CPU-only torch: torch.cuda.is_current_stream_capturing replaced by 'return False' for the built-in")
    for note in notes:
        log(note)

    previous: Dict[str, Dict[str, Any]] = {}
    if args.resume and args.json and os.path.exists(args.json):
        with open(args.json, encoding="utf-8") as fh:
            old = json.load(fh)
        done = {}
        for rec in old.get("records", []):
            statuses = [e.get("status", "") for e in rec.get("engines", {}).values()]
            if statuses and not any("time budget" in s or "CUDA context" in s for s in statuses):
                done[rec["id"] + ("|out=" if rec.get("variant") else "")] = rec
        for key, rec in done.items():
            # A case and its [out=] rerun go together (the rerun needs the case's buffers).
            if not rec.get("variant") and rec.get("out_rerun") and not args.no_out_variants and key + "|out=" not in done:
                continue
            previous[key] = rec
        previous = {k: r for k, r in previous.items() if not r.get("variant") or k.split("|", 1)[0] in previous}
        log(f"resume: {len(previous)} finished records kept from {args.json}")

    started = time.monotonic()
    meta = environment(device)
    meta.update(started=time.strftime("%Y-%m-%d %H:%M:%S"), argv=list(sys.argv[1:] if argv is None else argv),
                dry_run=dry_run, notes=notes, axis_value=DEFAULT_AXIS_VALUE, axis_overrides=AXIS_OVERRIDES)
    if device == "cuda":
        torch.cuda.init()
        if not args.no_prebuild:
            pending = {c.family for c in selected if c.id not in previous}
            start_prebuild([f for f in FAMILIES if f in pending])

    records: List[Dict[str, Any]] = []
    excluded_json = [ex.__dict__ for ex in excluded]

    def payload() -> Dict[str, Any]:
        meta["elapsed_s"] = round(time.monotonic() - started, 1)
        return {"meta": meta, "excluded": excluded_json, "untraced_public_functions": untraced, "records": records,
                "summary": summarize(records, list(engines))}

    shared: Dict[str, Any] = {}
    queue: List[Case] = []
    for case in selected:
        queue.append(case)
        if not args.no_out_variants:
            queue.append(Case(case.id, case.fi_api, case.family, case.label, case.module, case.attr, case.public,
                              case.original, case.template, out_variant=True))
    total = len(queue)
    family_started: Dict[str, float] = {}
    try:
        for index, case in enumerate(queue, 1):
            key = case.id + ("|out=" if case.out_variant else "")
            if key in previous:
                records.append(previous[key])
                continue
            if case.out_variant and (shared.get("case_id") != case.id or not shared.get("out_buffers")):
                continue  # no out=-style parameter to fill, or the base case did not get that far
            rec: Dict[str, Any]
            if shared.get("cuda_broken"):
                rec = {"id": case.id, "fi_api": case.fi_api, "family": case.family, "template": case.label,
                       "variant": "out=" if case.out_variant else None, "definition": None,
                       "engines": {n: {"status": f"skipped (CUDA context broken by {shared['cuda_broken']})"} for n in engines}}
            elif not case.out_variant and args.time_budget is not None and time.monotonic() - started > args.time_budget:
                rec = {"id": case.id, "fi_api": case.fi_api, "family": case.family, "template": case.label,
                       "variant": "out=" if case.out_variant else None, "definition": None,
                       "engines": {n: {"status": "skipped (time budget)"} for n in engines}}
            else:
                if case.family not in family_started:
                    family_started[case.family] = time.monotonic()
                    log(f"== {case.family} (t={time.monotonic() - started:.0f}s)")
                t0 = time.perf_counter()
                try:
                    rec = run_case(case, engines, device, dry_run, shared, cast_rerun=not args.no_cast_rerun)
                except Exception as exc:  # noqa: BLE001 - one API never stops the run
                    rec = {"id": case.id, "fi_api": case.fi_api, "family": case.family, "template": case.label,
                           "variant": "out=" if case.out_variant else None, "definition": shared.get("definition"),
                           "harness_error": traceback.format_exc(limit=-8),
                           "engines": {n: {"status": f"error (harness: {exc_text(exc)})"} for n in engines}}
                    all_off(engines)
                    if getattr(case.module, case.attr, None) is not case.public:
                        setattr(case.module, case.attr, case.public)
                elapsed = time.perf_counter() - t0
                original_s = (rec.get("original") or {}).get("time_s")
                parts = [f"{ENGINE_TITLES[n]}: {short(rec['engines'][n]['status'], 90)}" for n in rec.get("engines", {})]
                log(f"[{index}/{total}] {case.id}{' [out=]' if case.out_variant else ''} {rec.get('definition') or ''}"
                    f" ({elapsed:.1f}s" + (f", original {original_s:.1f}s" if original_s is not None else "") + ") "
                    + " | ".join(parts))
            records.append(rec)
            write_json(args.json, payload())
    except KeyboardInterrupt:
        log("interrupted: reporting what ran")
    finally:
        all_off(engines)

    final = payload()
    write_json(args.json, final)
    if dry_run:
        print(f"# Dry run on {device}: no original kernels ran; 'routed' means the engine called the reference\n")
    print(markdown(records, list(engines)))
    print()
    print(summary_line(final["summary"]))
    log(f"done in {time.monotonic() - started:.0f}s" + (f"; records in {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
