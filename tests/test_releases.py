"""FlashInfer releases: the supported range, the refusal outside it, and
definition names that moved between releases.

Tests marked ``release`` run against whatever FlashInfer is installed; the
CI matrix (``.ci/matrix``) runs them once per supported release. The
refusal logic is fed the features each release line really has (as probed
on its wheel), so it is checked here on any installed release.
"""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import pytest

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply import api, compat, renames
from flashinfer_trace_apply.compat import FlashInferFeatures, UnsupportedFlashInfer
from flashinfer_trace_apply.warn import TraceApplyWarning

ROOT = Path(__file__).resolve().parent.parent
RANGE = ">=0.6.13,<0.8"

# What each release line offers, as probed on its wheel (see docs/releases.md).
NO_REGISTRY = dict(trace_registry=False, trace_templates=False)
FULL = dict(trace_registry=True, trace_templates=True, fixed_axis_values=True, naming_method=True,
            template_check=True, dispatcher_map=True)
LINES = {
    "0.5.3": FlashInferFeatures("0.5.3", **NO_REGISTRY),
    "0.6.0": FlashInferFeatures("0.6.0", **NO_REGISTRY),
    "0.6.7": FlashInferFeatures("0.6.7", **NO_REGISTRY),
    "0.6.12": FlashInferFeatures("0.6.12", trace_registry=True, trace_templates=True),
    "0.6.13": FlashInferFeatures("0.6.13", trace_registry=True, trace_templates=True, template_check=True),
    "0.6.17": FlashInferFeatures("0.6.17", trace_registry=True, trace_templates=True, template_check=True,
                                 naming_method=True),
    "0.7.2.post1": FlashInferFeatures("0.7.2.post1", **FULL),
    "0.7.4": FlashInferFeatures("0.7.4", **FULL),
}


@pytest.mark.parametrize("version", ["0.5.3", "0.6.0", "0.6.7", "0.6.12"])
def test_releases_below_the_floor_are_refused_naming_release_and_range(version):
    reason = compat.refusal(LINES[version])
    assert reason is not None
    assert f"FlashInfer {version} " in reason and RANGE in reason


@pytest.mark.parametrize("version", ["0.5.3", "0.6.0", "0.6.7"])
def test_refusal_says_the_trace_registry_is_missing(version):
    assert "_TRACE_REGISTRY" in compat.refusal(LINES[version])


@pytest.mark.parametrize("version", ["0.6.13", "0.6.17", "0.7.2.post1", "0.7.4"])
def test_supported_releases_are_not_refused(version):
    assert compat.refusal(LINES[version]) is None


def test_a_release_that_cannot_be_imported_is_refused_with_its_error():
    features = FlashInferFeatures("0.7.0", imports=False, import_error="AssertionError: Torch not compiled with CUDA enabled")
    reason = compat.refusal(features)
    assert "FlashInfer 0.7.0 cannot be imported" in reason and "Torch not compiled" in reason and RANGE in reason


def test_a_supported_version_without_the_registry_is_refused():
    reason = compat.refusal(FlashInferFeatures("0.7.9", trace_registry=False, trace_templates=True))
    assert "_TRACE_REGISTRY" in reason and "FlashInfer 0.7.9" in reason


def test_release_numbers_compare_by_their_numeric_part():
    assert compat.release_tuple("0.7.2.post1") == (0, 7, 2)
    assert compat.release_tuple("0.6.13") >= compat.release_tuple(compat.FLOOR)
    assert compat.release_tuple("0.6.12") < compat.release_tuple(compat.FLOOR)
    assert compat.release_tuple("0.8.0rc1") >= compat.release_tuple(compat.CEILING)


def test_the_floor_declared_in_pyproject_is_the_one_enforced():
    text = (ROOT / "pyproject.toml").read_text()
    declared = re.search(r'"flashinfer-python>=([^,"]+),<([^"]+)"', text)
    assert declared is not None
    assert (declared.group(1), declared.group(2)) == (compat.FLOOR, compat.CEILING)


@pytest.mark.release
def test_the_installed_release_is_probed_and_accepted():
    features = compat.probe()
    assert features.version == flashinfer.__version__
    assert features.imports and features.trace_registry and features.trace_templates
    assert compat.refusal(features) is None


@pytest.fixture
def release_line(monkeypatch):
    """Make the version checker see another release line's features."""

    def use(version):
        monkeypatch.setattr(compat, "probe", lambda: LINES[version])

    return use


def test_enable_on_an_unsupported_release_raises_and_patches_nothing(release_line):
    release_line("0.6.7")
    before = flashinfer.rmsnorm
    with pytest.raises(UnsupportedFlashInfer, match=re.escape("FlashInfer 0.6.7 ") + ".*" + re.escape(RANGE)):
        fita.enable_apply({"rmsnorm_h64": lambda **kw: None})
    assert not fita.is_enabled()
    assert flashinfer.rmsnorm is before


def test_env_hook_on_an_unsupported_release_says_so_once(release_line, monkeypatch, tmp_path):
    release_line("0.6.0")
    folder = tmp_path / "curated"
    (folder / "solutions").mkdir(parents=True)
    (folder / "solutions" / "s.json").write_text((ROOT / "solutions" / "norm" / "rmsnorm_h4096.json").read_text())
    monkeypatch.setenv("FLASHINFER_TRACE_APPLY", "1")
    monkeypatch.setenv("FLASHINFER_TRACE_APPLY_PATH", str(folder))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert api.enable_from_environment() == 0
        fita.disable_apply()
    said = [str(w.message) for w in caught if issubclass(w.category, TraceApplyWarning)]
    assert len(said) == 1, said
    assert "FlashInfer 0.6.0 " in said[0] and RANGE in said[0]
    assert not fita.is_enabled()


# ---------------------------------------------------------------------------
# Bridges: the same names and axis readings as the installed release's own collector.
# ---------------------------------------------------------------------------


@pytest.mark.release
def test_axis_read_order_matches_the_installed_collector():
    """An axis carried both by an optional tensor and by a scalar argument:
    releases before 0.6.18 read the tensor, later ones the scalar. Our name
    must equal FlashInfer's own for the installed release."""
    import torch
    from flashinfer.trace.template import Const, Scalar, Tensor, TraceTemplate, Var

    from flashinfer_trace_apply.axes import const_axis_sources, definition_name

    template = TraceTemplate(
        op_type="probe_op",
        name_prefix="probe_op",
        description="axis order probe",
        axes={"n": Var(description="rows"), "k": Const(description="k", abbrev="k")},
        inputs={
            "x": Tensor(["n", "n"], description="x"),
            "extra": Tensor(["n", "k"], optional=True, description="optional tensor carrying k"),
            "k": Scalar("int32", description="k as a scalar"),
        },
        outputs={"y": Tensor(["n", "n"], description="y")},
    )
    call = {"x": torch.zeros(2, 2), "extra": torch.zeros(2, 5), "k": 7}
    theirs = template.build_fi_trace_fn("probe.probe_op")(**call)["name"]
    sources = const_axis_sources(template)
    ours = definition_name(template, sources, tuple(s.read(call) for s in sources))
    assert ours == theirs
    assert theirs == ("probe_op_k7" if compat.probe().fixed_axis_values else "probe_op_k5")


# ---------------------------------------------------------------------------
# Names that moved between releases.
# ---------------------------------------------------------------------------


def _bundled_names():
    return sorted(p.stem for p in (ROOT / "definitions").rglob("*.json"))


@pytest.mark.release
def test_bundled_names_are_current_on_the_installed_release():
    assert renames.find_renames(_bundled_names()) == []


def _template_of(prefix):
    from flashinfer_trace_apply.registry import discover_apis, name_prefix

    for spec in discover_apis():
        for template in spec.templates:
            if name_prefix(template) == prefix:
                return spec, template
    return None, None


@pytest.mark.release
def test_a_name_from_before_an_axis_was_added_is_reported_and_routed():
    """0.7.1 added ``page_size`` (``ps``) to top_k_page_table_transform; a
    0.6.13 name lacks it. Where the installed template has the axis, the old
    name is reported with the new one and routed (at the API's default)."""
    spec, template = _template_of("top_k_page_table_transform")
    if template is None or "page_size" not in template.axes:
        pytest.skip("the installed FlashInfer's template has no page_size axis")
    params = inspect.signature(template.init).parameters
    kwargs = {p.name: 3 for p in params.values() if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    inputs = template.init(**kwargs, device="cpu")
    inputs.pop("page_size", None)  # the caller leaves it to the API's default
    current = spec.current.fi_trace(**inputs)["name"]
    assert current.endswith("_ps1")
    old = current[: -len("_ps1")]

    class Routed(Exception):
        pass

    def solution(**_):
        raise Routed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fita.enable_apply({old: solution})
    said = [str(w.message) for w in caught if issubclass(w.category, TraceApplyWarning)]
    assert any(f"'{old}'" in s and f"'{current}'" in s and "routed as that name" in s for s in said), said
    with pytest.raises(Routed):
        flashinfer.top_k_page_table_transform(**inputs)


@pytest.mark.release
def test_a_name_with_an_axis_this_release_lacks_is_reported_not_routed():
    spec, template = _template_of("trtllm_fp4_block_scale_routed_moe")
    if template is None:
        pytest.skip("no trtllm_fp4_block_scale_routed_moe template")
    base = "trtllm_fp4_block_scale_routed_moe_topk8_e256_h7168"
    if "activation_type" in template.axes:
        base += "_act3"
    foreign = base + "_zz9"
    found = renames.find_renames([foreign])
    assert [(r.change, r.current, r.routable) for r in found] == [(renames.LOST, base, False)]
    assert f"'{base}'" in found[0].describe()


@pytest.mark.release
def test_names_across_the_act_axis_are_told_the_name_this_release_uses():
    """0.7.1 added ``act`` (activation_type) to the fp4 MoE templates."""
    spec, template = _template_of("trtllm_fp4_block_scale_routed_moe")
    if template is None:
        pytest.skip("no trtllm_fp4_block_scale_routed_moe template")
    old, new = "trtllm_fp4_block_scale_routed_moe_topk8_e256_h7168", "trtllm_fp4_block_scale_routed_moe_topk8_e256_h7168_act3"
    if "activation_type" in template.axes:
        (found,) = renames.find_renames([old])
        assert (found.change, found.current, found.routable) == (renames.GAINED, new, True)
        assert renames.find_renames([new]) == []
    else:
        (found,) = renames.find_renames([new])
        assert (found.change, found.current, found.routable) == (renames.LOST, old, False)
        assert renames.find_renames([old]) == []


@pytest.mark.release
def test_an_old_name_is_not_renamed_over_a_registered_current_one():
    _, template = _template_of("trtllm_fp4_block_scale_routed_moe")
    if template is None or "activation_type" not in template.axes:
        pytest.skip("the installed template has no activation_type axis")
    old, new = "trtllm_fp4_block_scale_routed_moe_topk8_e256_h7168", "trtllm_fp4_block_scale_routed_moe_topk8_e256_h7168_act3"
    mapping = {old: lambda **kw: "old", new: lambda **kw: "new"}
    routed, _, found = renames.follow_renames(mapping, {})
    assert routed == mapping
    assert [(r.registered, r.routable) for r in found] == [(old, False)]


@pytest.mark.release
def test_an_axis_flashinfer_computes_itself_is_named_as_flashinfer_names_it():
    """0.7.4's ``Const(extract=)`` (the MoE ``r4o6`` axis): FlashInfer's own
    function of the call decides the value, or leaves the axis out."""
    import torch
    from flashinfer.trace.template import Const, Tensor, TraceTemplate, Var

    from flashinfer_trace_apply.axes import const_axis_sources, definition_name

    if "extract" not in inspect.signature(Const).parameters:
        pytest.skip("this FlashInfer release has no Const(extract=)")

    def recipe_code(kwargs):
        recipe = kwargs.get("recipe")
        return None if recipe is None else {"off": 0, "on": 4}[recipe]

    template = TraceTemplate(
        op_type="probe_op",
        name_prefix="probe_op",
        description="computed axis probe",
        axes={"n": Var(description="rows"), "h": Const(description="h", abbrev="h"),
              "recipe": Const(description="recipe code", abbrev="r", extract=recipe_code)},
        inputs={"x": Tensor(["n", "h"], description="x")},
        outputs={"y": Tensor(["n", "h"], description="y")},
    )
    trace = template.build_fi_trace_fn("probe.probe_op")
    sources = const_axis_sources(template)
    for call in ({"x": torch.zeros(2, 8)}, {"x": torch.zeros(2, 8), "recipe": "on"}):
        ours = definition_name(template, sources, tuple(s.read(call) for s in sources))
        assert ours == trace(**call)["name"]
    assert ours == "probe_op_h8_r4"


@pytest.mark.release
def test_every_api_with_several_templates_knows_which_one_names_a_call():
    """Before 0.7.0 FlashInfer keeps the per-call template choice only in
    each API's ``fi_trace``; without it such an API would be left unrouted."""
    from flashinfer import api_logging

    from flashinfer_trace_apply.registry import _locate, discover_apis

    templates = {}
    for original, template, _ in api_logging._TRACE_REGISTRY:
        templates.setdefault(original, set()).add(id(template))
    several = [o for o, t in templates.items() if len(t) > 1 and _locate(o) is not None]
    assert several, "no API with several templates in this release"
    routed = {id(s.original): s for s in discover_apis()}
    for original in several:
        spec = routed.get(id(original))
        assert spec is not None and spec.selector is not None, original.__qualname__


def test_a_release_newer_than_the_tested_range_is_used_with_one_warning(monkeypatch):
    monkeypatch.setattr(compat, "probe", lambda: FlashInferFeatures("0.8.1", **FULL))
    monkeypatch.setattr(compat, "_told_untested", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.require_supported()
        compat.require_supported()
    said = [str(w.message) for w in caught if issubclass(w.category, TraceApplyWarning)]
    assert len(said) == 1 and "FlashInfer 0.8.1 is newer" in said[0] and RANGE in said[0]
