"""FLASHINFER_TRACE_APPLY_PREBUILD=1: every solution is loaded at enable, not
on the first matching call; in code a failure raises at enable, in the
start-up hook it turns that one solution off and import goes on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply.env import PREBUILD_VAR
from flashinfer_trace_apply.errors import SolutionLoadError
from flashinfer_trace_apply.prebuild import prebuild

import hook_helpers as h

IMPORT_MARKER = '''\
import os
with open(os.environ["FITA_TEST_MARKER"], "a") as f:
    f.write("imported\\n")


def run(hidden_states, weight, eps=1e-6):
    return hidden_states * weight
'''


def test_solutions_are_loaded_at_enable_not_at_the_first_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("FITA_TEST_MARKER", str(marker))
    monkeypatch.setenv(PREBUILD_VAR, "1")
    fita.enable_apply({"rmsnorm_h64": h.solution_dict(source=IMPORT_MARKER)})
    assert marker.read_text() == "imported\n"


def test_without_the_variable_loading_waits_for_the_first_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("FITA_TEST_MARKER", str(marker))
    monkeypatch.delenv(PREBUILD_VAR, raising=False)
    fita.enable_apply({"rmsnorm_h64": h.solution_dict(source=IMPORT_MARKER, name="lazy_marker")})
    assert not marker.exists()


def test_in_code_a_failing_solution_raises_at_enable_and_nothing_is_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREBUILD_VAR, "1")
    original = flashinfer.rmsnorm
    with pytest.raises(SolutionLoadError, match="broken_rmsnorm"):
        fita.enable_apply({"rmsnorm_h64": h.solution_dict(source=h.FAILING_SOURCE, name="broken_rmsnorm")})
    assert not fita.is_enabled() and flashinfer.rmsnorm is original


def test_progress_and_summary_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    kept = prebuild({"rmsnorm_h64": h.solution_dict(name="bar_rmsnorm")}, strict=True, stream=out)
    assert list(kept) == ["rmsnorm_h64"]
    text = out.getvalue()
    assert "building solutions 1/1: rmsnorm_h64" in text
    assert text.rstrip().splitlines()[-1].lstrip("\r ").startswith("[flashinfer_trace_apply] prebuilt 1 of 1 solution(s)")


def test_in_the_hook_a_failing_solution_is_turned_off_and_the_rest_routes(tmp_path: Path) -> None:
    folder = h.write_curated_folder(tmp_path / "curated")
    h.write_json(
        folder / "solutions" / "fused" / "broken.json",
        h.solution_dict(definition="fused_add_rmsnorm_h64", name="broken_fused", source=h.FAILING_SOURCE),
    )
    env = h.child_env(tmp_path / "cache", {h.ENABLE_VAR: "1", h.PATH_VAR: str(folder), PREBUILD_VAR: "1"})
    body = '''
import torch
x, w = torch.randn(2, 64), torch.ones(64)
flashinfer.rmsnorm(x, w)
report["stats"] = sys.modules["flashinfer_trace_apply"].stats()
report["fused_wrapped"] = hasattr(flashinfer.fused_add_rmsnorm, "__fita_route__")
'''
    report, proc = h.run_child(h.script(body), env, tmp_path)
    assert report["import_error"] is None
    assert report["fita_enabled"] is True
    assert report["stats"]["flashinfer.norm.rmsnorm"]["hit"] == 1
    assert report["fused_wrapped"] is False  # turned off: FlashInfer's kernel serves it
    said = " ".join(w["message"] for w in report["import_warnings"])
    assert "broken_fused" in said and "turned off" in said
    assert "prebuilt 1 of 2 solution(s)" in proc.stderr
