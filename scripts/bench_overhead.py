"""Dispatch cost of flashinfer_trace_apply next to FlashInfer's built-in
trace_apply, on CPU tensors, as medians over interleaved rounds.

Each round is a fresh process that times, per case, the solution called
directly (plus any copy the API's convention requires, so "overhead" is
dispatch only), our wrapper and the built-in's wrapper (best of --repeat
runs of --number calls; the built-in gets a tenth of the calls). FlashInfer's
own kernels are replaced by trivial stand-ins first, so a miss times dispatch
only and a CPU-only machine can run everything. Rows: plain hits and misses,
APIs that choose their template per call ("selector"), and the hit under the
operating policies (verify before and after the shape is verified, a guarded
on_error=fallback hit). Next to the rmsnorm and trtllm decode hits it times
their contract floor: a wrapper written for that one shape that does only
the per-call work the contract asks of every hit, the lower bound for any
dispatcher written in Python on the same machine.

``--baseline REV`` (repeatable) checks REV out into a temporary git worktree
and times the same cases with that tree's package in rounds interleaved with
this tree's (A B A B ...), so machine drift hits both alike: the before/after
comparison of the hit path.

    python scripts/bench_overhead.py [--rounds 5] [--number 20000] [--repeat 3]
                                     [--baseline REV ...] [--json]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import itertools
import json
import operator
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
VAR_PREFIX = "FLASHINFER_TRACE_APPLY"

H, H_MISS = 64, 32
PLAIN_HIT = "rmsnorm hit, positional"


def per_call_us(fn: Callable[[], Any], number: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / number * 1e6


class Engines:
    """Enable our plugin or the built-in (never both) for one mapping."""

    def __init__(self) -> None:
        try:
            import flashinfer.trace_apply as builtin  # noqa: PLC0415
        except ImportError:
            builtin = None
        self.builtin = builtin

    def ours(self, mapping: Dict[str, Any]) -> None:
        fita.enable_apply(mapping)

    def theirs(self, mapping: Dict[str, Any]) -> None:
        if not torch.cuda.is_available():
            # The built-in asks torch.cuda.is_current_stream_capturing() on every
            # first call of a shape, which raises on a CPU-only torch build. Answer
            # as a CUDA build outside capture would (that query is a cheap C call).
            self._capturing = torch.cuda.is_current_stream_capturing
            torch.cuda.is_current_stream_capturing = lambda: False
        self.builtin.enable_apply(mapping)

    def off(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fita.disable_apply()
            if self.builtin is not None:
                self.builtin.disable_apply()
        if getattr(self, "_capturing", None) is not None:
            torch.cuda.is_current_stream_capturing = self._capturing
            self._capturing = None


def stand_in(owner: Any, attr: str, aliases: List[Any], returns_input: bool = False) -> Callable[[], None]:
    """Replace a FlashInfer API (and its aliases) with a do-nothing function
    that keeps its signature and wraps chain; returns the undo.
    ``returns_input``: it returns its first argument, as the benchmark's
    solution does, so verify mode finds the two in agreement."""
    original = getattr(owner, attr)

    if returns_input:
        @functools.wraps(original)
        def trivial(*args: Any, **kwargs: Any) -> Any:
            return args[0]
    else:
        @functools.wraps(original)
        def trivial(*args: Any, **kwargs: Any) -> Any:
            return None

    places = [(owner, attr)] + [(a, attr) for a in aliases]
    for o, a in places:
        setattr(o, a, trivial)

    def undo() -> None:
        for o, a in places:
            setattr(o, a, original)

    return undo


def solutions():
    def rmsnorm(hidden_states, weight, eps=1e-6):
        return hidden_states

    def fused_add_rmsnorm(hidden_states, residual, weight, eps=1e-6):
        return hidden_states, residual

    def decode(q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale, return_lse=False):
        return q

    return rmsnorm, fused_add_rmsnorm, decode


def selector_solutions():
    """Solutions for two APIs that choose their template per call."""

    def gated_residual(branch, residual, next_weight, alpha, beta, post_eps=1e-6, next_eps=1e-6, next_gain_center=0.0, post_weight=None, post_gain_center=0.0):
        return residual, branch

    def trtllm_decode(query, kv_cache, block_tables, seq_lens, max_seq_len, bmm1_scale=1.0, bmm2_scale=1.0, request_order=None):
        return query

    return gated_residual, trtllm_decode


def planned_decode_wrapper(q: torch.Tensor):
    """A BatchDecodeWithPagedKVCacheWrapper in the state plan() leaves it
    (set directly, as fast-path planners in engines do; plan() needs CUDA)."""
    cls = flashinfer.BatchDecodeWithPagedKVCacheWrapper
    wrapper = cls.__new__(cls)
    batch = q.shape[0]
    wrapper._paged_kv_indptr_buf = torch.arange(batch + 1, dtype=torch.int32)
    wrapper._paged_kv_indices_buf = torch.arange(batch, dtype=torch.int32)
    wrapper._sm_scale = 1.0 / q.shape[-1] ** 0.5
    wrapper._kv_layout = "NHD"
    return wrapper


def _import_engines() -> None:
    """torch, FlashInfer and the package under test, imported in the child
    only (its PYTHONPATH names the tree being measured)."""
    global torch, flashinfer, fita
    import torch  # noqa: PLC0415
    import flashinfer  # noqa: PLC0415
    import flashinfer_trace_apply as fita  # noqa: PLC0415


# Operating-policy rows: (case, variables set while enabled, calls before timing).
POLICY_CASES = [
    ("rmsnorm hit, verify pending (shape not yet verified)", {"VERIFY": "1000000000"}),
    ("rmsnorm hit, verify done (VERIFY=1, shape verified)", {"VERIFY": "1"}),
    ("rmsnorm hit, guarded (ON_ERROR=fallback)", {"ON_ERROR": "fallback"}),
]


def measure(number: int, repeat: int, builtin: bool) -> Dict[str, Any]:
    """One round, in this process: per case the direct time and our (and
    the built-in's) time per call, in microseconds."""
    _import_engines()
    for name in [k for k in os.environ if k.startswith(VAR_PREFIX)]:
        del os.environ[name]  # a plain session: no hook, no policy, no stats directory
    engines = Engines()
    sol_rmsnorm, sol_fused, sol_decode = solutions()
    x, w = torch.randn(4, H), torch.randn(H)
    x_miss, w_miss = torch.randn(4, H_MISS), torch.randn(H_MISS)
    residual, out = torch.randn(4, H), torch.empty(4, H)
    q = torch.randn(2, 32, 128)
    kv = (torch.randn(2, 16, 8, 128), torch.randn(2, 16, 8, 128))
    decode_name = "gqa_paged_decode_h32_kv8_d128_ps16"
    mapping = {f"rmsnorm_h{H}": sol_rmsnorm, f"fused_add_rmsnorm_h{H}": sol_fused, decode_name: sol_decode}

    sol_gated, sol_trtllm = selector_solutions()
    branch, beta, alpha = torch.randn(4, H), torch.randn(H), torch.randn(H)
    branch_miss, weight_miss, beta_miss = torch.randn(4, H_MISS), torch.randn(H_MISS), torch.randn(H_MISS)
    query, query_miss = torch.randn(4, 32, 128), torch.randn(4, 16, 128)
    paged = torch.randn(10, 2, 8, 16, 128)
    tables, lens, workspace = torch.zeros(4, 3, dtype=torch.int32), torch.ones(4, dtype=torch.int32), torch.empty(8)
    mapping.update({f"gated_residual_next_rmsnorm_h{H}": sol_gated, "trtllm_batch_decode_h32_kv8_d128_ps16": sol_trtllm})

    undo = [
        stand_in(flashinfer.norm, "rmsnorm", [flashinfer], returns_input=True),
        stand_in(flashinfer.norm, "fused_add_rmsnorm", [flashinfer]),
        stand_in(flashinfer.norm, "gated_residual_next_rmsnorm", [m for m in (flashinfer,) if hasattr(m, "gated_residual_next_rmsnorm")]),
        stand_in(flashinfer.decode, "trtllm_batch_decode_with_kv_cache", [m for m in (flashinfer,) if hasattr(m, "trtllm_batch_decode_with_kv_cache")]),
    ]
    # The contract floors, timed right after our hit of the same case.
    trtllm_hit = "selector: trtllm_batch_decode hit"
    floors = {
        PLAIN_HIT: (
            contract_floor(flashinfer.norm.rmsnorm, sol_rmsnorm, ["input", "weight", "eps"],
                           f"len(shape := input.shape) == 2 and shape[1] == {H}", "input"),
            lambda floor: floor(x, w),
        ),
        trtllm_hit: (
            contract_floor(
                flashinfer.decode.trtllm_batch_decode_with_kv_cache, sol_trtllm,
                ["query", "kv_cache", "block_tables", "seq_lens", "max_seq_len", "bmm1_scale", "bmm2_scale", "request_order"],
                "kv_cache.__class__ is T and len(shape := query.shape) == 3 and len(kv := kv_cache.shape) == 5 "
                "and (shape[1], kv[2], shape[2], kv[3], kv[1]) == (32, 8, 128, 16, 2)",
                "query",
            ),
            lambda floor: floor(query, paged, workspace, tables, lens, 48),
        ),
    }
    # The selector APIs are called as the live module attribute (what enabling
    # replaces), with the arguments written out as an engine writes them: a
    # forwarding *args/**kwargs layer would add its own cost to the routed side.
    norm, decode = flashinfer.norm, flashinfer.decode
    decode_cls = flashinfer.BatchDecodeWithPagedKVCacheWrapper
    run_original = vars(decode_cls)["run"]

    @functools.wraps(run_original)
    def trivial_run(self, *args, **kwargs):
        return None

    decode_cls.run = trivial_run
    wrapper = planned_decode_wrapper(q)
    rms_direct = lambda: sol_rmsnorm(x, w)  # noqa: E731
    rms_routed = lambda: flashinfer.rmsnorm(x, w)  # noqa: E731
    cases = [
        (PLAIN_HIT, rms_direct, rms_routed),
        (
            "rmsnorm hit, eps= and out=",
            lambda: out.copy_(sol_rmsnorm(x, w, eps=1e-5)),
            lambda: flashinfer.rmsnorm(x, w, eps=1e-5, out=out),
        ),
        ("rmsnorm miss, positional", lambda: flashinfer.norm.rmsnorm(x_miss, w_miss), lambda: flashinfer.rmsnorm(x_miss, w_miss)),
        (
            "rmsnorm miss, eps= and out=",
            lambda: flashinfer.norm.rmsnorm(x_miss, w_miss, eps=1e-5, out=out),
            lambda: flashinfer.rmsnorm(x_miss, w_miss, eps=1e-5, out=out),
        ),
        ("fused_add_rmsnorm hit (in place)", lambda: sol_fused(x, residual, w), lambda: flashinfer.fused_add_rmsnorm(x, residual, w)),
        (
            "BatchDecode...Wrapper.run hit",
            lambda: sol_decode(q, kv[0], kv[1], wrapper._paged_kv_indptr_buf, wrapper._paged_kv_indices_buf, wrapper._sm_scale),
            lambda: wrapper.run(q, kv),
        ),
        (
            "selector: gated_residual_next hit",
            lambda: sol_gated(branch, branch, w, alpha, beta),
            lambda: norm.gated_residual_next_rmsnorm(branch, branch, w, alpha, beta),
        ),
        (
            "selector: gated_residual_next miss",
            lambda: norm.gated_residual_next_rmsnorm(branch_miss, branch_miss, weight_miss, alpha, beta_miss),
            lambda: norm.gated_residual_next_rmsnorm(branch_miss, branch_miss, weight_miss, alpha, beta_miss),
        ),
        (
            "selector: trtllm_batch_decode hit",
            lambda: sol_trtllm(query, paged, tables, lens, 48),
            lambda: decode.trtllm_batch_decode_with_kv_cache(query, paged, workspace, tables, lens, 48),
        ),
        (
            "selector: trtllm_batch_decode miss",
            lambda: decode.trtllm_batch_decode_with_kv_cache(query_miss, paged, workspace, tables, lens, 48),
            lambda: decode.trtllm_batch_decode_with_kv_cache(query_miss, paged, workspace, tables, lens, 48),
        ),
    ]
    result: Dict[str, Any] = {"package": fita.__file__, "direct": {}, "ours": {}, "builtin": {}}
    try:
        for name, direct, _ in cases:
            result["direct"][name] = per_call_us(direct, number, repeat)
        for engine in ("ours", "builtin"):
            if engine == "builtin" and (not builtin or engines.builtin is None):
                continue
            getattr(engines, "ours" if engine == "ours" else "theirs")(mapping)
            try:
                for name, _, call in cases:
                    call()  # first call resolves the shape
                    result[engine][name] = per_call_us(call, number if engine == "ours" else max(1, number // 10), repeat)
                    if engine == "ours" and name == PLAIN_HIT:  # timed next to the hit: the VM's speed drifts
                        result["reads_floor_us"] = reads_floor(x, number, repeat)
                    if engine == "ours" and name in floors:
                        floor, call_floor = floors[name]
                        result.setdefault("floor", {})[name] = per_call_us(functools.partial(call_floor, floor), number, repeat)
                        if not next(floor.hits):  # it must have run the hit, not the original
                            raise SystemExit(f"the contract floor for {name!r} never hit")
            finally:
                engines.off()
        if _has_policies():
            for name, variables in POLICY_CASES:
                for key, value in variables.items():
                    os.environ[f"{VAR_PREFIX}_{key}"] = value
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fita.enable_apply({f"rmsnorm_h{H}": sol_rmsnorm})
                    rms_routed()  # resolves the shape (and, with VERIFY=1, verifies it)
                    if "pending" in name:
                        # each call copies the arguments, runs the original and compares
                        result["ours"][name] = per_call_us(rms_routed, max(1, number // 20), repeat)
                    else:
                        result["ours"][name] = per_call_us(rms_routed, number, repeat)
                    result["direct"][name] = result["direct"][PLAIN_HIT]
                    stats = fita.stats().get("flashinfer.norm.rmsnorm", {})
                    result.setdefault("policy_stats", {})[name] = stats
                finally:
                    engines.off()
                    for key in variables:
                        os.environ.pop(f"{VAR_PREFIX}_{key}", None)
    finally:
        for u in undo:
            u()
        decode_cls.run = run_original
    return result


def reads_floor(x: Any, number: int, repeat: int) -> float:
    """What the tensor reads a value-returning rmsnorm hit must make cost
    alone, whoever implements the dispatch: the input's shape (the key) and
    dtype and device, and the result's shape, dtype and device (the check
    every delivered result gets). Read by C (operator.attrgetter), with no
    Python around them, so no dispatcher, compiled or not, can go below it
    with torch's attribute getters."""
    metadata = operator.attrgetter("shape", "dtype", "device")
    y = torch.empty_like(x)
    reads = per_call_us(lambda: (metadata(x), metadata(y)), number, repeat)
    bare = per_call_us(lambda: (x, y), number, repeat)
    return reads - bare


class _InsideSolution(threading.local):
    """The floor's re-entry flag, like the package's own (hit_entry), kept
    here so a floor runs beside any baseline tree, older ones included."""

    def __init__(self) -> None:
        self.flag = [False]


def contract_floor(api: Callable, solution: Callable, passed: List[str], key_test: str, result_like: str) -> Callable:
    """A wrapper written out for one API and one shape that does only the
    per-call work the contract asks of any hit, with nothing general around
    it: the key read and tested inline (``key_test``, which binds ``shape``
    to the shape the result must have), the identity test of every
    defaulted argument the solution does not receive (issue 10 point 1), the
    thread-local re-entry flag (point 7), the solution called with the API's
    arguments ``passed``, the result's class, dtype, shape and device against
    ``result_like``'s (point 2), and the hit counted (stats). No dispatcher
    written in Python that keeps the contract can be cheaper than this on the
    same machine (the reads are torch's attribute getters; only compiled code
    holding the C++ tensor could skip them)."""
    params = list(inspect.signature(api).parameters.values())
    hits = itertools.count()
    ns: Dict[str, Any] = {"solution": solution, "original": api, "T": torch.Tensor, "inside": _InsideSolution(),
                          "tick": hits.__next__}
    header, unaccepted = [], []
    for p in params:
        if p.default is p.empty:
            header.append(p.name)
            continue
        ns[f"default_{p.name}"] = p.default
        header.append(f"{p.name}=default_{p.name}")
        if p.name not in passed and p.name not in ("out", "enable_pdl"):
            unaccepted.append(f"{p.name} is not default_{p.name}")
    source = f"""def floor({', '.join(header)}):
    if {key_test} and out is None and not ({' or '.join(unaccepted) or 'False'}):
        flag = inside.flag
        if not flag[0]:
            flag[0] = True
            try:
                r = solution({', '.join(passed)})
            finally:
                flag[0] = False
            if r.__class__ is not T or r.dtype is not {result_like}.dtype or r.shape != shape or r.device != {result_like}.device:
                raise ValueError("wrong result")
            tick()
            return r
    return original({', '.join(p.name for p in params)})
"""
    exec(compile(source, f"<contract floor {api.__name__}>", "exec"), ns)
    floor = ns["floor"]
    floor.hits = hits  # next(floor.hits): the hits counted so far
    return floor


def _has_policies() -> bool:
    try:
        import flashinfer_trace_apply.policy_settings  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


# -- rounds in fresh processes, this tree and baselines interleaved ----------


def _child(tree: Path, number: int, repeat: int, builtin: bool) -> Dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(VAR_PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join([str(tree)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--number", str(number), "--repeat", str(repeat)]
    if builtin:
        cmd.append("--builtin")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"round for {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(result["package"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"round for {tree} imported the package from {result['package']}")
    return result


def _worktree(rev: str, into: Path) -> Tuple[Path, str]:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True, check=True).stdout.strip()
    path = into / f"baseline-{commit}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], capture_output=True, text=True, check=True)
    return path, commit


def run(rounds: int, number: int, repeat: int, baselines: List[str]) -> Dict[str, Any]:
    """Medians over ``rounds`` fresh processes per tree, the trees taking
    turns (their order rotated each round)."""
    trees: List[Tuple[str, Path]] = [("this tree", ROOT)]
    scratch = Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    made: List[Path] = []
    try:
        for rev in baselines:
            path, commit = _worktree(rev, scratch)
            made.append(path)
            trees.append((f"{rev} ({commit})" if rev != commit else commit, path))
        samples: Dict[str, List[Dict[str, Any]]] = {label: [] for label, _ in trees}
        for r in range(rounds):
            order = trees[r % len(trees):] + trees[: r % len(trees)]
            for label, path in order:
                samples[label].append(_child(path, number, repeat, builtin=path == ROOT))
                print(f"round {r + 1}/{rounds}: {label} done", file=sys.stderr)
    finally:
        for path in made:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)
    return {"trees": [label for label, _ in trees], "rows": _rows(samples, [label for label, _ in trees]), "rounds": rounds,
            "reads_floor": _spread([s["reads_floor_us"] for s in samples["this tree"]]),
            # per round (one process): the plain hit's overhead beyond those reads
            "beyond_reads": _spread([s["ours"][PLAIN_HIT] - s["direct"][PLAIN_HIT] - s["reads_floor_us"]
                                     for s in samples["this tree"]]),
            # per round: the contract floor's overhead over the direct call
            "floors": {case: _spread([s["floor"][case] - s["direct"][case] for s in samples["this tree"]])
                       for case in samples["this tree"][0].get("floor", {})},
            "policy_stats": samples["this tree"][-1].get("policy_stats", {})}


def _spread(values: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _rows(samples: Dict[str, List[Dict[str, Any]]], labels: List[str]) -> List[Dict[str, Any]]:
    mine = samples[labels[0]]
    rows = []
    for case in mine[0]["ours"]:
        row: Dict[str, Any] = {"case": case, "direct_us": statistics.median(s["direct"][case] for s in mine)}
        for label in labels:
            overheads = [s["ours"][case] - s["direct"][case] for s in samples[label] if case in s["ours"]]
            row[label] = _spread(overheads) if overheads else None
        theirs = [s["builtin"][case] - s["direct"][case] for s in mine if case in s.get("builtin", {})]
        row["built-in"] = _spread(theirs) if theirs else None
        # the ratio per round (same process), then its median
        ratios = [(s["ours"][case] - s["direct"][case]) / (s["builtin"][case] - s["direct"][case])
                  for s in mine if case in s.get("builtin", {}) and s["builtin"][case] > s["direct"][case]]
        row["ratio"] = statistics.median(ratios) if ratios else None
        rows.append(row)
    return rows


def _cell(spread: Optional[Dict[str, float]], digits: int = 3) -> str:
    if spread is None:
        return "-"
    return f"{spread['median']:.{digits}f} ({spread['min']:.{digits}f}-{spread['max']:.{digits}f})"


def table(report: Dict[str, Any]) -> str:
    """Markdown: per case the median overhead (min-max over rounds)."""
    labels = report["trees"]
    head = ["case", "direct µs", *(f"{label} +µs" for label in labels), "built-in +µs", "this tree / built-in"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in report["rows"]:
        cells = [r["case"], f"{r['direct_us']:.3f}", *(_cell(r[label]) for label in labels), _cell(r["built-in"], 2),
                 "-" if r["ratio"] is None else f"{r['ratio']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(report: Dict[str, Any]) -> List[str]:
    """Issue 10's targets, read off this tree's medians: a plain hit at most
    0.5 µs and at most 1/20 of the built-in's; selector hits and misses at
    most 1 µs."""
    out = []
    for r in report["rows"]:
        mine = r["this tree"]["median"]
        if r["case"] == PLAIN_HIT:
            ok = mine <= 0.5 and r["ratio"] is not None and r["ratio"] <= 0.05
            out.append(f"target plain hit <= 0.5 us and <= 1/20 built-in: {mine:.3f} us, ratio {r['ratio']:.3f}: {'met' if ok else 'NOT met'}")
            out.append(f"  the six tensor reads every value-returning hit needs, done by C alone: {_cell(report['reads_floor'])} us; "
                       f"the hit beyond them, per round: {_cell(report['beyond_reads'])} us")
        elif r["case"].startswith("selector: "):
            out.append(f"target {r['case']} <= 1 us: {mine:.3f} us: {'met' if mine <= 1.0 else 'NOT met'}")
        if r["case"] in report["floors"]:
            out.append(f"  the contract floor (a wrapper written for this one shape, doing only what the contract asks "
                       f"of every hit): {_cell(report['floors'][r['case']])} us")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per tree, interleaved; medians reported")
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run (built-in: a tenth)")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs per round; the best is kept")
    parser.add_argument("--baseline", action="append", default=[], metavar="REV",
                        help="also time the package at git revision REV (a temporary worktree), interleaved")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--builtin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.number, args.repeat, args.builtin)))
        return 0
    report = run(args.rounds, args.number, args.repeat, args.baseline)
    import torch  # noqa: PLC0415 - versions only
    import flashinfer  # noqa: PLC0415

    report["meta"] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "flashinfer": flashinfer.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(" ".join(f"{k}={v}" for k, v in report["meta"].items()))
        print(f"medians over {report['rounds']} rounds (min-max); overhead = routed call - direct call")
        print(table(report))
        for line in targets(report):
            print(line)
        print("policy rows' counters (last round):", json.dumps(report["policy_stats"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
