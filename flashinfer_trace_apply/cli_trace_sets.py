"""The ``curate`` and ``export`` subcommands (FlashInfer-Bench trace sets)."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_curate(args: argparse.Namespace) -> int:
    from .curate import curate, format_report  # noqa: PLC0415

    progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    report = curate(args.datasets, args.out, atol=args.atol, rtol=args.rtol, hardware=args.hardware, progress=progress)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if any(r["chosen"] for r in report["rows"]) else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export  # noqa: PLC0415

    report = export(args.folder, args.out, args.workloads)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in report["rows"]:
            print(f"{r['definition']}\t{r['solution']}\t{r['workloads']} workloads" + (f"\t{r['note']}" if r["note"] else ""))
        print(f"wrote a FlashInfer-Bench trace set to {report['out']}")
    return 0


def add_trace_set_commands(sub: "argparse._SubParsersAction") -> None:
    curate = sub.add_parser("curate", help="pick one solution per definition from FlashInfer-Bench trace sets")
    curate.add_argument("datasets", nargs="+", help="trace set folders (definitions/, solutions/, workloads/, traces/)")
    curate.add_argument("-o", "--out", required=True, help="curated folder to write")
    curate.add_argument("--atol", type=float, default=1e-2, help="largest max_absolute_error a trace may have")
    curate.add_argument("--rtol", type=float, default=1e-2, help="largest max_relative_error a trace may have")
    curate.add_argument("--hardware", help="only traces from this hardware (default: this GPU; all without one)")
    curate.add_argument("--json", action="store_true", help="machine-readable report")
    curate.set_defaults(run=_cmd_curate)
    export = sub.add_parser("export", help="write a curated folder as a FlashInfer-Bench trace set")
    export.add_argument("folder")
    export.add_argument("-o", "--out", required=True, help="trace set folder to write")
    export.add_argument("--json", action="store_true", help="machine-readable report")
    export.add_argument("--workloads", metavar="STATS_DIR",
                        help="the workloads are the call shapes processes recorded in FLASHINFER_TRACE_APPLY_STATS_DIR=STATS_DIR\n"
                             "(instead of generated batch sizes)")
    export.set_defaults(run=_cmd_export)
