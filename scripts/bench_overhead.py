"""Dispatch cost of flashinfer_trace_apply next to FlashInfer's built-in
trace_apply, measured side by side in one process on CPU tensors.

Every case times per call (best of --repeat runs of --number calls):
the solution called directly (plus any copy the API's convention requires,
so "overhead" is dispatch only), our wrapper, and the built-in's wrapper.
FlashInfer's own kernels are replaced by trivial stand-ins first, so a miss
times dispatch only and a CPU-only machine can run everything.

    python scripts/bench_overhead.py [--number 20000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

import torch

import flashinfer
import flashinfer_trace_apply as fita

H, H_MISS = 64, 32


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


def stand_in(owner: Any, attr: str, aliases: List[Any]) -> Callable[[], None]:
    """Replace a FlashInfer API (and its aliases) with a do-nothing function
    that keeps its signature and wraps chain; returns the undo."""
    original = getattr(owner, attr)

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


def run(number: int, repeat: int) -> List[Dict[str, Any]]:
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
        stand_in(flashinfer.norm, "rmsnorm", [flashinfer]),
        stand_in(flashinfer.norm, "fused_add_rmsnorm", [flashinfer]),
        stand_in(flashinfer.norm, "gated_residual_next_rmsnorm", [m for m in (flashinfer,) if hasattr(m, "gated_residual_next_rmsnorm")]),
        stand_in(flashinfer.decode, "trtllm_batch_decode_with_kv_cache", [m for m in (flashinfer,) if hasattr(m, "trtllm_batch_decode_with_kv_cache")]),
    ]
    gated = lambda *a, **k: flashinfer.norm.gated_residual_next_rmsnorm(*a, **k)  # noqa: E731 - the live attribute
    trtllm = lambda *a, **k: flashinfer.decode.trtllm_batch_decode_with_kv_cache(*a, **k)  # noqa: E731
    decode_cls = flashinfer.BatchDecodeWithPagedKVCacheWrapper
    run_original = vars(decode_cls)["run"]

    @functools.wraps(run_original)
    def trivial_run(self, *args, **kwargs):
        return None

    decode_cls.run = trivial_run
    wrapper = planned_decode_wrapper(q)
    cases = [
        ("rmsnorm hit, positional", lambda: sol_rmsnorm(x, w), lambda: flashinfer.rmsnorm(x, w)),
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
            lambda: gated(branch, branch, w, alpha, beta),
        ),
        (
            "selector: gated_residual_next miss",
            lambda: gated(branch_miss, branch_miss, weight_miss, alpha, beta_miss),
            lambda: gated(branch_miss, branch_miss, weight_miss, alpha, beta_miss),
        ),
        (
            "selector: trtllm_batch_decode hit",
            lambda: sol_trtllm(query, paged, tables, lens, 48),
            lambda: trtllm(query, paged, workspace, tables, lens, 48),
        ),
        (
            "selector: trtllm_batch_decode miss",
            lambda: trtllm(query_miss, paged, workspace, tables, lens, 48),
            lambda: trtllm(query_miss, paged, workspace, tables, lens, 48),
        ),
    ]
    rows: List[Dict[str, Any]] = []
    try:
        direct = {name: per_call_us(fn, number, repeat) for name, fn, _ in cases}
        measured: Dict[str, Dict[str, Optional[float]]] = {name: {} for name, _, _ in cases}
        for engine in ("ours", "builtin"):
            if engine == "builtin" and engines.builtin is None:
                continue
            getattr(engines, "ours" if engine == "ours" else "theirs")(mapping)
            try:
                for name, _, call in cases:
                    call()  # first call resolves the shape
                    measured[name][engine] = per_call_us(call, number if engine == "ours" else max(1, number // 10), repeat)
            finally:
                engines.off()
        for name, _, _ in cases:
            ours = measured[name].get("ours")
            theirs = measured[name].get("builtin")
            o = ours - direct[name]
            t = None if theirs is None else theirs - direct[name]
            rows.append({
                "case": name,
                "direct_us": round(direct[name], 3),
                "ours_overhead_us": round(o, 3),
                "builtin_overhead_us": None if t is None else round(t, 3),
                "ratio_ours_over_builtin": None if not t else round(o / t, 4),
            })
    finally:
        for u in undo:
            u()
        decode_cls.run = run_original
    return rows


def table(rows: List[Dict[str, Any]]) -> str:
    head = f"{'case':36} {'direct us':>10} {'ours +us':>9} {'built-in +us':>13} {'ours/built-in':>14}"
    lines = [head, "-" * len(head)]
    for r in rows:
        b = "-" if r["builtin_overhead_us"] is None else f"{r['builtin_overhead_us']:.2f}"
        ratio = "-" if r["ratio_ours_over_builtin"] is None else f"{r['ratio_ours_over_builtin']:.3f}"
        lines.append(f"{r['case']:36} {r['direct_us']:10.3f} {r['ours_overhead_us']:9.3f} {b:>13} {ratio:>14}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run (built-in: a tenth)")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the best is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.number, args.repeat)
    meta = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "flashinfer": flashinfer.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    else:
        print(" ".join(f"{k}={v}" for k, v in meta.items()))
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
