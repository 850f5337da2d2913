"""What the plugin adds to a process's start-up, measured as whole processes.

Every tensor-parallel worker pays this before it serves, so the figures are
wall-clock times of fresh interpreters, in interleaved rounds (A B A B ...,
so drift in the machine's speed hits both sides alike), reported as the
minimum and the median of each side and the difference of the minimums:

* ``python -c pass`` with ``FLASHINFER_TRACE_APPLY`` unset, and set to 1
  (the .pth hook armed, nothing else happens until ``import flashinfer``);
* ``python -c "import flashinfer"`` without the hook, and with it on over a
  curated folder (default: the bundled one): the hook's whole cost, enable
  included;
* the first ``enable_apply()`` of the folder in a process that has already
  imported FlashInfer (timed inside the process).

Usage: python scripts/bench_startup.py [--rounds N] [--folder DIR] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
ENABLE_VAR = "FLASHINFER_TRACE_APPLY"
PATH_VAR = "FLASHINFER_TRACE_APPLY_PATH"

FIRST_ENABLE = """
import time, warnings
warnings.simplefilter("ignore")
import flashinfer
import flashinfer_trace_apply as fita
t0 = time.perf_counter()
n = fita.enable_apply()
t1 = time.perf_counter()
import sys, json
print(json.dumps({"seconds": t1 - t0, "wrapped": n, "dynamo_imported": "torch._dynamo" in sys.modules}))
"""


def _env(hook: bool, folder: str, cache: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENABLE_VAR)}
    env["FLASHINFER_TRACE_APPLY_CACHE_DIR"] = cache
    if hook:
        env[ENABLE_VAR] = "1"
        env[PATH_VAR] = folder
    return env


def _wall(code: str, env: Dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {code!r}\n{proc.stderr[-2000:]}")
    return elapsed


def paired(code: str, rounds: int, folder: str, cache: str) -> Dict[str, List[float]]:
    off, on = [], []
    _wall(code, _env(True, folder, cache))  # warm the file cache and the solution cache once
    for _ in range(rounds):
        off.append(_wall(code, _env(False, folder, cache)))
        on.append(_wall(code, _env(True, folder, cache)))
    return {"off": off, "on": on}


def first_enable(rounds: int, folder: str, cache: str) -> List[dict]:
    env = {**_env(False, folder, cache), PATH_VAR: folder}
    out = []
    for _ in range(rounds):
        proc = subprocess.run([sys.executable, "-c", FIRST_ENABLE], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def _row(label: str, times: Dict[str, List[float]]) -> Dict[str, float]:
    return {
        "what": label,
        "off_min_ms": 1e3 * min(times["off"]),
        "off_median_ms": 1e3 * statistics.median(times["off"]),
        "on_min_ms": 1e3 * min(times["on"]),
        "on_median_ms": 1e3 * statistics.median(times["on"]),
        "added_ms": 1e3 * (min(times["on"]) - min(times["off"])),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--folder", default=str(ROOT))
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    cache = tempfile.mkdtemp(prefix="fita-bench-cache-")
    rows = [
        _row("python -c pass (variable unset / set)", paired("pass", args.rounds * 4, args.folder, cache)),
        _row("python -c 'import flashinfer' (no hook / hook + folder)",
             paired("import flashinfer", args.rounds, args.folder, cache)),
    ]
    enables = first_enable(args.rounds, args.folder, cache)
    seconds = [e["seconds"] for e in enables]
    if args.markdown:
        print("| what | off min (ms) | off median | on min (ms) | on median | added (min to min, ms) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['what']} | {r['off_min_ms']:.1f} | {r['off_median_ms']:.1f} | {r['on_min_ms']:.1f} | "
                  f"{r['on_median_ms']:.1f} | {r['added_ms']:+.1f} |")
        print(f"| first enable_apply() of the folder ({enables[0]['wrapped']} attributes) | | | "
              f"{1e3 * min(seconds):.1f} | {1e3 * statistics.median(seconds):.1f} | "
              f"torch._dynamo imported: {enables[0]['dynamo_imported']} |")
    else:
        print(json.dumps({"rows": rows, "first_enable": enables}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
