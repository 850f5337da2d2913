"""The zero-code path: ``FLASHINFER_TRACE_APPLY`` + the ``.pth`` start-up hook.

Every test runs a fresh interpreter (``sys.executable -c``) with a controlled
environment, because the hook acts at interpreter start-up and during
``import flashinfer``. The child scripts record the warnings raised by
``import flashinfer`` and print a JSON report on their last stdout line.
Real FlashInfer, CPU tensors; helpers live in ``hook_helpers.py``.
"""

from __future__ import annotations

import importlib.util
import json
import site
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # e.g. under --import-mode=importlib
    sys.path.insert(0, _TESTS)
import hook_helpers as h  # noqa: E402

FITA_WARNING = "flashinfer_trace_apply.warn.TraceApplyWarning"
# FlashInfer's built-in engine ships from 0.6.14 on; older releases skip its checks.
HAS_BUILTIN = importlib.util.find_spec("flashinfer.trace_apply") is not None


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid curated folder: solutions/rmsnorm/sol.json for rmsnorm_h64."""
    return h.write_curated_folder(tmp_path_factory.mktemp("curated"))


def run(tmp_path: Path, body: str = "", **env: Optional[str]) -> Dict[str, Any]:
    report, proc = h.run_child(h.script(body), h.child_env(tmp_path / "cache", env), tmp_path)
    assert report["import_error"] is None, report["import_error"]
    report["stderr"] = proc.stderr
    return report


def trace_apply_lines(stderr: str) -> List[str]:
    """stderr lines about Trace Apply (the bootstrap's last-resort prints and
    the built-in's logging); warnings are recorded, not printed."""
    return [line for line in stderr.splitlines() if h._TRACE_APPLY_WORDS.search(line)]


def assert_unpatched(report: Dict[str, Any]) -> None:
    assert report["rmsnorm_routed"] is False
    assert report["rmsnorm_module"].startswith("flashinfer.")
    assert report["routed_attributes"] == []
    assert report["fita_enabled"] in (None, False)
    assert report["builtin_enabled"] in (None, False)


# -- 1 + 4: on ------------------------------------------------------------------------

ON_BODY = r'''
import torch
import flashinfer_trace_apply as fita
report["builtin_enabled_after_import"] = _h.builtin_enabled()
x, w = _h.rmsnorm_inputs()
out = flashinfer.rmsnorm(x, w)
report["matches_reference"] = _h.matches_reference(out, x, w)
report["solution_calls"] = _h.solution_calls()
report["stats"] = fita.stats()
report["builtin_enabled_after_call"] = _h.builtin_enabled()

# The built-in's enable_apply refuses (returns 0, warns) while ours is on
# (releases before 0.6.14 have no built-in).
if getattr(flashinfer, "trace_apply", None) is not None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report["builtin_enable_returned"] = flashinfer.trace_apply.enable_apply({"rmsnorm_h64": lambda **kw: None})
    report["builtin_enable_warnings"] = _h.describe_warnings(caught)
    report["builtin_enabled_after_refusal"] = _h.builtin_enabled()
report["still_routed"] = hasattr(flashinfer.rmsnorm, "__fita_route__")
'''


def test_on_routes_rmsnorm_to_the_solution_and_builtin_stays_off(tmp_path: Path, curated: Path) -> None:
    r = run(tmp_path, ON_BODY, FLASHINFER_TRACE_APPLY="1", FLASHINFER_TRACE_APPLY_PATH=str(curated))

    assert h.trace_apply_warnings(r["import_warnings"]) == []
    assert trace_apply_lines(r["stderr"]) == []
    assert r["fita_loaded"] and r["fita_enabled"] is True
    assert r["rmsnorm_routed"] is True
    assert "rmsnorm" in r["routed_attributes"]

    assert r["matches_reference"] is True
    assert r["solution_calls"] == 1  # the solution module itself ran, once
    assert r["stats"][h.RMSNORM_API]["hit"] == 1
    assert r["stats"][h.RMSNORM_API]["error"] == 0

    # 4: FlashInfer's built-in engine never activates.
    if not HAS_BUILTIN:
        assert r["builtin_enabled_after_import"] is None and r["still_routed"] is True
        return
    assert r["builtin_enabled_after_import"] is False
    assert r["builtin_enabled_after_call"] is False
    assert r["builtin_enable_returned"] == 0
    refusal = r["builtin_enable_warnings"]
    assert len(refusal) == 1 and refusal[0]["category"] == FITA_WARNING
    assert "enable_apply() ignored" in refusal[0]["message"]
    assert r["builtin_enabled_after_refusal"] is False
    assert r["still_routed"] is True


# -- 2: off ----------------------------------------------------------------------------


# With the variable unset, ``import flashinfer`` never imports the built-in
# engine. Enabling ours programmatically must still make a later built-in
# enable_apply() refuse, and disabling ours must put everything back.
LATE_BUILTIN_BODY = r'''
report["builtin_imported_before_enable"] = "flashinfer.trace_apply" in sys.modules
import flashinfer_trace_apply as fita
fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight, eps=1e-6: hidden_states})
report["routed_while_enabled"] = hasattr(flashinfer.rmsnorm, "__fita_route__")
import flashinfer.trace_apply as builtin
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    report["late_builtin_enable_returned"] = builtin.enable_apply({"rmsnorm_h64": lambda **kw: None})
report["late_builtin_enable_warnings"] = _h.describe_warnings(caught)
report["late_builtin_enabled"] = builtin.is_enabled()
with warnings.catch_warnings(record=True):
    warnings.simplefilter("always")  # "never matched a call" is expected here
    fita.disable_apply()
report["routed_after_disable"] = _h.routed_attributes(flashinfer)
report["refusal_after_disable"] = hasattr(builtin.enable_apply, "__fita_refusal__")
'''


@pytest.mark.parametrize("value", [None, "0", ""], ids=["unset", "zero", "empty"])
def test_off_leaves_flashinfer_untouched(tmp_path: Path, curated: Path, value: Optional[str]) -> None:
    # A PATH alone must not switch anything on.
    body = LATE_BUILTIN_BODY if value is None and HAS_BUILTIN else ""
    r = run(tmp_path, body, FLASHINFER_TRACE_APPLY=value, FLASHINFER_TRACE_APPLY_PATH=str(curated))

    assert r["fita_loaded"] is False
    assert r["wrapt_loaded"] is False
    assert_unpatched(r)
    assert r["rmsnorm_module"] == "flashinfer.norm"
    assert h.trace_apply_warnings(r["import_warnings"]) == []
    assert trace_apply_lines(r["stderr"]) == []

    if value is None and HAS_BUILTIN:  # the programmatic path, in the same fresh interpreter
        assert r["builtin_imported_before_enable"] is False
        assert r["routed_while_enabled"] is True
        assert r["late_builtin_enable_returned"] == 0
        refusal = r["late_builtin_enable_warnings"]
        assert len(refusal) == 1 and refusal[0]["category"] == FITA_WARNING
        assert r["late_builtin_enabled"] is False
        assert r["routed_after_disable"] == []
        assert r["refusal_after_disable"] is False


# -- 3: invalid configurations ----------------------------------------------------------


def _bad_json(root: Path) -> Dict[str, Any]:
    file = root / "solutions" / "rmsnorm" / "sol.json"
    file.parent.mkdir(parents=True)
    file.write_text('{"name": "torch_rmsnorm_h64", "definition": ', encoding="utf-8")
    return {"path": root, "expect": [str(file), "is not valid JSON"]}


def _missing_spec(root: Path) -> Dict[str, Any]:
    data = h.solution_dict()
    del data["spec"]
    file = h.write_json(root / "solutions" / "rmsnorm" / "sol.json", data)
    return {"path": root, "expect": [str(file), "spec is missing"]}


def _duplicate(root: Path) -> Dict[str, Any]:
    first = h.write_json(root / "solutions" / "a" / "one.json", h.solution_dict(name="impl_one"))
    second = h.write_json(root / "solutions" / "b" / "two.json", h.solution_dict(name="impl_two"))
    return {"path": root, "expect": ["two solutions for definition 'rmsnorm_h64'", str(first), str(second)]}


def _no_solutions_dir(root: Path) -> Dict[str, Any]:
    root.mkdir()
    h.write_json(root / "sol.json", h.solution_dict())  # beside, not under solutions/
    return {"path": root, "expect": [str(root), "no 'solutions' subdirectory"]}


def _missing_dir(root: Path) -> Dict[str, Any]:
    missing = root / "does-not-exist"
    return {"path": missing, "expect": [str(missing), "is not a directory"]}


# Each case: env overrides (the value of FLASHINFER_TRACE_APPLY_PATH is filled
# in below) and the substrings the single warning must contain.
INVALID = {
    "value-yes": ({"FLASHINFER_TRACE_APPLY": "yes"}, ["FLASHINFER_TRACE_APPLY", "'yes'"]),
    "value-true": ({"FLASHINFER_TRACE_APPLY": "true"}, ["FLASHINFER_TRACE_APPLY", "'true'"]),
    "value-2": ({"FLASHINFER_TRACE_APPLY": "2"}, ["FLASHINFER_TRACE_APPLY", "'2'"]),
    "path-unset": (
        {"FLASHINFER_TRACE_APPLY": "1", "FLASHINFER_TRACE_APPLY_PATH": None},
        ["FLASHINFER_TRACE_APPLY_PATH is not set"],
    ),
    "path-missing": (_missing_dir, None),
    "no-solutions-subdir": (_no_solutions_dir, None),
    "malformed-json": (_bad_json, None),
    "missing-spec": (_missing_spec, None),
    "duplicate-definition": (_duplicate, None),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_configuration_warns_once_and_leaves_flashinfer_unpatched(
    tmp_path: Path, curated: Path, case: str
) -> None:
    setup, expect = INVALID[case]
    if callable(setup):
        made = setup(tmp_path / "folder")
        env = {"FLASHINFER_TRACE_APPLY": "1", "FLASHINFER_TRACE_APPLY_PATH": str(made["path"])}
        expect = made["expect"]
    else:
        # Bad values come with a valid folder: the value alone keeps it off.
        env = {"FLASHINFER_TRACE_APPLY_PATH": str(curated), **setup}
    r = run(tmp_path, **env)

    warned = h.trace_apply_warnings(r["import_warnings"])
    # Exactly one warning, ours; in particular none from the built-in engine.
    assert len(warned) == 1, json.dumps(warned, indent=1)
    assert warned[0]["category"] == FITA_WARNING
    for text in expect:
        assert text in warned[0]["message"], (text, warned[0]["message"])
    assert trace_apply_lines(r["stderr"]) == []
    assert r["fita_loaded"] is True
    assert_unpatched(r)
    assert r["fita_enabled"] is False
    assert r["builtin_enabled"] is False


# A solution whose module raises on import: solutions load lazily, on the first
# call that matches their definition, so import succeeds and that call fails.
FAILING_BODY = r'''
import flashinfer_trace_apply as fita
x, w = _h.rmsnorm_inputs()
errors = []
for _ in range(2):  # failures are not cached: the second call retries and fails again
    try:
        flashinfer.rmsnorm(x, w)
        errors.append(None)
    except Exception as exc:
        errors.append({
            "type": type(exc).__name__,
            "is_trace_apply_error": isinstance(exc, fita.TraceApplyError),
            "message": str(exc),
            "cause": repr(exc.__cause__),
        })
report["errors"] = errors
report["stats"] = fita.stats()
'''


def test_solution_that_fails_to_import_raises_on_first_matching_call(tmp_path: Path) -> None:
    folder = h.write_curated_folder(
        tmp_path / "folder", h.solution_dict(name="broken_rmsnorm", source=h.FAILING_SOURCE)
    )
    r = run(tmp_path, FAILING_BODY, FLASHINFER_TRACE_APPLY="1", FLASHINFER_TRACE_APPLY_PATH=str(folder))

    assert h.trace_apply_warnings(r["import_warnings"]) == []
    assert r["fita_enabled"] is True and r["rmsnorm_routed"] is True
    for error in r["errors"]:
        assert error is not None, "a call to a solution that cannot be imported returned"
        assert error["type"] == "SolutionLoadError" and error["is_trace_apply_error"]
        for text in ("rmsnorm_h64", "broken_rmsnorm", "flashinfer.norm.rmsnorm", "boom"):
            assert text in error["message"], (text, error["message"])
        assert "RuntimeError" in error["cause"]
    assert r["stats"][h.RMSNORM_API]["error"] == 2
    assert r["stats"][h.RMSNORM_API]["hit"] == 0


# -- 5: spawn workers ---------------------------------------------------------------------

SPAWN_SCRIPT = r'''
import json, multiprocessing, sys
import hook_helpers

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        enabled, hits, close, calls, warned = pool.apply(hook_helpers.spawn_worker)
    print(json.dumps({
        "parent_imported_flashinfer": "flashinfer" in sys.modules,
        "enabled": enabled, "hits": hits, "close": close, "calls": calls, "warned": warned,
    }))
'''


def test_spawn_worker_is_patched(tmp_path: Path, curated: Path) -> None:
    env = h.child_env(
        tmp_path / "cache",
        {"FLASHINFER_TRACE_APPLY": "1", "FLASHINFER_TRACE_APPLY_PATH": str(curated)},
    )
    r, _ = h.run_child(SPAWN_SCRIPT, env, tmp_path)

    # The parent never imported FlashInfer: the worker was patched on its own.
    assert r["parent_imported_flashinfer"] is False
    assert (r["enabled"], r["hits"], r["close"], r["calls"]) == (True, 1, True, 1)
    assert r["warned"] == []


# -- 6: the .pth is free when unset ------------------------------------------------------------


def _imported_modules(importtime_stderr: str) -> List[str]:
    # Lines look like "import time:       123 |        456 |   package.module".
    names = []
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.append(line.rsplit("|", 1)[1].strip())
    return names


def test_pth_costs_nothing_when_unset(tmp_path: Path) -> None:
    pth = [Path(d) / "flashinfer_trace_apply.pth" for d in site.getsitepackages()]
    assert any(p.is_file() for p in pth), f"flashinfer_trace_apply.pth not installed in {pth}"

    off = h.run_python(["-X", "importtime", "-c", "pass"], h.child_env(tmp_path / "cache"), tmp_path)
    assert off.returncode == 0, off.stderr
    modules = _imported_modules(off.stderr)
    assert "site" in modules  # start-up (and so the .pth) really ran
    assert not [m for m in modules if "flashinfer_trace_apply" in m or m.split(".")[0] == "wrapt"]

    # Control: the same probe sees the hook when the variable is set, and the
    # hook itself imports neither torch nor FlashInfer.
    on = h.run_python(
        ["-X", "importtime", "-c", "pass"],
        h.child_env(tmp_path / "cache", {"FLASHINFER_TRACE_APPLY": "1"}),
        tmp_path,
    )
    assert on.returncode == 0, on.stderr
    armed = _imported_modules(on.stderr)
    # Armed, start-up loads our two small modules and nothing else: no wrapt
    # (asyncio, importlib.metadata: ~0.1 s), no typing, no torch, no FlashInfer.
    added = sorted(set(armed) - set(modules))
    assert added == ["flashinfer_trace_apply", "flashinfer_trace_apply._bootstrap"], added
