"""The ``flashinfer-trace-apply`` command line.

    flashinfer-trace-apply check [DIR] [--json]     verify a curated folder here
    flashinfer-trace-apply list [DIR]               what a folder would route
    flashinfer-trace-apply run --path DIR -- CMD    run CMD with the plugin on
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from .env import ENABLE_VAR, PATH_VAR


def _default_folder() -> str:
    from .bundled import bundled_solutions_path  # noqa: PLC0415

    return str(bundled_solutions_path())


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import format_table, rows_as_dicts, run_check, total_stats  # noqa: PLC0415

    folder = args.folder or _default_folder()
    progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    rows = run_check(folder, batches=args.batch, progress=progress)
    failed = [r for r in rows if r.result != "pass"]
    if args.json:
        print(json.dumps({"folder": folder, "rows": rows_as_dicts(rows), "stats": total_stats(rows), "ok": not failed}, indent=2))
    else:
        print(f"curated folder: {folder}")
        print(format_table(rows))
        for api_name, counts in sorted(total_stats(rows).items()):
            print(f"stats {api_name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed or not rows else 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .catalog import load_solutions  # noqa: PLC0415

    folder = args.folder or _default_folder()
    for definition, solution in sorted(load_solutions(folder).items()):
        print(f"{definition}\t{solution.name}\t{solution.spec.language}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("flashinfer-trace-apply run: give a command after --", file=sys.stderr)
        return 2
    os.environ[ENABLE_VAR] = "1"
    os.environ[PATH_VAR] = os.path.abspath(args.path or _default_folder())
    # exec keeps the PID (process managers, signals); the .pth hook in the
    # new interpreter does the rest.
    os.execvp(command[0], command)
    return 127  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashinfer-trace-apply", description="Route FlashInfer calls to custom kernels.")
    sub = parser.add_subparsers(dest="verb", required=True)
    check = sub.add_parser("check", help="verify every solution of a curated folder against its reference")
    check.add_argument("folder", nargs="?", help="curated folder (default: the bundled one)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--batch", type=int, action="append", help="batch size to test (repeatable)")
    check.set_defaults(run=_cmd_check)
    lister = sub.add_parser("list", help="list the definitions a curated folder serves")
    lister.add_argument("folder", nargs="?")
    lister.set_defaults(run=_cmd_list)
    runner = sub.add_parser("run", help="run a command with the plugin enabled")
    runner.add_argument("--path", help="curated folder (default: the bundled one)")
    runner.add_argument("command", nargs=argparse.REMAINDER)
    runner.set_defaults(run=_cmd_run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
