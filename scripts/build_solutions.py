"""Regenerate the bundled Solution JSONs from the kernel sources.

One kernel source serves many compile-time shapes: each (op, shape) pair
below becomes ``solutions/<family>/<definition>.json`` with the source
inlined, as the FlashInfer-Bench Solution schema wants. Run it after editing
a kernel; tests fail if a JSON no longer matches its source.

    python scripts/build_solutions.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "solutions" / "src"

# (family folder, definition prefix, kernel source, const-axis values)
CATALOG = [
    ("norm", "rmsnorm_h", "rmsnorm_triton.py", [4096]),  # Llama-3.1-8B
]


def solution_for(prefix: str, value: int, source_name: str) -> dict:
    return {
        "name": f"fita_{prefix}{value}_triton",
        "definition": f"{prefix}{value}",
        "author": "flashinfer_trace_apply",
        "description": f"Bundled Triton kernel from solutions/src/{source_name}.",
        "spec": {
            "language": "triton",
            "target_hardware": ["sm80", "sm89", "sm90", "sm100"],
            "entry_point": f"{source_name}::run",
            "dependencies": ["triton >= 3.0", "torch >= 2.4"],
            "destination_passing_style": False,
        },
        "sources": [{"path": source_name, "content": (SOURCES / source_name).read_text()}],
    }


def expected_files() -> dict:
    files = {}
    for family, prefix, source_name, values in CATALOG:
        for value in values:
            path = ROOT / "solutions" / family / f"{prefix}{value}.json"
            files[path] = json.dumps(solution_for(prefix, value, source_name), indent=2) + "\n"
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args()
    stale = [p for p, text in expected_files().items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)}")
        return 1 if stale else 0
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(expected_files())} solution file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
