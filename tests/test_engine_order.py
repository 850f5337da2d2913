"""Exactly one engine routes, whatever the order of events (as dd-trace-py
tests its patching: each order in a fresh interpreter).

Events: ``import flashinfer``; FlashInfer's built-in ``trace_apply`` enabled
by its environment hook or by a call; ours enabled by our environment hook
or by a call; ``from flashinfer import rmsnorm`` bindings; FlashInfer-Bench's
``enable_apply`` (it patches ``flashinfer.norm.fused_add_rmsnorm`` for good);
and each disable. Each scenario asserts which engine routes after each
probe, that no engine's wrapper is stacked twice, and that the last disable
leaves the very objects that were there after ``import flashinfer``.

On a CPU-only torch the built-in's wrapper raises before calling anything
(it asks CUDA whether a graph is being captured), so the built-in is seen
by its wrapper at the attribute and by its ``is_enabled()``; ours is seen by
its solution having run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import hook_helpers as h

pytest.importorskip("flashinfer.trace_apply", reason="FlashInfer releases before 0.7.1 have no built-in engine")

FOLDER_SOURCE = '''\
import order_child


def run(hidden_states, weight, eps=1e-6):
    order_child.ROUTED.append("ours")
    return hidden_states * weight
'''


def _run(tmp_path: Path, steps: List[str], env_on: bool = False) -> Dict[str, Any]:
    folder = h.write_curated_folder(tmp_path / "curated", h.solution_dict(source=FOLDER_SOURCE))
    overrides: Dict[str, Optional[str]] = {}
    if env_on:
        overrides = {h.ENABLE_VAR: "1", h.PATH_VAR: str(folder)}
    env = h.child_env(tmp_path / "cache", overrides)
    code = "import json, sys, order_child; print(json.dumps(order_child.run(json.loads(sys.argv[1]))))"
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(steps)],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=h.CHILD_TIMEOUT_S,
    )
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1])


def _engine(probe: Dict[str, Any], label: str = "module") -> str:
    """Which engine routes the probed call: the solution that ran, else
    the outermost wrapper at the attribute."""
    if probe[label] == "ours":
        return "ours"
    layers = probe[label + "_layers"]
    return layers[0] if layers else "none"


def _assert_never_stacked(result: Dict[str, Any]) -> None:
    for p in result["probes"]:
        assert not p["stacked_twice"], p
        assert p["max_layers"] <= 2, p  # at most ours over a foreign tool's wrapper


# (steps, env hook on, engine routing flashinfer.norm.rmsnorm at each probe,
#  engine behind the early binding at each probe where there is one)
SCENARIOS = {
    "builtin env hook, then ours by call": (
        ["unarm_our_hook", "import", "probe", "ours_enable", "probe", "ours_disable", "probe", "identical"],
        True, ["builtin", "ours", "none"],
    ),
    "builtin call, then ours call": (
        ["import", "builtin_enable", "probe", "ours_enable", "probe", "builtin_disable", "probe",
         "ours_disable", "probe", "identical"],
        False, ["builtin", "ours", "ours", "none"],
    ),
    "ours call, then builtin call (refused)": (
        ["import", "ours_enable", "builtin_enable", "probe", "ours_disable", "probe",
         "builtin_enable", "probe", "builtin_disable", "probe", "identical"],
        False, ["ours", "none", "builtin", "none"],
    ),
    "ours env hook, then builtin call (refused), then ours again by call": (
        ["import", "probe", "builtin_enable", "probe", "ours_enable", "probe", "ours_disable", "probe"],
        True, ["ours", "ours", "ours", "none"],
    ),
    "binding taken before our call": (
        ["import", "bind", "ours_enable", "probe", "ours_disable", "probe", "identical"],
        False, ["ours", "none"],
    ),
    "FlashInfer-Bench first, then ours": (
        ["import", "fib_enable", "ours_enable", "probe", "ours_disable", "fib_disable", "probe"],
        False, ["ours", "none"],
    ),
    "ours first, then FlashInfer-Bench": (
        ["import", "ours_enable", "fib_enable", "probe", "fib_disable", "probe", "ours_disable", "probe"],
        False, ["ours", "ours", "none"],
    ),
}

# FlashInfer-Bench patches flashinfer.norm.fused_add_rmsnorm for good (its
# disable only pops its runtime): ours must route it whichever came first.
FUSED = {
    "FlashInfer-Bench first, then ours": ["ours", "flashinfer_bench"],
    "ours first, then FlashInfer-Bench": ["ours", "ours", "flashinfer_bench"],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_exactly_one_engine_routes(tmp_path: Path, name: str) -> None:
    steps, env_on, expected = SCENARIOS[name]
    if any(s.startswith("fib_") for s in steps):
        pytest.importorskip("flashinfer_bench")
    result = _run(tmp_path, steps, env_on=env_on)
    seen = [_engine(p) for p in result["probes"]]
    assert seen == expected, json.dumps(result, indent=1)
    _assert_never_stacked(result)
    for p in result["probes"]:
        # Never both engines on at once, and is_enabled() tells the truth.
        assert not (p["ours_enabled"] and p["builtin_enabled"]), p
    for p, engine in zip(result["probes"], seen):
        assert p["ours_enabled"] == (engine == "ours"), p
    if "identical" in result:
        assert all(result["identical"].values()), result["identical"]
    if name in FUSED:
        assert [_engine(p, "fused") for p in result["probes"]] == FUSED[name], json.dumps(result, indent=1)


def test_binding_taken_before_our_call_keeps_the_original_but_one_taken_after_the_hook_routes(tmp_path: Path) -> None:
    before = _run(tmp_path / "a", ["import", "bind", "ours_enable", "probe"])
    assert before["probes"][0]["bound"] != "ours"  # the known limit of a programmatic enable
    after = _run(tmp_path / "b", ["import", "bind", "probe"], env_on=True)
    assert after["probes"][0]["bound"] == "ours"


def test_builtin_refusal_and_takeover_are_said(tmp_path: Path) -> None:
    result = _run(tmp_path, ["import", "builtin_enable", "ours_enable", "builtin_enable", "ours_disable"])
    text = "\n".join(result["warnings"])
    assert "built-in trace_apply was enabled; disabling it" in text
    assert "flashinfer.trace_apply.enable_apply() ignored" in text
    assert result["returns"][-1] == 0  # the refused built-in enable wrapped nothing
