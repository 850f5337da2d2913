"""Stats across worker processes: each spawned process writes its counts to
FLASHINFER_TRACE_APPLY_STATS_DIR; ``flashinfer-trace-apply stats`` adds them up."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from flashinfer_trace_apply.cli import main
from flashinfer_trace_apply.env import STATS_DIR_VAR

import stats_worker


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("stats")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv(STATS_DIR_VAR, str(directory))
    try:
        ctx = multiprocessing.get_context("spawn")
        workers = [ctx.Process(target=stats_worker.work, args=(calls,)) for calls in (2, 3)]
        for p in workers:
            p.start()
        for p in workers:
            p.join(180)
            assert p.exitcode == 0
    finally:
        monkeypatch.undo()
    return directory


def test_every_worker_writes_its_own_file(stats_dir: Path) -> None:
    files = sorted(stats_dir.glob("*.json"))
    assert len(files) == 2, files
    hits = sorted(json.loads(f.read_text())["apis"]["flashinfer.norm.rmsnorm"]["hit"] for f in files)
    assert hits == [3, 4]
    assert not list(stats_dir.glob(".*"))  # no temporary file left behind


def test_stats_command_adds_up_the_workers(stats_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["stats", str(stats_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["flashinfer.norm.rmsnorm"]["hit"] == 7
    assert report["totals"]["flashinfer.norm.rmsnorm"]["fallback_no_candidate"] == 2
    assert len(report["processes"]) == 2

    assert main(["stats", str(stats_dir)]) == 0
    table = capsys.readouterr().out
    assert "flashinfer.norm.rmsnorm" in table and "2 process(es)" in table


def test_stats_command_speaks_prometheus(stats_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["stats", str(stats_dir), "--prometheus"]) == 0
    text = capsys.readouterr().out
    assert "# TYPE flashinfer_trace_apply_calls_total counter" in text
    samples = [line for line in text.splitlines() if line.startswith("flashinfer_trace_apply_calls_total{")
               and 'status="hit"' in line]
    assert sorted(int(line.rsplit(" ", 1)[1]) for line in samples) == [3, 4]


def test_a_missing_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["stats", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_each_worker_records_the_call_shapes_it_saw(stats_dir: Path) -> None:
    for file in stats_dir.glob("*.json"):
        shapes = json.loads(file.read_text())["workloads"]["rmsnorm_h64"]
        assert shapes == [
            {"axes": {"batch_size": 2, "hidden_size": 64}, "dtypes": {"hidden_states": "float32", "weight": "float32"}},
            {"axes": {"batch_size": 5, "hidden_size": 64}, "dtypes": {"hidden_states": "bfloat16", "weight": "bfloat16"}},
        ]


def test_recording_steps_aside_after_its_first_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import flashinfer
    import flashinfer_trace_apply as fita
    from flashinfer_trace_apply import api, workloads

    monkeypatch.setenv(STATS_DIR_VAR, str(tmp_path))
    monkeypatch.setattr(workloads, "CALLS_PER_SHAPE", 3)
    monkeypatch.setattr(api.stats_files, "ensure_started", lambda snapshot: None)  # no writer thread here
    fita.enable_apply({"rmsnorm_h64": stats_worker.rmsnorm})
    w = torch.ones(64)
    for batch in (2, 3, 4, 7):  # the fourth call comes after recording stepped aside
        flashinfer.rmsnorm(torch.randn(batch, 64), w)
    seen = [s["axes"]["batch_size"] for s in api._stats_record()["workloads"]["rmsnorm_h64"]]
    assert seen == [2, 3, 4]
    assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 4
    fita.disable_apply()
