"""Every bundled definition's Triton kernels compile for a Hopper GPU with
the arguments the bundled solutions launch them with, on a machine without
one (tests/bundled_kernel_launches.py says how). The CPU suite runs the
kernels under Triton's interpreter, which never runs the compiler: without
this, a kernel that fails to compile reaches a GPU before anyone sees it
(the sampling candidates did, on the H200 with Triton 3.6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
HELPER = Path(__file__).resolve().parent / "bundled_kernel_launches.py"


def _step(step, path, interpret):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when it is unset
    return subprocess.run([sys.executable, str(HELPER), step, str(path)], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    path = tmp_path_factory.mktemp("launches") / "launches.json"
    done = _step("record", path, interpret=True)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return path


def test_every_bundled_definition_launches_a_kernel_on_its_routed_calls(launches):
    recorded = json.loads(launches.read_text())
    assert recorded["silent"] == [], "routed calls that launched no kernel: nothing of theirs would be compiled"
    assert recorded["hits"] >= len(recorded["definitions"]) * 2
    assert len(recorded["launches"]) >= len(recorded["definitions"]) // 2


def test_every_recorded_launch_compiles_for_sm90(launches):
    done = _step("compile", launches, interpret=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " 0 failed" in done.stdout


def test_a_launch_that_cannot_compile_is_reported(launches, tmp_path):
    # The first recorded launch with a pointer argument given as a float:
    # the kernel's loads from it cannot compile.
    recorded = json.loads(launches.read_text())
    broken = next(dict(launch) for launch in recorded["launches"]
                  if any("ptr" in kind for kind in launch["args"].values()))
    broken["args"] = {name: ({"float": "fp32"} if "ptr" in kind else kind) for name, kind in broken["args"].items()}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({**recorded, "launches": [broken]}))
    done = _step("compile", path, interpret=False)
    assert done.returncode == 1
    assert "1 failed" in done.stdout and broken["kernel"] in done.stdout
