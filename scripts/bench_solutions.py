"""Benchmark the bundled Triton solutions against FlashInfer's own kernels on
one GPU, side by side in one process.

Per definition, dtype and batch size (1 to 16384 rows/tokens):

- kernel time, original and solution: ``--reps`` back-to-back calls captured
  in one CUDA graph, replayed after warm-up, timed with CUDA events (the
  graph takes the CPU launch cost out, so this is GPU time per call); the
  solution is reached through the real FlashInfer API with the plugin on;
- achieved bandwidth (bytes the op must move / kernel time) and its share of
  what a device-to-device copy moving the same bytes achieves on this GPU;
- wall time per eager call (Python, dispatch and launch included: what a
  server without CUDA graphs pays) and per replay of a one-call CUDA graph;
- the largest difference between the solution's and the original's output.

    python scripts/bench_solutions.py [--definitions NAME ... | --all] [--batches 1 16 ...]
        [--dtypes bfloat16 float16] [--json OUT.json] [--markdown OUT.md]

    # afterwards, anywhere (no GPU): put one or more runs' tables into docs/benchmarks.md
    python scripts/bench_solutions.py --from-json OUT.json [MORE.json ...] --update-docs docs/benchmarks.md

Targets (issues 5 and 14): kernel-time ratio original/solution >= 1.0 as a
geometric mean over batch sizes per definition and dtype, no batch below 0.9;
>= 80% of copy bandwidth at large batches. (The eager batch-1 target is
retired: engines replay decode as CUDA graphs, see bench_model_step.py.)
``--kernel-only`` skips the eager and graph wall-time runs (a whole-bundle
pass); ``--section`` names the docs section, so tables of several GPUs stay
side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import re
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = ROOT / "candidates"  # scripts/build_solutions.py: catalog entries not (yet) bundled
SECTION = "## Bundled solutions"

DEFAULT_DEFINITIONS = [
    "rmsnorm_h4096", "rmsnorm_h5120", "rmsnorm_h8192",
    "fused_add_rmsnorm_h4096", "fused_add_rmsnorm_h7168",
    "gemma_rmsnorm_h2304", "gemma_rmsnorm_h3584",
    "gemma_fused_add_rmsnorm_h3584",
    "silu_and_mul_h28672", "silu_and_mul_h37888", "silu_and_mul_h57344",
    "gelu_and_mul_h32768", "gelu_tanh_and_mul_h28672",
    "rope_cos_sin_cache_inplace_d64", "rope_cos_sin_cache_inplace_d128",
]
DEFAULT_BATCHES = [1, 3, 16, 127, 256, 1024, 4096, 16384]
# --family: what engines send each family (rows or tokens a call; sampling
# is per request row, 1 to 256 in SGLang).
FAMILY_BATCHES = {
    "rmsnorm_quant": [1, 3, 127, 1024, 8192],
    "fused_add_rmsnorm_quant": [1, 3, 127, 1024, 8192],
    "top_k_renorm_probs": [1, 3, 16, 64, 127, 256],
    "top_p_renorm_probs": [1, 3, 16, 64, 127, 256],
    "fused_topk_deepseek": [1, 3, 16, 127, 256, 1024, 4096, 8192],
}
# --family: the dtypes its definitions route when --dtypes is not given
# (engines hand the sampling ops float32 probabilities; SGLang routes
# DeepSeek-V3 with fp32 logits, bias and weights; bf16 as FlashInfer's
# template makes them).
FAMILY_DTYPES = {"top_k_renorm_probs": ["float32"], "top_p_renorm_probs": ["float32"],
                 "fused_topk_deepseek": ["float32", "bfloat16"]}
DEFAULT_DTYPES = ["bfloat16", "float16"]
# SGLang's per-request sampling parameters, one value a row.
SAMPLING_TOP_K, SAMPLING_TOP_P = 50, 0.9
# Row stride of the input per rmsnorm width where engines pass a row-strided
# view: DeepSeek MLA's kv_a (512 wide) is a view of latent_cache (512 + 64).
ROW_STRIDE = {512: 576}
# Head counts of a representative model per rope head size: (query, key).
ROPE_HEADS = {64: (32, 8), 128: (32, 8), 256: (8, 4)}
DEVICE = "cuda"  # where make_case builds its tensors (a CPU dry run sets "cpu")
GRAPH_BYTES = 2 << 30  # cap on the memory one timing graph's outputs may take


# ---------------------------------------------------------------------------
# Cases: the API call, its inputs and the bytes it must move.
# ---------------------------------------------------------------------------


def _op_and_size(definition: str) -> Tuple[str, int]:
    """(op, first const axis): rmsnorm_h4096 -> (rmsnorm, 4096),
    fused_topk_deepseek_e256_k8 -> (fused_topk_deepseek, 256)."""
    match = re.fullmatch(r"(.+?)_[a-z]+(\d+)(?:_[a-z]+\d+)*", definition)
    if match is None:
        raise ValueError(f"cannot read the op and size of {definition!r}")
    return match.group(1), int(match.group(2))


def make_case(definition: str, batch: int, dtype: Any, device: Optional[str] = None) -> Tuple[Callable[[], Any], Callable[[Any], List[Any]], int]:
    """(call, outputs, bytes moved per call). ``call`` goes through the
    public FlashInfer API, so it runs the original or, with the plugin on,
    the solution; ``outputs(result)`` lists the tensors holding its results
    (the updated inputs for an in-place API)."""
    import torch  # noqa: PLC0415

    import flashinfer  # noqa: PLC0415

    op, n = _op_and_size(definition)
    size = torch.empty((), dtype=dtype).element_size()
    dev = device or DEVICE
    returned = lambda result: [result]  # noqa: E731
    if op in ("rmsnorm", "gemma_rmsnorm"):
        x = torch.randn(batch, ROW_STRIDE.get(n, n), dtype=dtype, device=dev)[:, :n]
        w = torch.randn(n, dtype=dtype, device=dev)
        fn = getattr(flashinfer, op)
        return (lambda: fn(x, w, eps=1e-6)), returned, (2 * batch * n + n) * size
    if op in ("rmsnorm_quant", "fused_add_rmsnorm_quant"):
        # SGLang's static FP8 calls, positional; out is the caller's fp8 buffer.
        x, w = torch.randn(batch, n, dtype=dtype, device=dev), torch.randn(n, dtype=dtype, device=dev)
        scale = torch.tensor([0.05], dtype=torch.float32, device=dev)
        out = torch.empty(batch, n, dtype=torch.float8_e4m3fn, device=dev)
        if op == "rmsnorm_quant":
            fn = flashinfer.norm.rmsnorm_quant
            return (lambda: fn(out, x, w, scale, 1e-6)), (lambda _: [out]), batch * n * (size + 1) + n * size
        # x stays as it is and residual += x on every call: small x keeps the
        # residual finite over the thousands of timed calls.
        x.mul_(1e-3)
        r = torch.randn(batch, n, dtype=dtype, device=dev)
        fn = flashinfer.norm.fused_add_rmsnorm_quant
        return (lambda: fn(out, x, r, w, scale, 1e-6)), (lambda _: [out, r]), batch * n * (3 * size + 1) + n * size
    if op in ("fused_add_rmsnorm", "gemma_fused_add_rmsnorm"):
        x, r = torch.randn(batch, n, dtype=dtype, device=dev), torch.randn(batch, n, dtype=dtype, device=dev)
        w = torch.randn(n, dtype=dtype, device=dev)
        fn = getattr(flashinfer, op)
        return (lambda: fn(x, r, w, eps=1e-6)), (lambda _: [x, r]), (4 * batch * n + n) * size
    if op in ("silu_and_mul", "gelu_and_mul", "gelu_tanh_and_mul"):
        x = torch.randn(batch, n, dtype=dtype, device=dev)
        fn = getattr(flashinfer, op)
        return (lambda: fn(x)), returned, (batch * n + batch * n // 2) * size
    if op == "rope_cos_sin_cache_inplace":
        hq, hk = ROPE_HEADS.get(n, (32, 8))
        q = torch.randn(batch, hq * n, dtype=dtype, device=dev)
        k = torch.randn(batch, hk * n, dtype=dtype, device=dev)
        max_len = 8192
        inv = 1.0 / (10000 ** (torch.arange(0, n, 2, device=dev, dtype=torch.float32) / n))
        freqs = torch.arange(max_len, device=dev, dtype=torch.float32)[:, None] * inv[None, :]
        cache = torch.cat([freqs.cos(), freqs.sin()], dim=-1)
        positions = torch.randint(0, max_len, (batch,), device=dev, dtype=torch.int64)
        fn = flashinfer.apply_rope_with_cos_sin_cache_inplace
        moved = 2 * batch * (hq + hk) * n * size + batch * n * 4 + batch * 8
        return (lambda: fn(positions, q, k, n, cache, is_neox=True)), (lambda _: [q, k]), moved
    if op in ("top_k_renorm_probs", "top_p_renorm_probs"):
        # Peaked rows, as a model's softmax gives; per-row parameters, as SGLang passes them.
        probs = torch.softmax(torch.randn(batch, n, device=dev) * 4, dim=-1).to(dtype)
        fn = getattr(flashinfer.sampling, op)
        if op == "top_k_renorm_probs":
            param = torch.full((batch,), SAMPLING_TOP_K, dtype=torch.int32, device=dev)
            out_size = size
        else:
            param = torch.full((batch,), SAMPLING_TOP_P, dtype=torch.float32, device=dev)
            out_size = 4  # FlashInfer's top-p returns float32
        return (lambda: fn(probs, param)), returned, batch * n * (size + out_size) + batch * 4
    if op == "fused_topk_deepseek":
        # DeepSeek-V3's router as SGLang calls it (positional, launch_with_pdl
        # True): logits and bias in the dtype under test, the caller's buffers
        # written in place. Random logits, so few ties.
        scores = torch.randn(batch, n, dtype=torch.float32, device=dev).mul_(2).to(dtype)
        bias = (torch.randn(n, dtype=torch.float32, device=dev) * 0.1).to(dtype)
        values = torch.empty(batch, 8, dtype=dtype, device=dev)
        indices = torch.empty(batch, 8, dtype=torch.int32, device=dev)
        fn = flashinfer.fused_moe.fused_topk_deepseek
        moved = batch * n * size + n * size + batch * 8 * (size + 4)
        return (lambda: fn(scores, bias, 8, 4, 8, 2.5, values, indices, True)), (lambda _: [values, indices]), moved
    raise ValueError(f"no benchmark case for {definition}")


def first_outputs(definition: str, batch: int, dtype: Any) -> Tuple[Callable[[], Any], int, List[Any]]:
    """A fresh case (seeded by batch), called once: (call, bytes, copies of
    what that first call produced)."""
    import torch  # noqa: PLC0415

    torch.manual_seed(batch)
    call, outputs, moved = make_case(definition, batch, dtype)
    produced = [t.clone() for t in outputs(call())]
    return call, moved, produced


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


def graph_of(call: Callable[[], Any], reps: int) -> Any:
    import torch  # noqa: PLC0415

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            call()
    torch.cuda.synchronize()
    return graph


def kernel_us(call: Callable[[], Any], bytes_moved: int, budget_ms: float) -> float:
    """GPU time per call: ``reps`` calls in one graph, replayed, CUDA events."""
    import torch  # noqa: PLC0415

    reps = max(1, min(20, GRAPH_BYTES // max(1, bytes_moved)))
    graph = graph_of(call, reps)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    once = max(start.elapsed_time(end), 1e-3)
    replays = int(min(1000, max(5, budget_ms / once)))
    best = math.inf
    for _ in range(3):
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1000.0 / (replays * reps))
    del graph
    return best


def eager_pair_us(original: Callable[[], Any], solution: Callable[[], Any], number: int, rounds: int) -> Dict[str, float]:
    """Wall time per eager call of both, in interleaved rounds (host speed
    drifts by tens of percent between runs on a shared machine; the two sides
    of one round see the same drift). Per side the best round; the ratio is
    the median of the per-round ratios original / solution."""
    import torch  # noqa: PLC0415

    for call in (original, solution):
        for _ in range(20):
            call()
    torch.cuda.synchronize()
    times: Dict[str, List[float]] = {"original": [], "solution": []}
    for _ in range(rounds):
        for side, call in (("original", original), ("solution", solution)):
            start = time.perf_counter()
            for _ in range(number):
                call()
            torch.cuda.synchronize()
            times[side].append((time.perf_counter() - start) / number * 1e6)
    ratios = sorted(o / s for o, s in zip(times["original"], times["solution"]))
    return {
        "original_eager_us": min(times["original"]),
        "solution_eager_us": min(times["solution"]),
        "eager_speedup": ratios[len(ratios) // 2],
    }


def replay_us(call: Callable[[], Any], number: int) -> float:
    """Wall time per replay of a CUDA graph holding one call."""
    import torch  # noqa: PLC0415

    graph = graph_of(call, 1)
    for _ in range(10):
        graph.replay()
    torch.cuda.synchronize()
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(number):
            graph.replay()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / number * 1e6)
    del graph
    return best


_copy_cache: Dict[int, float] = {}


def copy_gbps(bytes_moved: int, budget_ms: float) -> float:
    """Bandwidth of a device-to-device copy moving the same bytes (half read,
    half written), timed the same way as the kernels."""
    import torch  # noqa: PLC0415

    if bytes_moved not in _copy_cache:
        half = max(1, bytes_moved // 2)
        src = torch.empty(half, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        us = kernel_us(lambda: dst.copy_(src), bytes_moved, budget_ms)
        _copy_cache[bytes_moved] = bytes_moved / us / 1e3
        del src, dst
    return _copy_cache[bytes_moved]


# ---------------------------------------------------------------------------
# One definition.
# ---------------------------------------------------------------------------


def _quiet_disable(fita: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fita.disable_apply()


def catalog_solutions() -> Dict[str, Any]:
    """Every generated solution by definition: the bundled folder's and
    candidates/'s (catalog entries left out until a run like this one
    shows them at the bar)."""
    import flashinfer_trace_apply as fita  # noqa: PLC0415

    found = dict(fita.load_solutions(CANDIDATES)) if (CANDIDATES / "solutions").is_dir() else {}
    found.update(fita.load_solutions(fita.bundled_solutions_path()))
    return found


def catalog_folder(definition: str) -> Path:
    """The folder holding ``definition``'s file (no need to load every
    solution of the bundle to find out, once per definition benchmarked)."""
    import flashinfer_trace_apply as fita  # noqa: PLC0415

    bundled = fita.bundled_solutions_path()
    return bundled if any((bundled / "solutions").glob(f"*/{definition}.json")) else CANDIDATES


def bench_definition(definition: str, dtype_name: str, batches: List[int], args: argparse.Namespace, progress: Callable[[str], None]) -> List[Dict[str, Any]]:
    import torch  # noqa: PLC0415

    import flashinfer_trace_apply as fita  # noqa: PLC0415

    folder = catalog_folder(definition)
    solution = fita.load_solutions(folder)[definition]
    definitions = {k: v for k, v in fita.load_definitions(folder).items() if k == definition}
    dtype = getattr(torch, dtype_name)
    rows: List[Dict[str, Any]] = []
    for batch in batches:
        row: Dict[str, Any] = {"definition": definition, "dtype": dtype_name, "batch": batch}
        started = time.perf_counter()
        try:
            call, moved, expected = first_outputs(definition, batch, dtype)
            row["bytes"] = moved
            row["original_us"] = kernel_us(call, moved, args.budget_ms)
            # wall-time runs of about 30 ms each, between 20 and --number calls
            number = int(min(args.number, max(20, 3e4 / max(row["original_us"], 1e-3))))
            if not args.kernel_only:
                row["original_graph_us"] = replay_us(call, number)
            original_call = call  # holds FlashInfer's own function: enabling the plugin leaves it as it is

            fita.enable_apply({definition: solution}, definitions=definitions)
            try:
                call, _, got = first_outputs(definition, batch, dtype)
                row["max_abs_diff"] = max(float((g.float() - e.float()).abs().max()) for g, e in zip(got, expected))
                row["solution_us"] = kernel_us(call, moved, args.budget_ms)
                if not args.kernel_only:
                    row.update(eager_pair_us(original_call, call, number, args.eager_rounds))
                    row["solution_graph_us"] = replay_us(call, number)
                stats = next((v for v in fita.stats().values() if any(v.values())), {})
                others = {k for k, v in stats.items() if v and k != "hit"}
                row["routed"] = bool(stats.get("hit")) and not others
                # The solution declared it does not take these calls (spec.applies_when):
                # the plugin ran FlashInfer's own kernel, as a user would get.
                row["outside_applies_when"] = (not stats.get("hit") and others == {"fallback_constraint"}
                                               and bool(solution.spec.applies_when))
            finally:
                _quiet_disable(fita)
            row["speedup"] = row["original_us"] / row["solution_us"]
            row["solution_gbps"] = moved / row["solution_us"] / 1e3
            row["original_gbps"] = moved / row["original_us"] / 1e3
            row["copy_gbps"] = copy_gbps(moved, args.budget_ms)
            row["copy_fraction"] = row["solution_gbps"] / row["copy_gbps"]
        except Exception as exc:  # noqa: BLE001 - one bad case must not end the run
            _quiet_disable(fita)
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        torch.cuda.empty_cache()
        rows.append(row)
        if "error" in row:
            progress(f"  {definition} {dtype_name} batch={batch}: ERROR {row['error']}")
        else:
            progress(
                f"  {definition} {dtype_name} batch={batch}: original {row['original_us']:.2f} us, "
                f"solution {row['solution_us']:.2f} us ({row['speedup']:.2f}x), "
                f"{100 * row['copy_fraction']:.0f}% of copy, "
                f"eager {row.get('original_eager_us', math.nan):.1f}/{row.get('solution_eager_us', math.nan):.1f} us "
                f"[{time.perf_counter() - started:.1f}s]"
            )
    return rows


# ---------------------------------------------------------------------------
# Summaries and markdown.
# ---------------------------------------------------------------------------


def geomean(values: List[float]) -> float:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def summarize(rows: List[Dict[str, Any]], large_batch: int = 4096) -> List[Dict[str, Any]]:
    groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["definition"], r["dtype"]), []).append(r)
    out = []
    for (definition, dtype), group in groups.items():
        ok = [r for r in group if "error" not in r]
        if not ok:
            error = group[0].get("error")
            out.append({"definition": definition, "dtype": dtype, "error": error, "misses": [f"every batch failed: {error}"]})
            continue
        worst = min(ok, key=lambda r: r["speedup"])
        large = [r for r in ok if r["batch"] >= large_batch]
        smallest = min(ok, key=lambda r: r["batch"])
        summary = {
            "definition": definition,
            "dtype": dtype,
            "geomean_speedup": geomean([r["speedup"] for r in ok]),
            "min_speedup": worst["speedup"],
            "min_speedup_batch": worst["batch"],
            "large_batch_copy_fraction": min((r["copy_fraction"] for r in large), default=math.nan),
            "eager_batch": smallest["batch"],
            "eager_original_us": smallest.get("original_eager_us", math.nan),
            "eager_solution_us": smallest.get("solution_eager_us", math.nan),
            "eager_speedup": smallest.get("eager_speedup", math.nan),
            "max_abs_diff": max(r["max_abs_diff"] for r in ok),
            "all_routed": all(r.get("routed") or r.get("outside_applies_when") for r in ok),
            "errors": len(group) - len(ok),
        }
        misses = []
        if summary["geomean_speedup"] < 1.0:
            misses.append(f"geomean {summary['geomean_speedup']:.2f}x < 1.0")
        low = [r["batch"] for r in ok if r["speedup"] < 0.9]
        if low:
            misses.append(f"below 0.9x at batch {', '.join(map(str, low))}")
        if large and summary["large_batch_copy_fraction"] < 0.8:
            misses.append(f"{100 * summary['large_batch_copy_fraction']:.0f}% of copy bandwidth at batch >= {large_batch}")
        if not summary["all_routed"]:
            misses.append("some calls were not routed")
        if summary["errors"]:
            misses.append(f"{summary['errors']} batch size(s) failed: {next(r['error'] for r in group if 'error' in r)}")
        summary["misses"] = misses
        out.append(summary)
    return out


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _pct(fraction: Any) -> str:
    return "-" if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)) else f"{100 * fraction:.0f}%"


def markdown(report: Dict[str, Any], section: str = SECTION) -> str:
    meta, rows = report["meta"], report["rows"]
    lines = [
        section,
        "",
        f"Measured {meta['date']} on {meta['device']} ({meta['host']}), torch {meta['torch']}, "
        f"triton {meta['triton']}, flashinfer {meta['flashinfer']}, CUDA {meta['cuda']}.",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        "Kernel µs: GPU time per call (calls captured in a CUDA graph, replayed, CUDA events); the solution is",
        "reached through the FlashInfer API with the plugin on. Speed-up = original / solution. % copy: the",
        "solution's bandwidth (bytes the op must move / time) as a share of a device-to-device copy of the same",
        "bytes. Eager µs: wall time per eager call, launch and dispatch included, best of interleaved rounds",
        "(original, solution, original, ...); eager ×: median over rounds of original / solution. Graph µs:",
        "wall time per replay of a one-call CUDA graph.",
        "",
        "### Summary",
        "",
        "| definition | dtype | geomean speed-up | min speed-up (batch) | % copy at batch ≥ 4096 | eager µs at batch 1, original / solution (×) | max abs diff | below target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in report["summary"]:
        if "error" in s:
            lines.append(f"| {s['definition']} | {s['dtype']} | - | - | - | - | - | error: {s['error']} |")
            continue
        lines.append(
            f"| {s['definition']} | {s['dtype']} | {_f(s['geomean_speedup'], '.2f')}x | "
            f"{_f(s['min_speedup'], '.2f')}x ({s['min_speedup_batch']}) | {_pct(s['large_batch_copy_fraction'])} | "
            f"{_f(s['eager_original_us'], '.1f')} / {_f(s['eager_solution_us'], '.1f')} ({_f(s['eager_speedup'], '.2f')}x) | "
            f"{_f(s['max_abs_diff'], '.3g')} | "
            f"{'; '.join(s['misses']) or 'none'} |"
        )
    lines += [
        "",
        "### Per batch size",
        "",
        "| definition | dtype | batch | original µs | solution µs | speed-up | solution GB/s | % copy | eager µs orig / sol (×) | graph µs orig / sol |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['definition']} | {r['dtype']} | {r['batch']} | error: {r['error']} | | | | | | |")
            continue
        mark = " ‡" if r.get("outside_applies_when") else ""
        lines.append(
            f"| {r['definition']} | {r['dtype']} | {r['batch']}{mark} | {r['original_us']:.2f} | {r['solution_us']:.2f} | "
            f"{r['speedup']:.2f}x | {r['solution_gbps']:.0f} | {100 * r['copy_fraction']:.0f}% | "
            f"{_f(r.get('original_eager_us'), '.1f')} / {_f(r.get('solution_eager_us'), '.1f')} ({_f(r.get('eager_speedup'), '.2f')}x) | "
            f"{_f(r.get('original_graph_us'), '.1f')} / {_f(r.get('solution_graph_us'), '.1f')} |"
        )
    if any(r.get("outside_applies_when") for r in rows):
        lines += ["", "‡ outside the solution's `applies_when`: the plugin ran FlashInfer's own kernel (as it does for users)."]
    misses = [f"- {s['definition']} {s['dtype']}: {'; '.join(s['misses'])}" for s in report["summary"] if s.get("misses")]
    lines += ["", "### Below target", ""] + (misses or ["Every definition and dtype measured meets the targets."])
    return "\n".join(lines) + "\n"


def update_docs(doc: Path, section: str, title: str = SECTION) -> None:
    """Replace (or append) the section titled ``title`` of ``doc``; other
    sections stay as they are."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        text = "".join(lines[:start]) + section + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    doc.write_text(text)


def metadata(argv: List[str]) -> Dict[str, Any]:
    import torch  # noqa: PLC0415
    import triton  # noqa: PLC0415

    import flashinfer  # noqa: PLC0415

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(),
        "host": platform.node(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "flashinfer": flashinfer.__version__,
        "cuda": torch.version.cuda,
        "command": "python scripts/bench_solutions.py " + " ".join(shlex.quote(a) for a in argv),
    }


def merge_rows(reports: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The rows of several reports: a later report's rows for a (definition,
    dtype) replace an earlier one's (a re-run after a change), and rows of
    definitions the bundled folder no longer has are left out."""
    import flashinfer_trace_apply as fita  # noqa: PLC0415

    bundled = set(fita.load_solutions(fita.bundled_solutions_path()))
    groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for rep in reports:
        fresh: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
        for row in rep["rows"]:
            fresh.setdefault((row["definition"], row["dtype"]), []).append(row)
        groups.update(fresh)
    gone = sorted({d for d, _ in groups if d not in bundled})
    if gone:
        print(f"left out, no longer bundled: {', '.join(gone)}", file=sys.stderr)
    return [row for (definition, _), rows in groups.items() if definition in bundled for row in rows]


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definitions", nargs="+", help=f"definitions to run (default: {len(DEFAULT_DEFINITIONS)} representative ones)")
    parser.add_argument("--all", action="store_true", help="every bundled definition")
    parser.add_argument("--family", help="comma-separated op names (rmsnorm_quant,fused_add_rmsnorm_quant): every "
                        "bundled definition of those ops, at the family's batch sizes unless --batches is given")
    parser.add_argument("--batches", type=int, nargs="+")
    parser.add_argument("--dtypes", nargs="+", choices=["bfloat16", "float16", "float32"],
                        help=f"default {' '.join(DEFAULT_DTYPES)} (a --family's own: {FAMILY_DTYPES})")
    parser.add_argument("--number", type=int, default=300, help="eager calls / graph replays per wall-time run")
    parser.add_argument("--eager-rounds", type=int, default=7, help="interleaved eager rounds, original then solution")
    parser.add_argument("--budget-ms", type=float, default=30.0, help="GPU time per kernel-time measurement")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--markdown", help="write the markdown section here")
    parser.add_argument("--from-json", nargs="+", help="no GPU: render report(s) written by --json (rows of several runs are merged)")
    parser.add_argument("--update-docs", help="replace the section (--section) of this markdown file")
    parser.add_argument("--section", default=SECTION, help=f"markdown section title (default {SECTION!r})")
    parser.add_argument("--kernel-only", action="store_true", help="kernel time only: no eager or graph wall-time runs")
    args = parser.parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.from_json:
        reports = [json.loads(Path(p).read_text()) for p in args.from_json]
        report = {"meta": reports[0]["meta"], "rows": merge_rows(reports)}
        if len(reports) > 1:
            report["meta"] = dict(report["meta"], command="\n".join(rep["meta"]["command"] for rep in reports))
    else:
        import torch  # noqa: PLC0415

        if not torch.cuda.is_available():
            print("bench_solutions.py needs a CUDA GPU (or --from-json)", file=sys.stderr)
            return 2
        import flashinfer_trace_apply as fita  # noqa: PLC0415

        bundled = sorted(catalog_solutions())
        families = [f.strip() for f in (args.family or "").split(",") if f.strip()]
        if families:
            definitions = [d for d in bundled if _op_and_size(d)[0] in families]
            missing = [f for f in families if not any(_op_and_size(d)[0] == f for d in definitions)]
            if missing:
                print(f"no bundled or candidate definition of: {', '.join(missing)}", file=sys.stderr)
                return 2
        else:
            definitions = bundled if args.all else (args.definitions or DEFAULT_DEFINITIONS)
        unknown = [d for d in definitions if d not in bundled]
        if unknown:
            print(f"not bundled: {', '.join(unknown)}", file=sys.stderr)
            return 2
        rows: List[Dict[str, Any]] = []
        began = time.perf_counter()
        for i, definition in enumerate(definitions):
            op = _op_and_size(definition)[0]
            for dtype_name in args.dtypes or FAMILY_DTYPES.get(op, DEFAULT_DTYPES):
                progress(f"[{i + 1}/{len(definitions)}] {definition} {dtype_name} ({time.perf_counter() - began:.0f}s)")
                batches = args.batches or FAMILY_BATCHES.get(op, DEFAULT_BATCHES)
                rows.extend(bench_definition(definition, dtype_name, batches, args, progress))
            if args.json:  # after each definition: a run cut short keeps what it measured
                Path(args.json).write_text(json.dumps({"meta": metadata(argv), "rows": rows}, indent=2))
        report = {"meta": metadata(argv), "rows": rows}
        report["summary"] = summarize(rows)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    if args.from_json:
        report["summary"] = summarize(report["rows"])
    section = markdown(report, args.section)
    if args.markdown:
        Path(args.markdown).write_text(section)
    if args.update_docs:
        update_docs(Path(args.update_docs), section, args.section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
