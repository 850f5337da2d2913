"""The ``flashinfer-trace-apply`` command line.

    flashinfer-trace-apply check [DIR] [--json] [--batch N] [--dtype D] [--workloads STATS_DIR]
                                                    verify a curated folder here
    flashinfer-trace-apply list [DIR]               what a folder would route
    flashinfer-trace-apply run --path DIR -- CMD    run CMD with the plugin on
    flashinfer-trace-apply stats DIR [--json|--prometheus]
                                                    add up what every process routed
    flashinfer-trace-apply doctor [DIR] [--import MOD] [--json]
                                                    will each definition be routed here
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from .env import ENABLE_VAR, PATH_VAR, STATS_DIR_VAR


def _default_folder() -> str:
    from .bundled import bundled_solutions_path  # noqa: PLC0415

    return str(bundled_solutions_path())


def _cmd_check(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from .check import counts, format_table, rows_as_dicts, run_check, succeeded, summary_as_dicts, total_stats  # noqa: PLC0415

    from .check import describe_device, summary_counts  # noqa: PLC0415
    from .catalog import load_solutions  # noqa: PLC0415

    folder = args.folder or _default_folder()
    recorded = coverage = None
    if args.workloads:
        from .recorded_shapes import read_recorded  # noqa: PLC0415

        if args.batch or args.dtype:
            print("flashinfer-trace-apply check: --workloads replays the recorded shapes; leave out --batch and --dtype",
                  file=sys.stderr)
            return 2
        recorded = read_recorded(args.workloads)  # a malformed file: one line naming it (main)
        coverage = recorded.coverage(load_solutions(folder))
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    dtypes = [getattr(torch, name) for name in args.dtype] if args.dtype else None
    # Said first: loading is quick, the checks are not.
    device = describe_device(load_solutions(folder))
    if not args.json:
        print(f"curated folder: {folder}", flush=True)
        print(f"device: {device}", flush=True)
        if coverage is not None:
            print(_coverage_text(coverage), flush=True)
    rows = run_check(folder, batches=args.batch, progress=progress, dtypes=dtypes, timing=not args.no_timing,
                     recorded=recorded.shapes if recorded is not None else None)
    tally = counts(rows)
    ok = succeeded(rows)
    report = {
        "folder": folder,
        "device": device,
        "ok": ok,
        "counts": tally,  # per call
        "summary_counts": summary_counts(rows),  # per row of the table
        "summary": summary_as_dicts(rows),
        "rows": rows_as_dicts(rows),
        "stats": total_stats(rows),
    }
    if coverage is not None:
        report["workloads"] = coverage
    if args.save_json:
        with open(args.save_json, "w") as f:
            json.dump(report, f, indent=2)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(rows))
        for api_name, per_api in sorted(total_stats(rows).items()):
            print(f"stats {api_name}: " + ", ".join(f"{k}={v}" for k, v in per_api.items()))
        rows_tally = summary_counts(rows)
        print(f"{rows_tally['pass']} passed, {rows_tally['skip']} skipped, {rows_tally['fail'] + rows_tally['error']} failed "
              f"(rows of the table; {len(rows)} calls)")
    return 0 if ok else 1


def _coverage_text(coverage: dict) -> str:
    recorded, missing, foreign = coverage["recorded"], coverage["not_recorded"], coverage["not_in_folder"]
    lines = [f"recorded shapes: {coverage['directory']} ({coverage['files']} stats file(s))",
             f"  replayed, with recorded shapes ({len(recorded)}): "
             + (", ".join(f"{n} ({k})" for n, k in recorded.items()) or "none")]
    if missing:
        lines.append(f"  not checked, no recorded shapes ({len(missing)}): {', '.join(missing)}")
    if foreign:
        lines.append(f"  recorded but not in this folder ({len(foreign)}): {', '.join(foreign)}")
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    from .catalog import load_solutions  # noqa: PLC0415

    folder = args.folder or _default_folder()
    loaded = load_solutions(folder)
    policy = getattr(loaded, "policy", None)
    for definition, solution in sorted(loaded.items()):
        rules = []
        if policy is not None and not policy.admits(definition):
            rules.append("off: left out by the policy's allow/deny")
        if solution.spec.applies_when:
            rules.append(f"applies_when: {' and '.join(solution.spec.applies_when)}")
        operating = policy.get(definition).operating() if policy is not None else {}
        rules += [f"{key}: {str(value).lower() if isinstance(value, bool) else value}" for key, value in operating.items()]
        print("\t".join([definition, solution.name, solution.spec.language, *rules]))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .catalog import load_solutions  # noqa: PLC0415

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("flashinfer-trace-apply run: give a command after --", file=sys.stderr)
        return 2
    folder = args.path or _default_folder()
    if os.path.isdir(os.path.join(folder, "solutions")):
        load_solutions(folder)  # a broken or uncurated folder stops here, said in one line
    os.environ[ENABLE_VAR] = "1"
    os.environ[PATH_VAR] = os.path.abspath(args.path or _default_folder())
    # exec keeps the PID (process managers, signals); the .pth hook in the
    # new interpreter does the rest.
    os.execvp(command[0], command)
    return 127  # not reached


def _cmd_stats(args: argparse.Namespace) -> int:
    from .errors import ConfigError  # noqa: PLC0415
    from .stats_report import format_prometheus, format_table, read_dir, totals  # noqa: PLC0415

    try:
        records = read_dir(args.directory)
    except ConfigError as exc:
        print(f"flashinfer-trace-apply stats: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"totals": totals(records), "processes": records}, indent=2))
    elif args.prometheus:
        sys.stdout.write(format_prometheus(records))
    else:
        print(format_table(records))
    return 0


def _version_line() -> str:
    """Ours and the releases it runs against, read from package metadata
    (importing torch or FlashInfer just to print a version costs seconds)."""
    from importlib import metadata  # noqa: PLC0415

    from . import __version__  # noqa: PLC0415

    found = []
    for dist in ("flashinfer-python", "torch", "triton"):
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            found.append(f"{dist} not installed")
    return f"flashinfer-trace-apply {__version__} ({', '.join(found)})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashinfer-trace-apply",
        description="Route FlashInfer calls to custom kernels.",
        formatter_class=argparse.RawTextHelpFormatter,  # keeps --version on one line
    )
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="verb", required=True)
    check = sub.add_parser("check", help="verify every solution of a curated folder against its reference")
    check.add_argument("folder", nargs="?", help="curated folder (default: the bundled one)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--batch", type=int, action="append", help="batch size to test (repeatable; default 1 and 3 on CPU, 1 3 127 4096 on GPU)")
    check.add_argument("--dtype", action="append", choices=["bfloat16", "float16"], help="dtype to test (repeatable; default both)")
    check.add_argument("--no-timing", action="store_true", help="on a GPU, skip timing the original and the solution")
    check.add_argument("--workloads", metavar="STATS_DIR",
                       help=f"replay exactly the call shapes processes recorded in {STATS_DIR_VAR}=STATS_DIR\n"
                            "(instead of the default batch sizes; definitions without any are listed, not checked)")
    check.add_argument("--save-json", metavar="PATH", help="also write the --json report to PATH")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    check.set_defaults(run=_cmd_check)
    lister = sub.add_parser("list", help="list the definitions a curated folder serves")
    lister.add_argument("folder", nargs="?")
    lister.set_defaults(run=_cmd_list)
    summed = sub.add_parser("stats", help=f"add up the stats files processes wrote to {STATS_DIR_VAR}")
    summed.add_argument("directory")
    form = summed.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="machine-readable output")
    form.add_argument("--prometheus", action="store_true", help="Prometheus text exposition")
    summed.set_defaults(run=_cmd_stats)
    from .cli_trace_sets import add_trace_set_commands  # noqa: PLC0415

    add_trace_set_commands(sub)
    runner = sub.add_parser("run", help="run a command with the plugin enabled")
    runner.add_argument("--path", help="curated folder (default: the bundled one)")
    runner.add_argument("command", nargs=argparse.REMAINDER)
    runner.set_defaults(run=_cmd_run)
    from .doctor_report import add_command as add_doctor  # noqa: PLC0415

    add_doctor(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from .errors import ConfigError  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        # A folder or file to fix: one line naming it, not a traceback.
        print(f"flashinfer-trace-apply {args.verb}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
