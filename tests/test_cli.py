"""The command line: the main job on the bundled folder, listing, launching."""

from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "flashinfer_trace_apply", *args], capture_output=True, text=True, env=env, timeout=600)


def test_check_passes_on_the_bundled_folder_and_reports_json():
    done = _run("check", "--json", "--batch", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] and report["rows"] and report["counts"]["pass"] == len(report["rows"])
    bundled = {p.stem for p in (ROOT / "solutions").rglob("*.json")}
    assert {r["definition"] for r in report["rows"]} == bundled
    assert {(s["definition"], s["dtype"]) for s in report["summary"]} == {(d, t) for d in bundled for t in ("bfloat16", "float16")}
    assert all(r["result"] == "pass" for r in report["rows"])
    per_api = {}
    for r in report["rows"]:
        per_api[r["api"]] = per_api.get(r["api"], 0) + 1
    assert {api: report["stats"][api]["hit"] for api in per_api} == per_api
    # progress goes to stderr, one line per definition
    assert done.stderr.count(f"/{len(bundled)}] ") == len(bundled)


def test_check_table_and_exit_code_with_a_skip(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from solution_files import RMSNORM_SOURCE, solution_dict, write_solution

    write_solution(tmp_path, "good.json", solution_dict("rmsnorm_h128", RMSNORM_SOURCE, name="good"))
    write_solution(tmp_path, "nobody.json", solution_dict("no_such_op_h128", RMSNORM_SOURCE, name="nobody"))
    done = _run("check", str(tmp_path), "--quiet", "--save-json", str(tmp_path / "report.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["ok"] and saved["counts"] == {"pass": 4, "skip": 4, "fail": 0, "error": 0}
    assert "[1/2]" not in done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("definition"))
    assert header.split() == ["definition", "solution", "dtype", "batches", "result", "max_abs_err"]
    assert "no_such_op_h128" in done.stdout and "skip" in done.stdout
    # Counted as the table's rows (definition x dtype), the calls in brackets.
    assert "2 passed, 2 skipped, 0 failed (rows of the table; 8 calls)" in done.stdout
    # Where and on what, said first; plain Python solutions need no Triton interpreter.
    assert done.stdout.splitlines()[:2] == [f"curated folder: {tmp_path}", "device: cpu"]


def test_check_skips_a_dtype_the_definition_excludes_with_the_reason(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from solution_files import RMSNORM_SOURCE, solution_dict, write_solution

    write_solution(tmp_path, "fp16.json", solution_dict("rmsnorm_h128", RMSNORM_SOURCE, name="fp16_only"))
    (tmp_path / "definitions").mkdir()
    (tmp_path / "definitions" / "rmsnorm_h128.json").write_text(json.dumps({
        "name": "rmsnorm_h128", "op_type": "rmsnorm",
        "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": 128}},
        "inputs": {"hidden_states": {"shape": ["batch_size", "hidden_size"], "dtype": "float16"},
                   "weight": {"shape": ["hidden_size"], "dtype": "float16"}},
        "outputs": {"output": {"shape": ["batch_size", "hidden_size"], "dtype": "float16"}},
        "reference": "def run(hidden_states, weight):\n    return hidden_states\n",
    }))
    done = _run("check", str(tmp_path), "--json", "--batch", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["dtype"]: r for r in json.loads(done.stdout)["rows"]}
    assert rows["float16"]["result"] == "pass" and rows["bfloat16"]["result"] == "skip"
    assert "does not allow this dtype" in rows["bfloat16"]["detail"]


def test_check_on_a_trace_set_is_one_line_and_exit_2(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from solution_files import RMSNORM_SOURCE, solution_dict, write_solution

    a = write_solution(tmp_path, "a.json", solution_dict("rmsnorm_h128", RMSNORM_SOURCE, name="a"))
    b = write_solution(tmp_path, "b.json", solution_dict("rmsnorm_h128", RMSNORM_SOURCE, name="b"))
    done = _run("check", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert str(a) in line and str(b) in line and "curate" in line


def test_check_table_shows_timings_when_there_are_some():
    from flashinfer_trace_apply.check import CheckRow, format_table, summarize

    rows = [
        CheckRow("rmsnorm_h4096", "s", "flashinfer.norm.rmsnorm", "bfloat16", b, "pass", 0.01, original_us=10.0, solution_us=8.0)
        for b in (1, 4096)
    ]
    table = format_table(rows)
    assert "original_us@4096" in table and "solution_us@4096" in table and "1.25x" in table
    assert summarize(rows)[0].speedup == 1.25


def test_check_skips_calls_outside_a_solutions_applies_when(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from solution_files import RMSNORM_SOURCE, solution_dict, write_solution

    payload = solution_dict("rmsnorm_h128", RMSNORM_SOURCE, name="small_batches")
    payload["spec"]["applies_when"] = ["batch_size <= 2"]
    write_solution(tmp_path, "small.json", payload)
    (tmp_path / "definitions").mkdir()
    (tmp_path / "definitions" / "rmsnorm_h128.json").write_text(json.dumps({
        "name": "rmsnorm_h128",
        "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": 128}},
        "inputs": {"hidden_states": {"shape": ["batch_size", "hidden_size"], "dtype": ["bfloat16", "float16"]},
                   "weight": {"shape": ["hidden_size"], "dtype": ["bfloat16", "float16"]}},
        "outputs": {"output": {"shape": ["batch_size", "hidden_size"]}},
    }))
    done = _run("check", str(tmp_path), "--json")  # CPU batches: 1 (routed) and 3 (outside)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {(r["dtype"], r["batch"]): r for r in json.loads(done.stdout)["rows"]}
    assert {k: r["result"] for k, r in rows.items()} == {
        ("bfloat16", 1): "pass", ("bfloat16", 3): "skip", ("float16", 1): "pass", ("float16", 3): "skip"}
    assert "outside the solution's applies_when ['batch_size <= 2']" in rows[("bfloat16", 3)]["detail"]


def test_check_fails_on_a_wrong_solution(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from solution_files import solution_dict, write_solution

    wrong = "def run(hidden_states, weight, eps=1e-6):\n    return hidden_states * 2\n"
    write_solution(tmp_path, "wrong.json", solution_dict("rmsnorm_h128", wrong, name="wrong"))
    done = _run("check", str(tmp_path))
    assert done.returncode == 1
    assert "fail" in done.stdout and "0 passed" in done.stdout
    # A fail row says why.
    assert "differs from the template's reference beyond its tolerance" in done.stdout


def test_bundled_json_matches_its_kernel_source():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_solutions.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_list_and_run(tmp_path):
    listed = _run("list")
    assert listed.returncode == 0 and "rmsnorm_h4096" in listed.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHINFER_TRACE_APPLY")}
    code = "import os; print(os.environ['FLASHINFER_TRACE_APPLY'], os.environ['FLASHINFER_TRACE_APPLY_PATH'])"
    ran = _run("run", "--path", str(tmp_path), "--", sys.executable, "-c", code, env=env)
    assert ran.stdout.split() == ["1", str(tmp_path)]


def test_bench_report_renders_and_updates_only_its_docs_section(tmp_path):
    """scripts/bench_solutions.py --from-json: no GPU needed to render a run."""
    row = {
        "definition": "rmsnorm_h4096", "dtype": "bfloat16", "bytes": 1 << 20, "max_abs_diff": 0.0,
        "original_eager_us": 9.8, "solution_eager_us": 14.6, "original_graph_us": 3.0, "solution_graph_us": 3.1,
        "routed": True, "copy_gbps": 3000.0,
    }
    rows = []
    for batch, original, solution in [(1, 3.0, 2.9), (4096, 40.0, 50.0)]:
        r = dict(row, batch=batch, original_us=original, solution_us=solution, speedup=original / solution)
        r["solution_gbps"] = r["bytes"] / solution / 1e3
        r["copy_fraction"] = r["solution_gbps"] / r["copy_gbps"]
        rows.append(r)
    meta = {"date": "today", "device": "H100", "host": "h", "torch": "t", "triton": "3", "flashinfer": "f", "cuda": "12", "command": "python scripts/bench_solutions.py"}
    (tmp_path / "run.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Dispatch overhead\n\nlead's text\n\n## Bundled solutions\n\nold numbers\n\n## Later\n\nmore\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_solutions.py"), "--from-json", str(tmp_path / "run.json"), "--update-docs", str(doc)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    text = doc.read_text()
    assert "lead's text" in text and "## Later\n\nmore" in text and "old numbers" not in text
    assert text.count("## Bundled solutions") == 1
    # The eager batch-1 target is retired (issue 14): a slower eager call is shown, not flagged.
    assert "below 0.9x at batch 4096" in text and "eager call at batch" not in text and "9.8 / 14.6 (-x)" in text
    assert "| rmsnorm_h4096 | bfloat16 | 4096 | 40.00 | 50.00 | 0.80x |" in text

    # A re-run replaces the first run's rows of that definition and dtype;
    # definitions no longer bundled are left out; outside applies_when is marked.
    rerun = [dict(r, solution_us=r["original_us"], speedup=1.0, routed=False, outside_applies_when=r["batch"] > 1)
             if r["batch"] > 1 else dict(r) for r in rows]
    gone = [dict(r, definition="no_such_op_h1") for r in rows]
    (tmp_path / "rerun.json").write_text(json.dumps({"meta": meta, "rows": rerun + gone}))
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_solutions.py"), "--from-json", str(tmp_path / "run.json"),
         str(tmp_path / "rerun.json")],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "left out, no longer bundled: no_such_op_h1" in done.stderr
    assert "no_such_op_h1" not in done.stdout and "below 0.9x" not in done.stdout
    assert done.stdout.count("| rmsnorm_h4096 | bfloat16 | 4096") == 1
    assert "| rmsnorm_h4096 | bfloat16 | 4096 ‡ | 40.00 | 40.00 | 1.00x |" in done.stdout


def test_version_names_ours_and_the_releases_it_runs_against(capsys):
    import flashinfer_trace_apply
    from flashinfer_trace_apply.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"flashinfer-trace-apply {flashinfer_trace_apply.__version__} (")
    assert "flashinfer-python " in line and "torch " in line and "\n" not in line
