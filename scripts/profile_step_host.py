"""Where the host time of an eager decode step goes, per op, with the plugin
off and on: the step of scripts/bench_model_step.py under the torch profiler
(CPU and CUDA activity), read back from its trace.

Per launch (a CUDA runtime or driver call that put a kernel, copy or memset
on the GPU) the host time since the previous launch began is charged to the
op it launched: what issuing that op cost the host, Python, dispatcher and
launch included. Per kernel, the time the GPU sat idle before it began is
charged to it as well: where that grows, the host, not the GPU, set the pace.
Both are summed per step and per op class (bench_model_step.op_class) for
each arm, so a routed norm's in-step cost can be read next to FlashInfer's,
and any change in the ops around it shows up too.

Part two, per call in context: a loop of the ops that sit between two norms
in the step (a GEMV-sized GEMM, SwiGLU, a copy), with and without one norm
call per iteration, for FlashInfer's rmsnorm, the bundled Triton function
called directly and the routed call. The difference is what one norm costs
among other work, next to the tight-loop figure of bench_eager_gpu.py.

    python scripts/profile_step_host.py [--models llama3-8b] [--batches 1 32] [--steps 5] [--repeats 2]
        [--json OUT.json] [--trace-dir DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_model_step as steps  # noqa: E402

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_CATEGORIES = ("cuda_runtime", "cuda_driver")


def launch_samples(trace: Dict[str, Any]) -> Dict[str, Dict[str, List[float]]]:
    """Per op class, per launch or kernel: the host µs charged to it, and the
    GPU µs busy and idle before it (see the module doc)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    gpu = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES and "correlation" in e.get("args", {}):
            gpu[e["args"]["correlation"]] = e
    launches = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in HOST_CATEGORIES
                       and e.get("args", {}).get("correlation") in gpu), key=lambda e: e["ts"])
    out: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))

    def op(event: Dict[str, Any]) -> str:
        return steps.op_class(event["name"]) if event["cat"] == "kernel" else event["cat"]

    for before, launch in zip(launches, launches[1:]):
        out[op(gpu[launch["args"]["correlation"]])]["host_us"].append(launch["ts"] - before["ts"])
    kernels = sorted(gpu.values(), key=lambda e: e["ts"])
    for before, kernel in zip(kernels, kernels[1:]):
        out[op(kernel)]["gpu_us"].append(kernel.get("dur", 0))
        out[op(kernel)]["gpu_idle_before_us"].append(max(0.0, kernel["ts"] - (before["ts"] + before.get("dur", 0))))
    return out


def summarize(samples: Dict[str, Dict[str, List[float]]], n_steps: int) -> Dict[str, Dict[str, float]]:
    """Per op class: launches, host µs, GPU busy and idle µs per step, and the
    median host µs per launch (robust to the odd collection pause)."""
    rows = {}
    for name, fields in samples.items():
        host = fields.get("host_us", [])
        rows[name] = {"launches": len(host) / n_steps, "host_us": sum(host) / n_steps,
                      "host_median_per_launch_us": statistics.median(host) if host else 0.0,
                      "gpu_us": sum(fields.get("gpu_us", [])) / n_steps,
                      "gpu_idle_before_us": sum(fields.get("gpu_idle_before_us", [])) / n_steps}
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["host_us"]))


def profile_step(step: Callable[[], Any], n_steps: int, trace_path: Path) -> Dict[str, Dict[str, List[float]]]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n_steps):
            step()
        torch.cuda.synchronize()
    prof.export_chrome_trace(str(trace_path))
    trace = json.loads(trace_path.read_text())
    with gzip.open(str(trace_path) + ".gz", "wt") as f:
        json.dump(trace, f)
    trace_path.unlink()
    return launch_samples(trace)


def in_context(batch: int, hidden: int, number: int, rounds: int) -> Dict[str, float]:
    """Per norm call, µs: the loop with one norm per iteration minus the loop
    without, for each way of calling it (see the module doc)."""
    import torch

    import flashinfer
    import flashinfer.norm as fnorm
    import flashinfer_trace_apply as fita
    from flashinfer_trace_apply import loaders

    dev, dt = "cuda", torch.bfloat16
    x = torch.randn(batch, hidden, device=dev, dtype=dt)
    w = torch.randn(hidden, device=dev, dtype=dt) + 1
    gate_up = torch.randn(2 * 1024, hidden, device=dev, dtype=dt) * 0.02
    silu_and_mul = flashinfer.activation.silu_and_mul
    original = fnorm.rmsnorm
    folder = fita.bundled_solutions_path()
    solutions = fita.load_solutions(folder)
    triton_direct = loaders.load(solutions[f"rmsnorm_h{hidden}"], f"rmsnorm_h{hidden}").fn
    scratch = torch.empty_like(x)

    def around():
        scratch.copy_(x)
        silu_and_mul(scratch @ gate_up.t())

    def loop(norm: Optional[Callable[[], Any]], with_around: bool = True) -> float:
        def body():
            if with_around:
                around()
            if norm is not None:
                norm()
        for _ in range(20):
            body()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(number):
            body()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / number * 1e6

    arms = {
        "flashinfer": lambda: original(scratch, w, 1e-6, None, None),
        "triton direct": lambda: triton_direct(scratch, w, 1e-6),
        "routed (ours)": lambda: fnorm.rmsnorm(scratch, w, 1e-6, None, None),
    }
    times: Dict[str, List[float]] = defaultdict(list)
    for _ in range(rounds):
        times["none"].append(loop(None))
        for name, call in arms.items():
            routed = name.startswith("routed")
            if routed:
                fita.enable_apply(solutions, definitions=folder)
            try:
                times[name].append(loop(call))
                times[f"{name}, tight loop"].append(loop(call, with_around=False))
                hits = fita.stats().get("flashinfer.norm.rmsnorm", {}).get("hit", 0)
            finally:
                if routed:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fita.disable_apply()
            if routed and hits < 2 * number:
                raise SystemExit(f"routed arm: {hits} hits for {2 * number} calls: not routed")
    base = statistics.median(times["none"])
    return {"loop_without_norm_us": base,
            **{name: statistics.median(v) - (0.0 if "tight" in name else base)
               for name, v in times.items() if name != "none"}}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["llama3-8b"], choices=list(steps.MODELS),
                        help="steps to profile (none: the in-context loops only)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--steps", type=int, default=5, help="profiled steps per arm and repeat")
    parser.add_argument("--repeats", type=int, default=2, help="profiles per arm, the arms taking turns")
    parser.add_argument("--number", type=int, default=2000, help="iterations per in-context loop")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the in-context loops")
    parser.add_argument("--json")
    parser.add_argument("--trace-dir", default=".")
    args = parser.parse_args(argv)

    import torch

    import flashinfer_trace_apply as fita

    if not torch.cuda.is_available():
        print("profile_step_host.py needs a CUDA GPU", file=sys.stderr)
        return 2
    folder = fita.bundled_solutions_path()
    solutions = fita.load_solutions(folder)
    routing = {"fused_topk_deepseek": None}
    report: Dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "argv": argv if argv is not None else sys.argv[1:], "steps": {}, "in_context": {}}
    trace_dir = Path(args.trace_dir)
    trace_dir.mkdir(parents=True, exist_ok=True)
    for key in args.models:
        for batch in args.batches:
            step = steps.build_step(steps.MODELS[key], batch, routing)
            samples: Dict[str, Dict[str, Dict[str, List[float]]]] = {
                "off": defaultdict(lambda: defaultdict(list)), "on": defaultdict(lambda: defaultdict(list))}
            for repeat in range(args.repeats):  # the sides take turns
                for side in ("off", "on"):
                    if side == "on":
                        fita.enable_apply(solutions, definitions=folder)
                    try:
                        got = profile_step(step, args.steps, trace_dir / f"{key}_b{batch}_{side}_{repeat}.json")
                    finally:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            fita.disable_apply()
                    for name, fields in got.items():
                        for field, values in fields.items():
                            samples[side][name][field].extend(values)
            sides = {side: summarize(samples[side], args.steps * args.repeats) for side in samples}
            report["steps"][f"{key} b{batch}"] = sides
            print(f"== {key} batch {batch}: per step, µs (host charged, median per launch / GPU busy / GPU idle before)",
                  flush=True)
            for name in sorted(set(sides["off"]) | set(sides["on"])):
                cells = []
                for side in ("off", "on"):
                    r = sides[side].get(name, {})
                    cells.append(f"{side}: n={r.get('launches', 0):5.0f} host={r.get('host_us', 0):8.1f} "
                                 f"med={r.get('host_median_per_launch_us', 0):5.1f} gpu={r.get('gpu_us', 0):8.1f} "
                                 f"idle={r.get('gpu_idle_before_us', 0):7.1f}")
                print(f"  {name:28s} " + " | ".join(cells), flush=True)
            for side in ("off", "on"):
                total = {f: sum(r.get(f, 0) for r in sides[side].values()) for f in ("host_us", "gpu_us", "gpu_idle_before_us")}
                print(f"  total {side}: " + " ".join(f"{k}={v:.0f}" for k, v in total.items()), flush=True)
    for batch in args.batches:
        report["in_context"][f"b{batch}"] = in_context(batch, 4096, args.number, args.rounds)
        print(f"== in context, hidden 4096, batch {batch}, µs per norm call: "
              + json.dumps({k: round(v, 2) for k, v in report["in_context"][f"b{batch}"].items()}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
