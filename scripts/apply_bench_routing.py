"""Turn a GPU run of scripts/bench_solutions.py into routing decisions for
the bundled folder, and regenerate it.

    python scripts/apply_bench_routing.py RUN.json [MORE.json ...] [--dry-run]

Per definition in the run(s), from the kernel-time ratios (FlashInfer's
kernel time / ours, per dtype and batch size):

- batch sizes where any dtype is below 0.9x are left to FlashInfer's kernel:
  ``applies_when`` routes only the runs of measured batch sizes where every
  dtype is at least 0.9x, bounded at the measured sizes either side (a size
  between a good and a bad measurement goes to FlashInfer);
- the definition is left out of the bundle when, counting the batch sizes
  left to FlashInfer as 1.0x, some dtype's geometric mean is below 1.0x, or
  no batch size is routed at all (the note keeps the measured ratios);
- otherwise it is bundled with no bound.

Decisions go to scripts/bundle_routing.json (definitions not in the run keep
theirs), which scripts/build_solutions.py reads; it then regenerates
solutions/, definitions/ and trace_apply.yaml. ``--dry-run`` prints only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
ROUTING_FILE = ROOT / "scripts" / "bundle_routing.json"
FLOOR, TARGET = 0.9, 1.0


def var_axis(definition: str) -> str:
    """The definition's variable axis the benchmark's batch size sets."""
    found = list(ROOT.glob(f"definitions/*/{definition}.json"))
    if not found:
        raise SystemExit(f"no definitions/*/{definition}.json: is {definition} bundled?")
    axes = json.loads(found[0].read_text())["axes"]
    names = [k for k, v in axes.items() if v.get("type") == "var"]
    return names[0]


def geomean(values: List[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def decide(definition: str, ratios: Dict[str, Dict[int, float]]) -> Tuple[str, Any]:
    """("bundle", None) | ("bounded", [condition]) | ("left_out", note)."""
    batches = sorted({b for per in ratios.values() for b in per})
    good = [all(per.get(b, 0.0) >= FLOOR for per in ratios.values()) for b in batches]
    shown = "; ".join(f"{dt}: " + ", ".join(f"{b}:{r:.2f}x" for b, r in sorted(per.items())) for dt, per in sorted(ratios.items()))
    if not any(good):
        return "left_out", f"below {FLOOR}x at every measured size ({shown})"
    effective = {dt: geomean([r if good[batches.index(b)] else 1.0 for b, r in per.items()]) for dt, per in ratios.items()}
    low = {dt: g for dt, g in effective.items() if g < TARGET}
    if low:
        means = ", ".join(f"{dt} {g:.3f}x" for dt, g in sorted(low.items()))
        return "left_out", f"geomean below {TARGET}x with shapes under {FLOOR}x left to FlashInfer ({means}; {shown})"
    if all(good):
        return "bundle", None
    axis = var_axis(definition)
    parts = []
    i = 0
    while i < len(batches):
        if not good[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(batches) and good[j + 1]:
            j += 1
        conds = []
        if i > 0:
            conds.append(f"{axis} >= {batches[i]}")
        if j < len(batches) - 1:
            conds.append(f"{axis} <= {batches[j]}")
        parts.append(" and ".join(conds))
        i = j + 1
    text = " or ".join(f"({p})" if " and " in p and len(parts) > 1 else p for p in parts)
    return "bounded", [text]


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="JSON written by bench_solutions.py --json")
    parser.add_argument("--dry-run", action="store_true", help="print the decisions, write nothing")
    args = parser.parse_args(argv)
    ratios: Dict[str, Dict[str, Dict[int, float]]] = {}
    for path in args.runs:
        for row in json.loads(Path(path).read_text())["rows"]:
            if "error" in row:
                print(f"{row['definition']} {row['dtype']} batch {row['batch']}: error in the run, counted as 0x: "
                      f"{row['error']}", file=sys.stderr)
            ratios.setdefault(row["definition"], {}).setdefault(row["dtype"], {})[row["batch"]] = row.get("speedup", 0.0)
    routing = json.loads(ROUTING_FILE.read_text()) if ROUTING_FILE.exists() else {}
    applies, left = dict(routing.get("applies_when", {})), dict(routing.get("left_out", {}))
    for definition in sorted(ratios):
        verdict, detail = decide(definition, ratios[definition])
        applies.pop(definition, None)
        left.pop(definition, None)
        if verdict == "bounded":
            applies[definition] = detail
        elif verdict == "left_out":
            left[definition] = detail
        print(f"{definition}: {verdict}" + (f" {detail}" if detail else ""))
    if args.dry_run:
        return 0
    ROUTING_FILE.write_text(json.dumps({"applies_when": dict(sorted(applies.items())),
                                        "left_out": dict(sorted(left.items()))}, indent=2) + "\n")
    print(f"wrote {ROUTING_FILE.relative_to(ROOT)}; regenerating the bundled folder", file=sys.stderr)
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_solutions  # noqa: PLC0415 - reads the file just written

    sys.argv = ["build_solutions.py"]
    return build_solutions.main()


if __name__ == "__main__":
    sys.exit(main())
