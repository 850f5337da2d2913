"""One subprocess per FlashInfer release line, in the matrix's environments
(``.venvs/fi-VERSION``, made by ``.ci/release_venv``): what a user of that
release sees from the import hook and from a name of another release.

Skipped where an environment is absent (the main suite); the CI matrix
(``.ci/matrix``) builds them and sets ``FITA_RELEASE_MATRIX=1``, which turns
an absent environment into a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RANGE = ">=0.6.13,<0.8"
REFUSED = ["0.5.3", "0.6.0", "0.6.7", "0.6.12"]
SUPPORTED = ["0.6.13", "0.7.1", "0.7.2", "0.7.4"]
OLD = "trtllm_fp4_block_scale_routed_moe_topk8_e256_h7168"  # before 0.7.1 added activation_type
NEW = OLD + "_act3"

SCRIPT = r"""
import json, sys, warnings
report = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import flashinfer
    import flashinfer_trace_apply as fita
    report["version"] = flashinfer.__version__
    report["enabled_by_hook"] = fita.is_enabled()
    fita.disable_apply()
report["hook_said"] = [str(w.message) for w in caught if w.category.__name__ == "TraceApplyWarning"]
from flashinfer_trace_apply.compat import UnsupportedFlashInfer
if sys.argv[1] == "--refused":  # `check` says why rather than skipping everything
    from flashinfer_trace_apply.check import run_check
    try:
        run_check(sys.argv[2], batches=[1])
        report["check"] = "ran"
    except UnsupportedFlashInfer as exc:
        report["check"] = "refused: " + str(exc)
report["renames"] = {}
for name in sys.argv[3:]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fita.enable_apply({name: lambda **kw: None})
            report["renames"][name] = [str(w.message) for w in caught if w.category.__name__ == "TraceApplyWarning"]
        except UnsupportedFlashInfer as exc:
            report["renames"][name] = ["refused: " + str(exc)]
        finally:
            fita.disable_apply()
print("REPORT" + json.dumps(report))
"""


def _run(version: str, refused: bool) -> dict:
    python = ROOT / ".venvs" / f"fi-{version}" / "bin" / "python"
    if not python.exists():
        if os.environ.get("FITA_RELEASE_MATRIX") == "1":
            pytest.fail(f"{python} is missing: .ci/release_venv {version} makes it")
        pytest.skip(f"no environment for FlashInfer {version} (.ci/release_venv {version})")
    env = dict(os.environ, FLASHINFER_TRACE_APPLY="1", FLASHINFER_TRACE_APPLY_PATH=str(ROOT),
               TRITON_INTERPRET="1")
    env.pop("PYTHONPATH", None)
    args = ["--refused" if refused else "--supported", str(ROOT), OLD, NEW]
    done = subprocess.run([str(python), "-c", SCRIPT, *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=str(ROOT))
    lines = [l for l in done.stdout.splitlines() if l.startswith("REPORT")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT"):])
    report["stderr"] = done.stderr
    return report


@pytest.mark.release
@pytest.mark.parametrize("version", REFUSED)
def test_an_unsupported_release_imports_and_is_refused_once(version):
    report = _run(version, refused=True)
    assert report["version"] == version
    assert report["enabled_by_hook"] is False
    assert report["check"].startswith("refused: ") and f"FlashInfer {version} " in report["check"]
    said = report["hook_said"]
    assert len(said) == 1, said
    assert f"FlashInfer {version} " in said[0] and RANGE in said[0]
    assert "circular import" not in report["stderr"]
    for name in (OLD, NEW):
        (message,) = report["renames"][name]
        assert message.startswith("refused: ") and f"FlashInfer {version} " in message


@pytest.mark.release
@pytest.mark.parametrize("version", SUPPORTED)
def test_a_supported_release_enables_and_names_moved_definitions(version):
    report = _run(version, refused=False)
    assert report["version"] == version
    assert report["enabled_by_hook"] is True  # the bundled folder, through the hook
    assert not any("not enabled" in s or "another FlashInfer release" in s for s in report["hook_said"]), report["hook_said"]
    has_act = version >= "0.7"
    stale, current = (OLD, NEW) if has_act else (NEW, OLD)
    moved = [s for s in report["renames"][stale] if "another FlashInfer release" in s]
    assert len(moved) == 1, report["renames"][stale]
    assert f"'{current}'" in moved[0]
    assert ("routed as that name" in moved[0]) is has_act
    assert not any("another FlashInfer release" in s for s in report["renames"][current])
