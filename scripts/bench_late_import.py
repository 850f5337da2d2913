"""What watching for late FlashInfer submodules costs (issue 11), side by side.

1. ``import flashinfer.comm, flashinfer.concat_ops, flashinfer.gdn_decode``
   after ``import flashinfer``, in fresh interpreters, with a session on
   (the watcher wraps what they register) and off (enabled, then disabled,
   so both have imported the same modules before the timer); alternated,
   median of N.
2. Importing modules outside FlashInfer while the watcher is armed (one
   extra ``find_spec`` that returns at its prefix check) against the same
   imports with no session; fresh module names each round, one process.

    python scripts/bench_late_import.py [--runs 7] [--modules 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r'''
import json, sys, time, warnings
warnings.simplefilter("ignore")
import flashinfer
import flashinfer_trace_apply as fita
fita.enable_apply({"allreduce_fusion_h4096": lambda input, **_: input, "concat_mla_k_h128_nope128_rope64_d192": lambda **_: None,
                   "rmsnorm_h4096": lambda hidden_states, weight: hidden_states})
if sys.argv[1] == "off":
    # enable imports what it needs (FlashInfer's built-in engine module among
    # them); "off" pays that too, before the timer, so only the watcher differs
    fita.disable_apply()
t0 = time.perf_counter()
import flashinfer.comm, flashinfer.concat_ops, flashinfer.gdn_decode
elapsed = time.perf_counter() - t0
routed = hasattr(flashinfer.comm.allreduce_fusion, "__fita_route__")
print(json.dumps({"s": elapsed, "routed": routed}))
'''


def late_submodules(runs: int) -> dict:
    times = {"off": [], "on": []}
    for _ in range(runs):
        for mode in ("off", "on"):
            out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            assert result["routed"] == (mode == "on"), result
            times[mode].append(result["s"])
    return {mode: statistics.median(v) for mode, v in times.items()}


def unrelated_imports(count: int) -> dict:
    import warnings

    import flashinfer  # noqa: F401

    import flashinfer_trace_apply as fita

    folder = Path(tempfile.mkdtemp(prefix="fita_bench_"))
    sys.path.insert(0, str(folder))
    results = {"off": [], "on": []}
    for round_ in range(6):
        for mode in ("off", "on"):
            names = [f"bench_mod_{round_}_{mode}_{i}" for i in range(count)]
            for name in names:
                (folder / f"{name}.py").write_text("X = 1\n")
            if mode == "on":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fita.enable_apply({"rmsnorm_h4096": lambda hidden_states, weight: hidden_states})
            t0 = time.perf_counter()
            for name in names:
                __import__(name)
            results[mode].append((time.perf_counter() - t0) / count)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fita.disable_apply()
    return {mode: statistics.median(v) for mode, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--modules", type=int, default=300)
    args = parser.parse_args()
    late = late_submodules(args.runs)
    print(f"import flashinfer.comm + concat_ops + gdn_decode after import flashinfer (median of {args.runs} fresh interpreters):")
    print(f"  session off {late['off'] * 1e3:.1f} ms, on {late['on'] * 1e3:.1f} ms, ratio on/off {late['on'] / late['off']:.2f}")
    other = unrelated_imports(args.modules)
    print(f"importing a small module outside FlashInfer (median per import over {args.modules}):")
    print(f"  session off {other['off'] * 1e6:.1f} us, on {other['on'] * 1e6:.1f} us, ratio on/off {other['on'] / other['off']:.2f}")


if __name__ == "__main__":
    main()
