"""FlashInfer-Bench in and out, against the real flashinfer-bench 0.1.2:
trace sets built and saved with its own API load, curate and route here; our
folders load there; our rules survive its re-saving (trace_apply.yaml)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

fib = pytest.importorskip("flashinfer_bench")
from flashinfer_bench.data import (  # noqa: E402
    Correctness, Environment, Evaluation, EvaluationStatus, Performance, RandomInput, Trace, Workload,
    save_json_file,
)

import flashinfer_trace_apply as fita  # noqa: E402
from flashinfer_trace_apply.catalog import UncuratedFolderError, load_definitions, load_solutions  # noqa: E402
from flashinfer_trace_apply.errors import SolutionFormatError  # noqa: E402
from flashinfer_trace_apply.policy import PolicyError, parse_policy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEF = "rmsnorm_h128"

VALUE_RETURNING = textwrap.dedent("""
    import torch

    def run(hidden_states, weight):
        x = hidden_states.float()
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (y * weight.float()).to(hidden_states.dtype)
""")
DESTINATION_PASSING = textwrap.dedent("""
    import torch

    def run(hidden_states, weight, output):
        x = hidden_states.float()
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        output.copy_((y * weight.float()).to(hidden_states.dtype))
""")


def fib_definition(dtype: str = "bfloat16") -> "fib.Definition":
    return fib.Definition(
        name=DEF, op_type="rmsnorm",
        axes={"batch_size": fib.AxisVar(), "hidden_size": fib.AxisConst(value=128)},
        inputs={"hidden_states": fib.TensorSpec(shape=["batch_size", "hidden_size"], dtype=dtype),
                "weight": fib.TensorSpec(shape=["hidden_size"], dtype=dtype)},
        outputs={"output": fib.TensorSpec(shape=["batch_size", "hidden_size"], dtype=dtype)},
        reference="def run(hidden_states, weight):\n    return hidden_states\n",
    )


def fib_solution(name: str, source: str, **spec) -> "fib.Solution":
    # destination_passing_style left unset unless given: FlashInfer-Bench's
    # saver then leaves it out of the file, as its own tools do.
    return fib.Solution(
        name=name, definition=DEF, author="agent",
        spec=fib.BuildSpec(language="python", target_hardware=["cuda"], entry_point="main.py::run", **spec),
        sources=[fib.SourceFile(path="main.py", content=source)],
    )


def trace(solution: str, batch: int, status: str = "PASSED", speedup: float = 1.0, hw: str = "NVIDIA_H100") -> Trace:
    passed = status == "PASSED"
    return Trace(
        definition=DEF, solution=solution,
        workload=Workload(axes={"batch_size": batch}, inputs={"hidden_states": RandomInput(), "weight": RandomInput()}, uuid=f"w{batch}"),
        evaluation=Evaluation(
            status=status, environment=Environment(hardware=hw), timestamp="2026-01-01T00:00:00",
            correctness=Correctness(max_absolute_error=1e-3, max_relative_error=1e-3) if passed or status == "INCORRECT_NUMERICAL" else None,
            performance=Performance(latency_ms=0.01, reference_latency_ms=0.01 * speedup, speedup_factor=speedup) if passed else None,
        ),
    )


def build_trace_set(root: Path) -> Path:
    """A trace set as FlashInfer-Bench writes it: its models, its savers."""
    definition = fib_definition()
    save_json_file(definition, root / "definitions" / "rmsnorm" / f"{DEF}.json")
    solutions = {
        "slow_vr": fib_solution("slow_vr", VALUE_RETURNING),
        "fast_dps": fib_solution("fast_dps", DESTINATION_PASSING),
        "fastest_broken": fib_solution("fastest_broken", VALUE_RETURNING),
    }
    for name, solution in solutions.items():
        save_json_file(solution, root / "solutions" / "agent" / "rmsnorm" / DEF / f"{name}.json")
    trace_set = fib.TraceSet.from_path(str(root))
    trace_set.add_workload_traces([Trace(definition=DEF, workload=trace("x", b).workload) for b in (1, 64)])
    trace_set.add_traces([
        trace("slow_vr", 1, speedup=1.5), trace("slow_vr", 64, speedup=1.2),
        trace("fast_dps", 1, speedup=3.0), trace("fast_dps", 64, speedup=2.5),
        trace("fastest_broken", 1, speedup=9.0), trace("fastest_broken", 64, status="RUNTIME_ERROR"),
    ])
    return root


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "flashinfer_trace_apply", *args], capture_output=True, text=True, timeout=600)


def test_the_saved_file_leaves_destination_passing_unstated():
    """The premise: FlashInfer-Bench's saver omits the default it reads as True."""
    tmp = fib_solution("s", DESTINATION_PASSING)
    assert "destination_passing_style" not in tmp.model_dump_json(exclude_unset=True)
    assert tmp.spec.destination_passing_style is True


def test_a_trace_set_is_refused_in_one_line_that_says_to_curate(tmp_path):
    root = build_trace_set(tmp_path / "ts")
    with pytest.raises(UncuratedFolderError) as info:
        load_solutions(root)
    message = str(info.value)
    assert "\n" not in message and "curate" in message and f"'{DEF}'" in message
    assert all(str(root / "solutions" / "agent" / "rmsnorm" / DEF / f"{n}.json") in message for n in ("slow_vr", "fast_dps"))
    for verb in (["list", str(root)], ["run", "--path", str(root), "--", sys.executable, "-c", "pass"]):
        done = _cli(*verb)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "curate" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_curate_without_a_gpu_picks_from_passed_traces_and_the_result_loads_and_routes(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the CPU path: on a GPU curate times against FlashInfer")
    root = build_trace_set(tmp_path / "ts")
    out = tmp_path / "curated"
    done = _cli("curate", str(root), "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["gpu"] is False and "traces alone" in report["mode"]
    [row] = report["rows"]
    # fastest_broken failed a workload, so the fastest PASSED one wins.
    assert row["chosen"] == "fast_dps" and row["passed"] == 2 and row["candidates"] == 3
    assert row["speedup"] == pytest.approx((3.0 * 2.5) ** 0.5)
    table = _cli("curate", str(root), "-o", str(tmp_path / "again"))
    assert table.returncode == 0 and "fast_dps" in table.stdout and "traces alone" in table.stdout

    # Loads in FlashInfer-Bench, with the workloads kept.
    theirs = fib.TraceSet.from_path(str(out))
    assert [s.name for s in theirs.solutions[DEF]] == ["fast_dps"] and len(theirs.workloads[DEF]) == 2
    assert theirs.solutions[DEF][0].spec.destination_passing_style is True  # stated, not defaulted

    # Loads and routes here: the unstated style was decided from run(hidden_states, weight, output).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solutions = load_solutions(out)
    assert solutions[DEF].spec.destination_passing_style is True
    import flashinfer

    fita.enable_apply(solutions)
    x, w = torch.randn(3, 128, dtype=torch.bfloat16), torch.randn(128, dtype=torch.bfloat16)
    got = flashinfer.rmsnorm(x, w)
    assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 1
    ref = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype)
    torch.testing.assert_close(got, ref)


def test_unstated_destination_passing_is_decided_and_said_once(tmp_path):
    root = tmp_path / "f"
    save_json_file(fib_definition(), root / "definitions" / f"{DEF}.json")
    save_json_file(fib_solution("vr", VALUE_RETURNING), root / "solutions" / "vr.json")
    with pytest.warns(fita.TraceApplyWarning, match="vr \\(rmsnorm_h128\\): value-returning") as said:
        solutions = load_solutions(root)
    assert len([w for w in said if "destination_passing_style" in str(w.message)]) == 1
    assert solutions[DEF].spec.destination_passing_style is False


def test_a_stated_style_the_entry_point_contradicts_is_an_error_naming_the_file(tmp_path):
    root = tmp_path / "f"
    save_json_file(fib_definition(), root / "definitions" / f"{DEF}.json")
    path = root / "solutions" / "vr.json"
    save_json_file(fib_solution("vr", VALUE_RETURNING, destination_passing_style=True), path)
    with pytest.raises(SolutionFormatError, match="destination_passing_style is true, but the entry point run\\(hidden_states, weight\\)") as info:
        load_solutions(root)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("how", ["load_solutions", "path"])
def test_enable_apply_of_load_solutions_keeps_the_folders_definitions(tmp_path, how):
    """It used to drop definitions/: a float16-only definition routed bf16 calls."""
    import flashinfer

    root = tmp_path / "f"
    save_json_file(fib_definition("float16"), root / "definitions" / f"{DEF}.json")
    save_json_file(fib_solution("vr", VALUE_RETURNING, destination_passing_style=False), root / "solutions" / "vr.json")
    fita.enable_apply(load_solutions(root) if how == "load_solutions" else str(root))
    x, w = torch.randn(2, 128, dtype=torch.bfloat16), torch.randn(128, dtype=torch.bfloat16)
    try:
        flashinfer.rmsnorm(x, w)  # not routed: FlashInfer's own kernel, which needs CUDA here
    except Exception:  # noqa: BLE001
        pass
    assert fita.stats()["flashinfer.norm.rmsnorm"].get("fallback_dtype_mismatch") == 1
    flashinfer.rmsnorm(x.half(), w.half())
    assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 1


def test_enable_apply_takes_a_flashinfer_bench_definition_and_solution():
    import flashinfer

    fita.enable_apply({DEF: fib_solution("vr", VALUE_RETURNING)}, definitions=fib_definition("float16"))
    flashinfer.rmsnorm(torch.randn(2, 128, dtype=torch.float16), torch.randn(128, dtype=torch.float16))
    assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 1


def test_axes_without_type_read_as_flashinfer_bench_reads_them():
    from flashinfer_trace_apply.definitions import add_applies_when, axis_kinds

    data = fib_definition().model_dump(mode="json")
    data["axes"] = {"batch_size": {}, "hidden_size": {"value": 128}}
    assert fib.Definition.model_validate(data).axes["hidden_size"].type == "const"
    assert axis_kinds(data) == {"batch_size": "var", "hidden_size": "const"}
    rules, problems = add_applies_when(None, DEF, ("batch_size <= 4", "hidden_size == 128"), data)
    assert not problems and [c.text for c in rules.const_constraints] == ["hidden_size == 128"]


# -- our bundled folder, there ------------------------------------------------


def test_the_bundled_folder_validates_under_flashinfer_bench_and_flashinfer():
    import flashinfer.trace as ft
    from flashinfer_bench.data import load_json_file

    definitions = sorted((ROOT / "definitions").rglob("*.json"))
    solutions = sorted((ROOT / "solutions").rglob("*.json"))
    bundled = len(solutions)
    assert bundled >= 64 and len(definitions) == bundled
    for path in definitions:
        load_json_file(fib.Definition, path)
    for path in solutions:
        load_json_file(fib.Solution, path)
        ft.Solution.from_dict(json.loads(path.read_text()))
    loaded = fib.TraceSet.from_path(str(ROOT))
    assert len(loaded.definitions) == bundled and sum(len(v) for v in loaded.solutions.values()) == bundled


def test_a_solution_re_saved_through_flashinfer_bench_keeps_its_routing_rules(tmp_path):
    from flashinfer_bench.data import load_json_file

    copy = tmp_path / "bundled"
    for name in ("definitions", "solutions", "trace_apply.yaml"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, copy / name)
    for path in (copy / "solutions").rglob("*.json"):
        save_json_file(load_json_file(fib.Solution, path), path)  # their model, their saver
    for path in (copy / "definitions").rglob("*.json"):
        save_json_file(load_json_file(fib.Definition, path), path)
    before, after = load_solutions(ROOT), load_solutions(copy)
    assert after["silu_and_mul_h12288"].spec.applies_when == ("num_tokens <= 128",)
    assert after["gelu_tanh_and_mul_h43008"].spec.applies_when == ("num_tokens <= 128",)
    assert {n: s.spec.applies_when for n, s in after.items()} == {n: s.spec.applies_when for n, s in before.items()}
    assert load_definitions(copy)["rmsnorm_h4096"]["inputs"]["hidden_states"]["dtype"] == ["bfloat16", "float16"]
    assert after.definitions == load_definitions(ROOT)


# -- the policy file ------------------------------------------------------------


@pytest.mark.parametrize("text, said", [
    ("version: 1\nfoo: 1\n", "trace_apply.yaml:2: foo is not a known key"),
    ("definitions:\n  d:\n    verified: 2\n", "trace_apply.yaml:3: definitions.d.verified is not a known key"),
    ("definitions:\n  d:\n    verify: true\n", "trace_apply.yaml:3: definitions.d.verify must be a whole number"),
    ("definitions:\n  d:\n    on_error: ignore\n", "trace_apply.yaml:3: definitions.d.on_error must be 'raise' or 'fallback'"),
    ("definitions:\n  d:\n    breaker: 5,60\n", "trace_apply.yaml:3: definitions.d.breaker must be"),
    ("definitions:\n  d:\n    prebuild: yes please\n", "trace_apply.yaml:3: definitions.d.prebuild must be true or false"),
    ("allow: rmsnorm_*\n", "trace_apply.yaml:1: allow must be a list"),
    ("definitions:\n  d:\n    dtypes:\n      x: [bf16]\n", "trace_apply.yaml:4: definitions.d.dtypes.x names unknown dtype"),
    ("definitions:\n  d:\n    applies_when: [\"n <\"]\n", "trace_apply.yaml:3: definitions.d.applies_when[0] is not an expression"),
    ("definitions:\n  d:\n    applies_when: n <= 4\n", "trace_apply.yaml:3: definitions.d.applies_when must be a list"),
    ("version: 2\n", "trace_apply.yaml:1: version must be 1"),
])
def test_policy_errors_name_file_key_and_line(text, said):
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "trace_apply.yaml")
    assert str(info.value).startswith(said)


def test_policy_dtypes_for_an_input_the_definition_lacks_is_an_error(tmp_path):
    root = tmp_path / "f"
    save_json_file(fib_definition(), root / "definitions" / f"{DEF}.json")
    save_json_file(fib_solution("vr", VALUE_RETURNING, destination_passing_style=False), root / "solutions" / "vr.json")
    (root / "trace_apply.yaml").write_text(f"version: 1\ndefinitions:\n  {DEF}:\n    dtypes:\n      input: [float16]\n")
    with pytest.raises(PolicyError, match=f"trace_apply.yaml:4: definitions.{DEF}.dtypes.input: the definition has no input 'input'"):
        load_solutions(root)
    done = _cli("list", str(root))
    assert done.returncode == 2 and "Traceback" not in done.stderr


# -- export -----------------------------------------------------------------------


def test_export_writes_a_trace_set_flashinfer_bench_loads(tmp_path):
    out = tmp_path / "dataset"
    done = _cli("export", str(ROOT), "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {r["definition"]: r for r in report["rows"]}
    assert rows["rmsnorm_h4096"]["workloads"] == 4
    assert rows["rope_cos_sin_cache_inplace_d128"]["workloads"] == 0 and "variable axes" in rows["rope_cos_sin_cache_inplace_d128"]["note"]
    theirs = fib.TraceSet.from_path(str(out))
    bundled = len(list((ROOT / "solutions").rglob("*.json")))
    assert len(theirs.definitions) == bundled and sum(len(v) for v in theirs.solutions.values()) == bundled
    assert sorted(t.workload.axes["batch_size"] for t in theirs.workloads["rmsnorm_h4096"]) == [1, 16, 128, 1024]
    # ... and here, with the same rules.
    assert {n: s.spec.applies_when for n, s in load_solutions(out).items()} == {n: s.spec.applies_when for n, s in load_solutions(ROOT).items()}
    text = _cli("export", str(ROOT), "-o", str(tmp_path / "again"))
    assert text.returncode == 0 and "rmsnorm_h4096" in text.stdout and "4 workloads" in text.stdout


def test_exported_bundled_solutions_build_in_flashinfer_bench(tmp_path):
    """FlashInfer-Bench's runner builds each solution by importing its files as
    a package: every bundled kernel source (one solution per source file here)
    must import and expose its entry point there, not only in this plugin."""
    from flashinfer_bench.compile.registry import BuilderRegistry

    out = tmp_path / "dataset"
    assert _cli("export", str(ROOT), "-o", str(out)).returncode == 0
    theirs = fib.TraceSet.from_path(str(out))
    one_per_source = {}
    for name, solutions in sorted(theirs.solutions.items()):
        for solution in solutions:
            one_per_source.setdefault(solution.sources[0].path, (name, solution))
    assert len(one_per_source) >= 3
    registry = BuilderRegistry.get_instance()
    for entry, (name, solution) in one_per_source.items():
        runnable = registry.build(theirs.definitions[name], solution)
        assert callable(runnable), entry
    # Back here, the FlashInfer-Bench entry still receives the caller's out=.
    import flashinfer

    x, w = torch.randn(3, 4096, dtype=torch.bfloat16), torch.randn(4096, dtype=torch.bfloat16)
    mine = torch.empty_like(x)
    fita.enable_apply(str(out))
    try:
        got = flashinfer.norm.rmsnorm(x, w, eps=1e-6, out=mine)
        hits = fita.stats()["flashinfer.norm.rmsnorm"]
    finally:
        fita.disable_apply()
    assert got is mine and hits.get("hit") == 1 and not hits.get("fallback_unaccepted_argument")
    reference = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype)
    torch.testing.assert_close(mine, reference, rtol=1.6e-2, atol=1e-2)


@pytest.mark.gpu
def test_curate_on_a_gpu_picks_by_time_against_flashinfers_kernel(tmp_path):
    root = build_trace_set(tmp_path / "ts")
    out = tmp_path / "curated"
    done = _cli("curate", str(root), "-o", str(out), "--json", "--hardware", "NVIDIA_H100")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["gpu"] is True and "FlashInfer's kernel" in report["mode"]
    [row] = report["rows"]
    assert row["passed"] == 2
    if row["chosen"]:
        assert row["measured_against"].startswith("FlashInfer's kernel") and row["speedup"] > 0
        assert fib.TraceSet.from_path(str(out)).solutions[DEF][0].name == row["chosen"]
    else:
        assert "faster at every workload" in row["note"] or "passed check" in row["note"]


def test_policy_dtypes_without_a_definition_is_an_error_not_every_dtype_routed(tmp_path):
    root = tmp_path / "f"
    save_json_file(fib_solution("vr", VALUE_RETURNING, destination_passing_style=False), root / "solutions" / "vr.json")
    (root / "trace_apply.yaml").write_text(f"version: 1\ndefinitions:\n  {DEF}:\n    dtypes:\n      hidden_states: [float16]\n")
    with pytest.raises(PolicyError, match=f"trace_apply.yaml:4: definitions.{DEF}.dtypes: the folder has no Definition"):
        load_solutions(root)


@pytest.mark.parametrize("signature, expected", [
    ("hidden_states, weight", False),
    ("hidden_states, weight, eps=1e-6", False),  # our extra keyword arguments
    ("hidden_states, weight, output=None", False),  # an optional out= buffer
    ("hidden_states, weight, output", True),
    ("x, w, out", True),  # FlashInfer-Bench calls positionally: counted
    ("x, w, y, z", None),
])
def test_the_style_decided_from_a_signature(signature, expected):
    from flashinfer_trace_apply.calling_style import decide, entry_parameters
    from flashinfer_trace_apply.solution import Solution

    solution = Solution.coerce(fib_solution("s", f"def run({signature}):\n    pass\n"))
    assert decide(entry_parameters(solution), ["hidden_states", "weight"], ["output"]) is expected


def test_curating_an_exported_folder_keeps_its_rules(tmp_path):
    """Ours -> export -> curate -> the same routing rules (CPU: from the traces' absence, the rules travel)."""
    if torch.cuda.is_available():
        pytest.skip("the CPU path")
    from flashinfer_trace_apply.curate import curate

    dataset = tmp_path / "dataset"
    assert _cli("export", str(ROOT), "-o", str(dataset)).returncode == 0
    # One benchmarked trace per exported solution, as FlashInfer-Bench's runner would add.
    trace_set = fib.TraceSet.from_path(str(dataset))
    traces = []
    for name, [solution] in trace_set.solutions.items():
        for w in trace_set.workloads.get(name, [])[:1]:
            t = trace(solution.name, 1)
            traces.append(Trace(definition=name, solution=solution.name, workload=w.workload, evaluation=t.evaluation))
    trace_set.add_traces(traces)
    report = curate([str(dataset)], tmp_path / "curated")
    curated = load_solutions(tmp_path / "curated")
    assert {r["definition"] for r in report["rows"] if r["chosen"]} == set(curated)
    bundled = load_solutions(ROOT)
    assert {n: s.spec.applies_when for n, s in curated.items()} == {n: bundled[n].spec.applies_when for n in curated}
    assert {n: curated.definitions[n]["inputs"] for n in curated} == {n: bundled.definitions[n]["inputs"] for n in curated}
