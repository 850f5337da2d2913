"""Where the host time of one eager call goes, on a GPU: FlashInfer's
``rmsnorm`` against the bundled Triton rmsnorm, taken apart piece by piece
(allocation, Triton's launcher layers, the launch fast path's key and hook
checks, the plugin's dispatch), each timed side by side in one process.

    python scripts/profile_eager_launch.py [--hidden 4096] [--batch 1] [--cprofile 5000]

Each row is the median over interleaved rounds of the wall time per call of
a loop of calls ending in one synchronize; at batch 1 the kernels run for
about 2 µs, so the rows are host time. ``--cprofile N`` also prints where N
routed calls spend their time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import pstats
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List

import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply import loaders


def per_call_us(fn: Callable[[], object], number: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / number * 1e6


def table(cases: Dict[str, object], number: int, rounds: int) -> Dict[str, float]:
    """Median µs per call of each case over interleaved rounds. A case is a
    callable, or (callable, context manager factory) to run its rounds in."""
    cases = {name: case if isinstance(case, tuple) else (case, contextlib.nullcontext) for name, case in cases.items()}
    for fn, context in cases.values():
        with context():
            for _ in range(100):
                fn()
    samples: Dict[str, List[float]] = {name: [] for name in cases}
    gc.disable()
    try:
        for _ in range(rounds):
            for name, (fn, context) in cases.items():
                with context():
                    samples[name].append(per_call_us(fn, number))
    finally:
        gc.enable()
    return {name: statistics.median(v) for name, v in samples.items()}


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cprofile", type=int, default=0)
    args = parser.parse_args(argv)

    name = f"rmsnorm_h{args.hidden}"
    solution = loaders.load(fita.load_solutions(fita.bundled_solutions_path())[name], name).fn
    launcher = solution.__globals__["_RMSNORM_ROWS"]
    x = torch.randn(args.batch, args.hidden, device="cuda").to(torch.bfloat16)
    w = torch.randn(args.hidden, device="cuda").to(torch.bfloat16)
    out = torch.empty_like(x)
    for _ in range(5):
        solution(x, w)
    torch.cuda.synchronize()
    site = solution.__globals__["_RMSNORM"].sites[args.hidden][args.batch > 256]
    assert launcher.off is None and site.ready, (launcher.off, site.ready)
    (entry,) = site.ready.values()
    device = entry[-1]
    compiled = next(c for c in launcher.kernel.device_caches[device][0].values())
    stream = launcher._get_stream(device)
    c_launch = compiled.run.launch  # the signature's C launcher
    cl = compiled.run
    kwargs = dict(site.fixed)  # the bundled kernel's own constexprs and options
    rt = (x, out, w, x.stride(0), 0, out.stride(0), 0, 1, args.hidden, 1e-6)
    # Every bound parameter, constexprs included: the C launcher skips those itself.
    bound, _, _ = launcher.kernel.device_caches[device][4](*rt, **kwargs)
    launch_args = list(bound.values())
    ptr_args = [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in launch_args]
    grid = (args.batch, 1, 1)
    meta = compiled.packed_metadata
    fn_handle = compiled.function

    def raw(values):
        return lambda: c_launch(grid[0], 1, 1, stream, fn_handle, cl.launch_cooperative_grid, cl.launch_pdl,
                                None, None, meta, None, None, None, *values)

    import triton
    from triton.runtime import driver as _driver

    drv = _driver.active
    rows = table({
        "loop overhead (lambda: None)": lambda: None,
        "torch.empty_like(x)": lambda: torch.empty_like(x),
        "torch.empty(shape, dtype=, device=)": lambda: torch.empty(x.shape, dtype=x.dtype, device=x.device),
        "flashinfer.rmsnorm(x, w)": lambda: flashinfer.rmsnorm(x, w),
        "flashinfer.rmsnorm(x, w, out=out)": lambda: flashinfer.rmsnorm(x, w, out=out),
        "C launcher, tensor args": raw(launch_args),
        "C launcher, int pointers": raw(ptr_args),
        "CudaLauncher.__call__": lambda: cl(grid[0], 1, 1, stream, fn_handle, meta, None, None, None, *launch_args),
        "LaunchSite (key + checks + launch)": lambda: site(args.batch, 1, *rt),
        "LaunchSite.python_launch (one Python frame)": lambda: site.python_launch(args.batch, 1, *rt),
        "piece: site key (slow-path twin)": lambda: site._key(rt),
        "piece: x.new_empty(shape)": lambda: x.new_empty((args.batch, args.hidden)),
        "kernel[grid] standard launch": lambda: launcher.kernel[grid](*rt, **kwargs),
        "solution(x, w)": lambda: solution(x, w),
        "solution(x, w, out=out)": lambda: solution(x, w, out=out),
        "piece: driver.get_current_device()": drv.get_current_device,
        "piece: driver.get_current_stream(dev)": lambda: drv.get_current_stream(device),
        "piece: launcher._options()": launcher._options,
        "piece: launcher._hooks_idle()": launcher._hooks_idle,
        "piece: the site's device read": site.python_launch.__globals__["_device"],
        "piece: x.data_ptr()": x.data_ptr,
        "piece: torch.cuda.current_device()": torch.cuda.current_device,
        "piece: triton.next_power_of_2": lambda: triton.next_power_of_2(args.hidden),
    }, args.number, args.rounds)
    original = flashinfer.rmsnorm
    fita.enable_apply({name: solution})

    try:
        rows.update(table({
            "routed: flashinfer.rmsnorm(x, w)": lambda: flashinfer.rmsnorm(x, w),
            "routed: flashinfer.rmsnorm(x, w, out=out)": lambda: flashinfer.rmsnorm(x, w, out=out),
            "solution(x, w) again (same rounds)": lambda: solution(x, w),
            "FlashInfer's flashinfer.rmsnorm(x, w) (same rounds)": lambda: original(x, w),
        }, args.number, args.rounds))
        if args.cprofile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.cprofile):
                flashinfer.rmsnorm(x, w)
            profile.disable()
        stats = fita.stats()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fita.disable_apply()
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__} triton={triton.__version__} "
          f"flashinfer={flashinfer.__version__} python={sys.version.split()[0]} {name} bf16 batch={args.batch}")
    print(f"{'case':48s} {'us/call':>9s}")
    for case, us in rows.items():
        print(f"{case:48s} {us:9.2f}")
    print(f"launcher: off={launcher.off} fast_calls={launcher.fast_calls} "
          f"standard_calls={launcher.standard_calls} site.launch={type(site.launch).__name__}")
    print(f"stats: {stats.get('flashinfer.norm.rmsnorm')}")
    if args.cprofile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
