"""Stats across worker processes: each spawned process writes its counts and
the call shapes it saw to FLASHINFER_TRACE_APPLY_STATS_DIR;
``flashinfer-trace-apply stats`` adds them up, ``check --workloads`` replays
the shapes and ``export --workloads`` writes them as FlashInfer-Bench workloads."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from flashinfer_trace_apply.cli import main
from flashinfer_trace_apply.env import STATS_DIR_VAR

import stats_worker
from solution_files import RMSNORM_SOURCE, solution_dict, write_solution

BF16_2 = {"axes": {"batch_size": 2, "hidden_size": 64}, "dtypes": {"hidden_states": "bfloat16", "weight": "bfloat16"}}
FP16_5 = {"axes": {"batch_size": 5, "hidden_size": 64}, "dtypes": {"hidden_states": "float16", "weight": "float16"}}
BF16_7 = {"axes": {"batch_size": 7, "hidden_size": 64}, "dtypes": {"hidden_states": "bfloat16", "weight": "bfloat16"}}


def rmsnorm_definition(hidden: int) -> dict:
    tensor = {"dtype": "bfloat16"}
    return {
        "name": f"rmsnorm_h{hidden}", "op_type": "rmsnorm", "tags": ["fi_api:flashinfer.norm.rmsnorm"],
        "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": hidden}},
        "inputs": {"hidden_states": {"shape": ["batch_size", "hidden_size"], **tensor},
                   "weight": {"shape": ["hidden_size"], **tensor}},
        "outputs": {"output": {"shape": ["batch_size", "hidden_size"], **tensor}},
        "reference": RMSNORM_SOURCE,
    }


def write_folder(folder: Path) -> Path:
    """rmsnorm_h64 (bf16, fp16 allowed by the folder's rules) and
    rmsnorm_h128, which no worker calls: Python solutions both."""
    for hidden in (64, 128):
        name = f"rmsnorm_h{hidden}"
        (folder / "definitions" / "rmsnorm").mkdir(parents=True, exist_ok=True)
        (folder / "definitions" / "rmsnorm" / f"{name}.json").write_text(json.dumps(rmsnorm_definition(hidden)))
        write_solution(folder, f"rmsnorm/{name}.json", solution_dict(name, RMSNORM_SOURCE, name=f"py_{name}"))
    (folder / "trace_apply.yaml").write_text(
        "version: 1\ndefinitions:\n  rmsnorm_h64:\n    dtypes:\n"
        "      hidden_states: [bfloat16, float16]\n      weight: [bfloat16, float16]\n")
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> Path:
    directory = tmp_path_factory.mktemp("stats")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv(STATS_DIR_VAR, str(directory))
    try:
        ctx = multiprocessing.get_context("spawn")
        workers = [ctx.Process(target=stats_worker.work, args=(calls, str(folder), extra)) for calls, extra in ((2, 0), (3, 7))]
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
    assert hits == [3, 5]
    assert not list(stats_dir.glob(".*"))  # no temporary file left behind


def test_stats_command_adds_up_the_workers(stats_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["stats", str(stats_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["flashinfer.norm.rmsnorm"]["hit"] == 8
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
    assert sorted(int(line.rsplit(" ", 1)[1]) for line in samples) == [3, 5]


def test_a_missing_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["stats", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_each_worker_records_the_call_shapes_it_saw(stats_dir: Path) -> None:
    # by how many shapes each worker saw (file names carry pids: their order is arbitrary)
    recorded = sorted((json.loads(f.read_text())["workloads"] for f in stats_dir.glob("*.json")),
                      key=lambda workloads: len(workloads["rmsnorm_h64"]))
    assert recorded == [{"rmsnorm_h64": [BF16_2, FP16_5]}, {"rmsnorm_h64": [BF16_2, FP16_5, BF16_7]}]


def test_check_replays_exactly_the_recorded_shapes(folder: Path, stats_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(folder), "--workloads", str(stats_dir), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Every distinct shape of every worker once (in dtype, then axis order), through the real API.
    assert [{"axes": r["axes"], "dtypes": r["dtypes"]} for r in report["rows"]] == [BF16_2, BF16_7, FP16_5]
    assert {r["result"] for r in report["rows"]} == {"pass"}
    assert {r["definition"] for r in report["rows"]} == {"rmsnorm_h64"}
    assert report["stats"]["flashinfer.norm.rmsnorm"]["hit"] == 3
    assert report["workloads"]["recorded"] == {"rmsnorm_h64": 3}
    assert report["workloads"]["not_recorded"] == ["rmsnorm_h128"]
    assert report["workloads"]["files"] == 2

    assert main(["check", str(folder), "--workloads", str(stats_dir), "-q"]) == 0
    text = capsys.readouterr().out
    assert "replayed, with recorded shapes (1): rmsnorm_h64 (3)" in text
    assert "not checked, no recorded shapes (1): rmsnorm_h128" in text
    assert "batch_size=2, batch_size=7" in text  # the bf16 row's shapes


def test_export_writes_the_recorded_shapes_as_workloads(folder: Path, stats_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    from flashinfer_bench.data import TraceSet

    out = tmp_path / "dataset"
    assert main(["export", str(folder), "-o", str(out), "--workloads", str(stats_dir), "--json"]) == 0
    rows = {r["definition"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    theirs = TraceSet.from_path(str(out))
    # The Definition is written in bf16 (one dtype per input): the fp16 shape cannot be its workload.
    assert sorted(t.workload.axes["batch_size"] for t in theirs.workloads["rmsnorm_h64"]) == [2, 7]
    assert all(set(t.workload.axes) == {"batch_size"} for t in theirs.workloads["rmsnorm_h64"])
    assert "1 recorded shape(s) in other dtypes (hidden_states=float16, weight=float16" in rows["rmsnorm_h64"]["note"]
    assert rows["rmsnorm_h128"]["workloads"] == 0 and rows["rmsnorm_h128"]["note"] == "no recorded shapes"
    assert not theirs.workloads.get("rmsnorm_h128")


def _stats_file(directory: Path, workloads: object, name: str = "host-1.json") -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(json.dumps({"format": 1, "pid": 1, "apis": {}, "workloads": workloads}))
    return path


@pytest.mark.parametrize("workloads, said", [
    ({"rmsnorm_h64": [{"axes": {"batch_size": "2"}, "dtypes": {}}]}, "axis 'batch_size' must be a non-negative integer"),
    ({"rmsnorm_h64": [{"axes": {}, "dtypes": {"hidden_states": "bfloat61"}}]}, "dtype 'bfloat61', which torch does not know"),
    ({"rmsnorm_h64": {"axes": {}}}, "workloads['rmsnorm_h64'] must be a list of shapes"),
    ([], "'workloads' must map definition names to lists of shapes"),
])
def test_a_malformed_stats_file_is_one_line_naming_it(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      workloads: object, said: str) -> None:
    path = _stats_file(tmp_path / "stats", workloads)
    assert main(["check", str(folder), "--workloads", str(path.parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and said in err
    assert main(["export", str(folder), "-o", str(tmp_path / "out"), "--workloads", str(path.parent)]) == 2
    assert str(path) in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_unreadable_or_empty_stats_directory_is_an_error(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["check", str(folder), "--workloads", str(tmp_path / "empty")]) == 2
    assert "holds no stats files" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "h-2.json").write_text("{not json")
    assert main(["check", str(folder), "--workloads", str(bad)]) == 2
    assert f"{bad / 'h-2.json'}: not a stats file" in capsys.readouterr().err


def test_a_recorded_shape_the_definition_cannot_have_is_an_error_row(folder: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    shape = {"axes": {"batch_size": 2, "hidden_size": 32}, "dtypes": {"hidden_states": "bfloat16", "weight": "bfloat16"}}
    path = _stats_file(tmp_path / "stats", {"rmsnorm_h64": [shape]})
    assert main(["check", str(folder), "--workloads", str(path.parent), "--json", "-q"]) == 1
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["result"] == "error" and "hidden_size=32, the definition's name says 64" in row["detail"]


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
