"""The command line: the main job on the bundled folder, listing, launching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "flashinfer_trace_apply", *args], capture_output=True, text=True, env=env, timeout=600)


def test_check_passes_on_the_bundled_folder_and_reports_json():
    done = _run("check", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["rows"]
    assert {r["definition"] for r in report["rows"]} >= {"rmsnorm_h4096"}
    assert all(r["result"] == "pass" for r in report["rows"])
    assert report["stats"]["flashinfer.norm.rmsnorm"]["hit"] == len(report["rows"])


def test_check_fails_on_a_wrong_solution(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from solution_files import solution_dict, write_solution

    wrong = "def run(hidden_states, weight, eps=1e-6):\n    return hidden_states * 2\n"
    write_solution(tmp_path, "wrong.json", solution_dict("rmsnorm_h128", wrong, name="wrong"))
    done = _run("check", str(tmp_path))
    assert done.returncode == 1
    assert "fail" in done.stdout and "0 passed" in done.stdout


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
