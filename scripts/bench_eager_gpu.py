"""Wall time per eager call of ``flashinfer.rmsnorm`` (or, with ``--op``,
``fused_add_rmsnorm``, in place) on a GPU, launch included: FlashInfer's kernel, the same call routed by flashinfer_trace_apply
to the bundled Triton rmsnorm, that Triton function called directly, and
FlashInfer's built-in trace_apply routing to the same function. All in one
process, side by side.

    python scripts/bench_eager_gpu.py [--op rmsnorm|fused_add_rmsnorm] [--hidden 4096] [--batch 1 32 512 8192] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import json
import sys
import time
import warnings
from typing import Any, Callable, Dict, List

import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply import loaders


def per_call_us(fn: Callable[[], Any], number: int, repeat: int) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / number * 1e6


def bundled(name: str) -> Callable:
    solution = fita.load_solutions(fita.bundled_solutions_path())[name]
    return loaders.load(solution, name).fn


def routed_hits(which: str, builtin: Any, op: str) -> int:
    """Hits the engine counted for ``op`` since it was enabled (each round
    enables it afresh)."""
    counts = fita.stats() if which == "ours" else builtin.stats()
    return sum(v.get("hit", 0) for api, v in counts.items() if api.rsplit(".", 1)[-1] == op)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=["rmsnorm", "fused_add_rmsnorm"], default="rmsnorm")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32, 512, 8192])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=9, help="interleaved rounds; the best of each case is kept")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    import flashinfer.trace_apply as builtin

    name = f"{args.op}_h{args.hidden}"
    solution = bundled(name)

    def engine(which: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fita.disable_apply()
            builtin.disable_apply()
        if which == "ours":
            fita.enable_apply({name: solution})
        elif which == "builtin":
            builtin.enable_apply({name: solution})

    rows: List[Dict[str, Any]] = []
    for batch in args.batch:
        x = torch.randn(batch, args.hidden, dtype=torch.bfloat16, device="cuda")
        w = torch.randn(args.hidden, dtype=torch.bfloat16, device="cuda")
        # The API is looked up at call time: enabling replaces the attribute.
        if args.op == "rmsnorm":
            inputs = (x, w)
            api_call = lambda: flashinfer.rmsnorm(x, w)  # noqa: E731
        else:  # in place: the residual grows by about |w| a call, far from bf16's range
            inputs = (x, torch.randn_like(x), w)
            api_call = lambda: flashinfer.fused_add_rmsnorm(*inputs)  # noqa: E731
        cases = {
            "original_us": ("off", api_call),
            "triton_direct_us": ("off", lambda: solution(*inputs)),
            "ours_us": ("ours", api_call),
            "builtin_us": ("builtin", api_call),
        }
        # Interleaved rounds, best of each: launch-bound timings drift with
        # clocks and host noise, and interleaving spreads that over all cases.
        samples: Dict[str, List[float]] = {key: [] for key in cases}
        hits: Dict[str, int] = {}  # per routed case, the fewest hits an engine counted in a round
        gc.disable()  # a collection inside one timed run is noise, not dispatch
        try:
            for _ in range(args.repeat):
                for key, (which, fn) in cases.items():
                    engine(which)
                    samples[key].append(per_call_us(fn, args.number, 1))
                    if which != "off":
                        hits[key] = min(hits.get(key, args.number), routed_hits(which, builtin, args.op))
        finally:
            gc.enable()
        engine("off")
        row: Dict[str, Any] = {"batch": batch, **{key: min(v) for key, v in samples.items()}}
        # A case whose engine did not route every timed call measured FlashInfer's kernel, not a routing.
        row["not_routed"] = [key for key, n in hits.items() if n < args.number]
        # Differences paired within a round cancel slow drift (clocks, host
        # load) that the best-of figures do not; the median of them is reported.
        for engine_key, label in (("ours_us", "ours"), ("builtin_us", "builtin")):
            diffs = [a - b for a, b in zip(samples[engine_key], samples["triton_direct_us"])]
            row[f"{label}_minus_direct_us"] = statistics.median(diffs)
        rows.append(row)
    device = torch.cuda.get_device_name()
    print(f"device={device} torch={torch.__version__} flashinfer={flashinfer.__version__} op={args.op} hidden={args.hidden} bf16")
    print("| batch | FlashInfer kernel µs | Triton direct µs | routed by ours µs | routed by built-in µs | ours − direct µs (median of paired rounds) | built-in − direct µs (same) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["not_routed"]:
            print(f"| {r['batch']} | NOT ROUTED in some round: {', '.join(r['not_routed'])} (those figures are FlashInfer's kernel) |")
        print(
            f"| {r['batch']} | {r['original_us']:.2f} | {r['triton_direct_us']:.2f} | {r['ours_us']:.2f} | "
            f"{r['builtin_us']:.2f} | {r['ours_minus_direct_us']:+.2f} | {r['builtin_minus_direct_us']:+.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "op": args.op, "hidden": args.hidden, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
