"""Two tensor-parallel ranks on CPU (gloo), spawned as the engines spawn
theirs: the hook enables the plugin in each rank, a late ``import
flashinfer.comm`` still gets ``allreduce_fusion`` routed to a solution doing a
real collective, results equal plain torch.distributed, and each rank's stats
reach the stats directory with its rank."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_two_gloo_ranks_route_norms_and_allreduce_fusion() -> None:
    pytest.importorskip("torch.distributed")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "tp_smoke.py"), "--backend", "gloo"],
                          capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert proc.returncode == 0 and report["ok"], json.dumps(report, indent=1) + proc.stderr[-3000:]
    assert report["stats_files_rank"] == [0, 1]
    for rank in report["ranks"]:
        assert rank["enabled"] and rank["eager_equal"]
