"""The Triton launch fast path shared by the bundled kernels
(solutions/src/_fast_launch.py).

CPU: the Triton internals the fast path relies on, read from the installed
Triton's source; the specialization key against Triton's own specializer,
the version gate (one warning when it turns itself off), the environment
switch, the interpreter fallback, torch.compile detection, and the life of a key
(standard, standard + self-check, fast) on a stand-in kernel whose standard
path keys its cache the way Triton does. GPU (``-m gpu``): the bundled kernels
give bit-identical results through the fast and the standard launch, Triton's
own kernel cache backs what the fast path launches, hooks force the standard
path, and a timing table of eager calls at batch 1 (run with ``-s`` to see it).
"""

from __future__ import annotations

import importlib.util
import itertools
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "solutions" / "src" / "_fast_launch.py"
_counter = itertools.count()


def load_module():
    """A fresh copy of _fast_launch (its own launcher registry), loaded from
    solutions/src as a solution's folder would be."""
    spec = importlib.util.spec_from_file_location(f"_fita_test_fast_launch_{next(_counter)}", SOURCE)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SOURCE.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SOURCE.parent))
    return module


@pytest.fixture
def fl():
    module = load_module()
    # Warnings are once per process; each test starts with none given.
    module._PROCESS.warned.clear()
    yield module
    module._PROCESS.warned.clear()


# ---------------------------------------------------------------------------
# The key: never coarser than Triton's specialization.
# ---------------------------------------------------------------------------


def _triton_specialization(value):
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    return native_specialize_impl(BaseBackend, value, False, True, True)


def _sample_values():
    ints = [0, 1, 2, 3, 15, 16, 17, 32, 48, -1, -16, -17, 4096, 4097,
            2**31 - 16, 2**31 - 1, 2**31, 2**31 + 16, 2**32, 2**32 + 1, 2**63 - 1, 2**63, 2**63 + 16,
            -(2**31), -(2**31) - 1, -(2**31) - 16, -(2**63)]
    buf = torch.empty(64, dtype=torch.uint8)
    tensors = []
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.int32, torch.int64):
        base = torch.empty(32, dtype=dtype)
        tensors += [base, base[1:], base[8:]]
    tensors += [buf[0:], buf[1:], buf[16:]]
    return ints + [True, False, 0.5, 1.0, -0.0, None] + tensors


def _keyed_launcher(fl):
    launcher = fl.FastLauncher(object(), environ={})
    launcher._get_device = lambda: 0
    launcher._options = lambda: (False, "")
    return launcher


# ---------------------------------------------------------------------------
# Gate: version, environment switch, interpreter.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.6.0", "3.6.1", "3.6.0+git1a2b3c", "3.9.0", "3.9.1"])
def test_verified_versions_pass_the_gate(fl, version):
    assert fl.gate({}, version) is None


@pytest.mark.parametrize("version", ["3.5.1", "3.7.0", "3.8.0", "3.10.0", "3.60.0", "2.3.1", "4.0.0", "nightly"])
def test_other_versions_fall_back(fl, version):
    assert "not a verified version" in fl.gate({}, version)


@pytest.mark.parametrize("value", ["0", "false", "off", "no", " OFF "])
def test_environment_switch_turns_it_off(fl, value):
    assert fl.ENV_SWITCH == "FLASHINFER_TRACE_APPLY_TRITON_FAST_LAUNCH"
    assert fl.ENV_SWITCH in fl.gate({fl.ENV_SWITCH: value}, "3.6.0")


@pytest.mark.parametrize("value", ["", "1", "yes"])
def test_environment_switch_default_is_on(fl, value):
    assert fl.gate({fl.ENV_SWITCH: value}, "3.6.0") is None


def test_interpreter_falls_back(fl):
    assert "TRITON_INTERPRET" in fl.gate({"TRITON_INTERPRET": "1"}, "3.6.0")
    assert fl.gate({"TRITON_INTERPRET": "0"}, "3.6.0") is None


def test_version_parsing(fl):
    assert fl.triton_version("3.6.0") == (3, 6, 0)
    assert fl.triton_version("3.6.0+git1a2b") == (3, 6, 0)
    assert fl.triton_version("3.9") == (3, 9, 0)
    assert fl.triton_version("3.10.0rc1") == (3, 10, 0)


# ---------------------------------------------------------------------------
# Triton internals: read from the installed Triton's source.
# ---------------------------------------------------------------------------


def test_installed_triton_has_the_launch_path_the_fast_path_repeats(fl):
    """The statements of Triton's JITFunction.run (and, where the direct C
    launch is used, CudaLauncher.__call__) that the fast path repeats are in
    the installed Triton as written down in _fast_launch.py."""
    import triton

    version = fl.triton_version()[:2]
    if version not in fl.VERIFIED_TRITON:
        assert "not a verified version" in fl.gate({})  # the standard launch, whatever the internals
        pytest.skip(f"triton {triton.__version__} is not on VERIFIED_TRITON {fl.VERIFIED_TRITON}: fast path off")
    assert fl.internals_problem() is None


@pytest.fixture
def fresh_internals(fl, monkeypatch):
    monkeypatch.setattr(fl._PROCESS, "internals", {})
    return fl


def test_internals_check_notices_a_changed_launch_call(fresh_internals, monkeypatch):
    fl = fresh_internals
    callee, args = fl._RUN_LAUNCH
    monkeypatch.setattr(fl, "_RUN_LAUNCH", (callee, args[:3] + args[4:]))  # one argument fewer
    assert "JITFunction.run no longer ends with kernel.run(" in fl.internals_problem()


def test_internals_check_notices_changed_device_caches(fresh_internals, monkeypatch):
    fl = fresh_internals
    monkeypatch.setattr(fl, "_RUN_CACHES", ("kernel_cache", "binder"))
    assert "device_caches" in fl.internals_problem()


def test_internals_check_notices_a_knob_the_key_would_miss(fresh_internals, monkeypatch):
    fl = fresh_internals
    monkeypatch.setattr(fl, "_knob_reads", lambda version=None: [("_rt", "debug")])
    assert "folds the knobs" in fl.internals_problem()


def test_internals_check_holds_the_direct_c_launch_to_its_release(fresh_internals, monkeypatch):
    """The direct C launch repeats CudaLauncher.__call__'s call of triton 3.6;
    on a release with another call it must not be verified."""
    fl = fresh_internals
    version = fl.triton_version()[:2]
    monkeypatch.setattr(fl, "DIRECT_C_LAUNCH", (version,))
    callee, args = fl._C_LAUNCH
    monkeypatch.setattr(fl, "_C_LAUNCH", (callee, args[:-1] + ("*kernel_args",)))
    assert "CudaLauncher.__call__ no longer calls self.launch(" in fl.internals_problem()


def test_unreadable_triton_source_is_not_verified(fresh_internals, monkeypatch):
    fl = fresh_internals

    def no_source(func):
        raise OSError("could not get source code")

    monkeypatch.setattr(fl, "_tree", no_source)
    assert "cannot read Triton's launch source" in fl.internals_problem()


def _fast_launch_warnings(caught):
    return [str(w.message) for w in caught if "Triton fast launch off" in str(w.message)]


def test_turning_itself_off_warns_once_per_process(fl, monkeypatch):
    """An unlisted Triton: every kernel of every solution takes the standard
    launch, and the process hears about it once."""
    other = load_module()  # another bundled solution's copy of the file
    for module in (fl, other):
        monkeypatch.setattr(module, "VERIFIED_TRITON", ())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        launchers = [module.FastLauncher(object(), environ={}) for module in (fl, other, fl)]
        for launcher in launchers:
            launcher._decide()
    assert all("not a verified version" in launcher.off for launcher in launchers)
    messages = _fast_launch_warnings(caught)
    assert len(messages) == 1 and "not a verified version" in messages[0], messages


def test_internals_problem_turns_it_off_with_one_warning(fl, monkeypatch):
    monkeypatch.setattr(fl, "internals_problem", lambda: "JITFunction.run no longer ends with kernel.run(...)")
    monkeypatch.setattr(fl, "gate", lambda environ=None: None)
    monkeypatch.setattr(fl, "_is_plain_jit", lambda kernel: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            launcher = fl.FastLauncher(object(), environ={})
            launcher._decide()
    assert launcher.off.startswith("JITFunction.run no longer")
    assert len(_fast_launch_warnings(caught)) == 1


@pytest.mark.parametrize("environ", [{"FLASHINFER_TRACE_APPLY_TRITON_FAST_LAUNCH": "0"}, {"TRITON_INTERPRET": "1"}])
def test_switch_and_interpreter_turn_it_off_quietly(fl, environ):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        launcher = fl.FastLauncher(object(), environ=environ)
        launcher._decide()
    assert launcher.off and not _fast_launch_warnings(caught)


def test_kernel_files_detect_compiling_without_importing_dynamo():
    """Each kernel file's compiling(): eager False, and torch._dynamo stays
    unimported (importing the kernel files, Triton included, does not import
    it either); traced by torch.compile(fullgraph=True): True. One
    interpreter for all of it."""
    import json
    import subprocess

    code = f"""
import json, sys
sys.path.insert(0, {str(SOURCE.parent)!r})
import torch
import norm_triton, activation_triton, rope_triton
found = []
for module in (norm_triton, activation_triton, rope_triton):
    before = 'torch._dynamo' in sys.modules
    eager = module.compiling()
    found.append([before, eager, 'torch._dynamo' in sys.modules])
for module in (norm_triton, activation_triton, rope_triton):
    def f(x, check=module.compiling):
        return x + 1 if check() else x - 1
    found.append([torch.compile(f, fullgraph=True, backend='eager')(torch.zeros(1)).item(), module.compiling()])
print(json.dumps(found))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[False, False, False]] * 3 + [[1.0, False]] * 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter runs without a GPU")
def test_bundled_kernel_under_the_interpreter_uses_the_standard_launch():
    import os

    from flashinfer_trace_apply import loaders

    import flashinfer_trace_apply as fita

    assert os.environ.get("TRITON_INTERPRET") == "1"  # conftest.py, without a GPU
    fn = loaders.load(fita.load_solutions(fita.bundled_solutions_path())["rmsnorm_h2048"], "rmsnorm_h2048").fn
    launcher = fn.__globals__["_RMSNORM_ROWS"]
    x, w = torch.randn(3, 2048).to(torch.bfloat16), torch.randn(2048).to(torch.bfloat16)
    for _ in range(3):
        fn(hidden_states=x, weight=w)
    assert "TRITON_INTERPRET" in launcher.off
    assert launcher.fast_calls == 0 and not any(site.ready for site in launcher._sites)


def test_every_bundled_solution_ships_the_fast_launch_sources():
    import json

    shared = {name: (SOURCE.parent / name).read_text() for name in ("_fast_launch.py", "_rows.py")}
    for path in (ROOT / "solutions").rglob("*.json"):
        sources = {s["path"]: s["content"] for s in json.loads(path.read_text())["sources"]}
        for name, text in shared.items():
            assert sources.get(name) == text, (path, name)


# ---------------------------------------------------------------------------
# Life of a key, on a stand-in kernel (no GPU needed).
# ---------------------------------------------------------------------------


class FakeCompiled:
    def __init__(self):
        self.function = object()
        self.packed_metadata = (4, 1, 0)
        self.launches = []

    @property
    def run(self):
        return self._run

    def _run(self, *call):
        self.launches.append(call)

    def launch_metadata(self, grid, stream, *args):
        return None


class FakeJIT:
    """Standard path keyed by Triton's own specializer, like JITFunction.run."""

    def __init__(self):
        self.kernel_cache = {}
        self.device_caches = {0: (self.kernel_cache, {}, None, None, self.binder)}
        self.pre_run_hooks = []
        self.used_global_vals = {}
        self.standard = 0
        self.swap_compiled = False
        self.reorder = False

    def binder(self, x_ptr, n, eps, BLOCK, EVEN=True, **options):
        bound = {"x_ptr": x_ptr, "n": n, "eps": eps, "BLOCK": BLOCK, "EVEN": EVEN}
        if self.reorder:
            bound = dict(reversed(list(bound.items())))
        return bound, None, options

    def __getitem__(self, grid):
        def standard(*args, **kwargs):
            bound, _, options = self.binder(*args, **kwargs)
            key = (tuple(_triton_specialization(bound[k]) for k in ("x_ptr", "n", "eps")),
                   bound["BLOCK"], repr(bound["EVEN"]), repr(sorted(options.items())))
            if self.swap_compiled:
                self.kernel_cache.pop(key, None)
            compiled = self.kernel_cache.setdefault(key, FakeCompiled())
            compiled.launches.append(("standard", grid, *bound.values()))
            self.standard += 1
            return compiled

        return standard


class FakeDriver:
    stream = 1234

    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return self.stream

    def get_current_target(self):
        return types.SimpleNamespace(backend="cuda", arch=90, warp_size=32)


@pytest.fixture
def fake(fl, monkeypatch):
    monkeypatch.setattr(fl, "_is_plain_jit", lambda kernel: True)
    monkeypatch.setattr(fl, "_driver", FakeDriver)
    monkeypatch.setattr(fl, "_compiled_kernel_class", lambda: FakeCompiled)
    monkeypatch.setattr(fl, "internals_problem", lambda: None)
    kernel = FakeJIT()
    return kernel, fl.FastLauncher(kernel, environ={})


def _site_of(launcher):
    """The test sites' shape: one tensor, one int, one float; BLOCK fixed."""
    if not launcher._sites:
        launcher.site("pif", BLOCK=4096, num_warps=16)
    return launcher._sites[0]


def _call(launcher, x, n=4096, grid=(3, 1)):
    return _site_of(launcher)(grid[0], grid[1], x, n, 1e-6)


def test_a_new_specialization_gets_its_own_key(fake):
    kernel, launcher = fake
    x = torch.empty(4096, dtype=torch.bfloat16)
    for _ in range(3):
        _call(launcher, x)
    assert kernel.standard == 2 and launcher.fast_calls == 1
    for n in (1, 17, 2**31):  # == 1, not divisible by 16, i64: each its own key
        _call(launcher, x, n=n)
    assert kernel.standard == 5 and launcher.off is None
    assert len(set(kernel.kernel_cache.values())) == 4  # and Triton compiled each apart


def test_self_check_catches_a_key_coarser_than_triton(fake):
    kernel, launcher = fake
    x = torch.empty(4096, dtype=torch.bfloat16)
    _call(launcher, x)
    kernel.swap_compiled = True  # Triton hands the same key a different kernel
    with pytest.warns(RuntimeWarning, match="different compiled kernels"):
        _call(launcher, x)
    assert launcher.off and not _site_of(launcher).ready
    kernel.swap_compiled = False
    _call(launcher, x)
    assert kernel.standard == 3 and launcher.fast_calls == 0


def test_self_check_catches_a_different_argument_binding(fake):
    kernel, launcher = fake
    x = torch.empty(4096, dtype=torch.bfloat16)
    kernel.reorder = True
    _call(launcher, x)
    with pytest.warns(RuntimeWarning, match="binds the arguments differently"):
        _call(launcher, x)
    _call(launcher, x)
    assert launcher.fast_calls == 0 and kernel.standard == 3


def test_self_check_requires_the_kernel_in_tritons_cache(fake):
    kernel, launcher = fake
    x = torch.empty(4096, dtype=torch.bfloat16)
    _call(launcher, x)
    kernel.device_caches[0] = ({}, {}, None, None, kernel.binder)  # Triton's cache no longer holds it
    with pytest.warns(RuntimeWarning, match="not in Triton's kernel cache"):
        _call(launcher, x)
    _call(launcher, x)
    assert launcher.fast_calls == 0 and kernel.standard == 3


def test_a_non_jit_kernel_is_launched_the_standard_way(fl):
    calls = []

    class Interpreted:
        def __getitem__(self, grid):
            return lambda *a, **k: calls.append((grid, a, k))

    launcher = fl.FastLauncher(Interpreted(), environ={})
    site = launcher.site("ii", BLOCK=4)
    for _ in range(3):
        site(2, 1, 1, 2)
    assert calls == [((2, 1, 1), (1, 2), {"BLOCK": 4})] * 3 and "JITFunction" in launcher.off


# ---------------------------------------------------------------------------
# Launch sites: fixed constexprs, runtime arguments keyed by declared kind.
# ---------------------------------------------------------------------------


def _site_call(site, x, n=4096, grid=(3, 1), eps=1e-6):
    return site(grid[0], grid[1], x, n, eps)


def test_site_keys_refine_tritons_specialization(fl):
    """Two calls with equal site keys get the same Triton specialization."""
    site = _keyed_launcher(fl).site("pif", BLOCK=4096)
    values = _sample_values()
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    ints = [v for v in values if v.__class__ is int]
    seen = {}
    for t in tensors:
        for n in ints:
            key = site._key((t, n, 0.5))
            spec = (_triton_specialization(t), _triton_specialization(n))
            assert seen.setdefault(key, spec) == spec, (t, n)
    assert site._key((tensors[0], 16, 0.5)) != site._key((tensors[0], 16, 1))  # float vs int


def test_site_launch_function_keys_as_its_slow_path_twin(fake):
    """The generated launch function and ``_key`` build the same key."""
    kernel, launcher = fake
    site = launcher.site("pif", BLOCK=4096)
    x = torch.empty(4096, dtype=torch.bfloat16)
    for _ in range(2):
        site(3, 1, x, 4096, 1e-6)
    assert list(site.ready) == [site._key((x, 4096, 1e-6))]
    assert site._key((x, 4096, 1e-6)) != site._key((x[1:], 4096, 1e-6))  # alignment
    assert site._key((x, 4096, 1e-6)) != site._key((x.float(), 4096, 1e-6))  # dtype
    assert site._key((x, 4096, 1e-6)) != site._key((x, 4097, 1e-6))  # value


def test_site_signature_and_fixed_values_are_checked(fl):
    launcher = fl.FastLauncher(object(), environ={})
    with pytest.raises(ValueError, match="signature"):
        launcher.site("pxq")
    with pytest.raises(TypeError, match="BLOCK"):
        launcher.site("p", BLOCK=[4096])


def test_site_first_two_calls_are_standard_then_direct(fake):
    kernel, launcher = fake
    site = launcher.site("pif", BLOCK=4096, num_warps=16)
    x = torch.empty(4096, dtype=torch.bfloat16)
    _site_call(site, x)
    _site_call(site, x)
    assert kernel.standard == 2 and launcher.fast_calls == 0 and len(site.ready) == 1
    (compiled,) = [c for c in kernel.kernel_cache.values()]
    _site_call(site, x, grid=(5, 2))
    assert kernel.standard == 2 and site.fast_calls == 1 and launcher.fast_calls == 1
    launched = compiled.launches[-1]
    assert launched[:9] == (5, 2, 1, FakeDriver.stream, compiled.function, compiled.packed_metadata, None, None, None)
    assert launched[9] is x and launched[10:] == (4096, 1e-6, 4096, True)  # fixed BLOCK, then EVEN's default
    # A new specialization (misaligned pointer) starts over on the standard path.
    _site_call(site, torch.empty(4097, dtype=torch.bfloat16)[1:])
    assert kernel.standard == 3


class CudaLauncher:
    """Stand-in named like Triton's launcher: its C ``launch`` is a plain callable."""

    def __init__(self, scratch=0):
        self.global_scratch_size = scratch
        self.profile_scratch_size = 0
        self.launch_cooperative_grid = False
        self.launch_pdl = False
        self.direct = []
        self.launch = _Recorder(self.direct)
        self.wrapped = []

    def __call__(self, *call):
        self.wrapped.append(call)


class _Recorder:
    def __init__(self, into):
        self.into = into

    def __call__(self, *call):
        self.into.append(call)


@pytest.mark.parametrize("scratch", [0, 256])
def test_site_calls_the_c_launch_directly_only_on_a_verified_triton_without_scratch(fake, fl, monkeypatch, scratch):
    kernel, launcher = fake
    monkeypatch.setattr(fl, "DIRECT_C_LAUNCH", (fl.triton_version()[:2],))
    site = launcher.site("pif", BLOCK=4096)
    x = torch.empty(4096, dtype=torch.bfloat16)
    _site_call(site, x)
    (compiled,) = kernel.kernel_cache.values()
    run = CudaLauncher(scratch)
    compiled._run = run
    _site_call(site, x)
    _site_call(site, x, grid=(7, 1))
    tail = (x, 4096, 1e-6, 4096, True)
    if scratch:
        assert run.direct == [] and run.wrapped == [(7, 1, 1, FakeDriver.stream, compiled.function,
                                                     compiled.packed_metadata, None, None, None, *tail)]
    else:
        # CudaLauncher.__call__ of triton 3.6 with no scratch: launch(grid, stream, function,
        # cooperative, pdl, None, None, metadata, launch_metadata, enter, exit, *args),
        # the tensor as its device pointer
        assert run.wrapped == [] and run.direct == [(7, 1, 1, FakeDriver.stream, compiled.function, False, False,
                                                     None, None, compiled.packed_metadata, None, None, None,
                                                     x.data_ptr(), *tail[1:])]


def test_site_uses_the_launcher_object_on_an_unverified_triton(fake, fl, monkeypatch):
    kernel, launcher = fake
    monkeypatch.setattr(fl, "DIRECT_C_LAUNCH", ())
    site = launcher.site("pif", BLOCK=4096)
    x = torch.empty(4096, dtype=torch.bfloat16)
    _site_call(site, x)
    (compiled,) = kernel.kernel_cache.values()
    run = compiled._run = CudaLauncher()
    for _ in range(2):
        _site_call(site, x)
    assert run.direct == [] and len(run.wrapped) == 1


def test_site_argument_of_the_wrong_kind_turns_the_fast_path_off(fake):
    kernel, launcher = fake
    site = launcher.site("pif", BLOCK=4096)
    x = torch.empty(4096, dtype=torch.bfloat16)
    site(3, 1, x, 4096, 1)  # an int in the float slot
    with pytest.warns(RuntimeWarning, match="kinds 'pif'"):
        site(3, 1, x, 4096, 1)
    site(3, 1, x, 4096, 1e-6)
    assert launcher.off and launcher.fast_calls == 0 and kernel.standard == 3


def test_site_unkeyable_call_and_hooks_take_the_standard_path(fake):
    from triton import knobs

    kernel, launcher = fake
    site = launcher.site("pif", BLOCK=4096)
    for _ in range(3):
        site(3, 1, None, 4096, 1e-6)  # None in a tensor slot: no key, no harm
    assert kernel.standard == 3 and launcher.off is None and not site.ready
    x = torch.empty(4096, dtype=torch.bfloat16)
    for _ in range(3):
        _site_call(site, x)
    assert site.fast_calls == 1
    hook = [].append
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        _site_call(site, x)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    kernel.pre_run_hooks.append(lambda *a, **k: None)
    _site_call(site, x)
    assert site.fast_calls == 1 and kernel.standard == 7


def test_site_of_a_switched_off_launcher_launches_the_standard_way(fl, monkeypatch):
    monkeypatch.setattr(fl, "_is_plain_jit", lambda kernel: True)
    monkeypatch.setattr(fl, "_driver", FakeDriver)
    kernel = FakeJIT()
    site = fl.FastLauncher(kernel, environ={fl.ENV_SWITCH: "off"}).site("pif", BLOCK=4096)
    for _ in range(4):
        _site_call(site, torch.empty(4096, dtype=torch.bfloat16))
    assert kernel.standard == 4 and site.fast_calls == 0 and not site.ready


# ---------------------------------------------------------------------------
# GPU: the bundled kernels, fast vs standard.
# ---------------------------------------------------------------------------


def _bundled(definition):
    import flashinfer_trace_apply as fita
    from flashinfer_trace_apply import loaders

    return loaders.load(fita.load_solutions(fita.bundled_solutions_path())[definition], definition).fn


_LAUNCHER_NAMES = {"norm": "_RMSNORM_ROWS", "act": "_ACT_AND_MUL_ROWS", "rope": "_ROPE_INPLACE"}


def _launcher_of(fn):
    return next(fn.__globals__[name] for name in _LAUNCHER_NAMES.values() if name in fn.__globals__)


class _Forced:
    """Within the block, the launcher takes the standard path."""

    def __init__(self, launcher):
        self.launcher = launcher

    def __enter__(self):
        self.saved = (self.launcher.off, self.launcher._decided, [(site, site.launch) for site in self.launcher._sites])
        self.launcher._decided, self.launcher.off = True, "forced standard (test)"
        for site in self.launcher._sites:
            site.launch = site._launch_slow
        return self.launcher

    def __exit__(self, *exc):
        self.launcher.off, self.launcher._decided, launches = self.saved
        for site, launch in launches:
            site.launch = launch


def _cases(definition, batch, dtype):
    """(kwargs factory) for one call of the bundled solution; fresh inputs each time."""
    gen = torch.Generator(device="cuda").manual_seed(batch)
    n = int(definition.rsplit("_", 1)[1][1:])

    def rand(*shape, dt=dtype):
        return torch.randn(*shape, device="cuda", generator=gen).to(dt)

    if definition.startswith("fused_add") or definition.startswith("gemma_fused"):
        x, r, w = rand(batch, n), rand(batch, n), rand(n)
        return lambda: dict(hidden_states=x.clone(), residual=r.clone(), weight=w, eps=1e-6)
    if "rmsnorm" in definition:
        x, w = rand(batch, n), rand(n)
        return lambda: dict(hidden_states=x, weight=w, eps=1e-6)
    if "and_mul" in definition:
        x = rand(batch, n)
        return lambda: dict(input=x)
    positions = torch.randint(0, 64, (batch,), device="cuda", generator=gen)
    q, k, cache = rand(batch, 4 * n), rand(batch, 2 * n), rand(64, n, dt=torch.float32)
    return lambda: dict(positions=positions, query=q.clone(), key=k.clone(), head_size=n, cos_sin_cache=cache)


def _flat(result):
    return [t for t in (result if isinstance(result, tuple) else (result,))]


GPU_DEFINITIONS = ["rmsnorm_h4096", "fused_add_rmsnorm_h4096", "gemma_rmsnorm_h2304", "gemma_fused_add_rmsnorm_h1152",
                   "silu_and_mul_h28672", "gelu_and_mul_h18432", "gelu_tanh_and_mul_h13824",
                   "rope_cos_sin_cache_inplace_d128", "rope_cos_sin_cache_inplace_d64"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("definition", GPU_DEFINITIONS)
def test_fast_and_standard_launch_agree_bit_for_bit(definition, dtype):
    fn = _bundled(definition)
    launcher = _launcher_of(fn)
    launcher.reset()
    launcher._decide()
    for batch in (1, 3, 127):
        make = _cases(definition, batch, dtype)
        with _Forced(launcher):
            want = [t.clone() for t in _flat(fn(**make()))]
        before = launcher.fast_calls
        for _ in range(3):  # standard, standard + self-check, fast
            got = _flat(fn(**make()))
            for g, w in zip(got, want):
                assert torch.equal(g, w), f"{definition} {dtype} batch={batch}"
        assert launcher.off is None, launcher.off
        assert launcher.fast_calls > before, f"{definition}: the fast path was not taken"
    torch.cuda.synchronize()


@pytest.mark.gpu
def test_fast_launches_come_from_tritons_own_cache_and_honour_alignment():
    import triton

    fn = _bundled("rmsnorm_h4096")
    launcher = _launcher_of(fn)
    w = torch.randn(4096, device="cuda").to(torch.bfloat16)
    buf = torch.randn(2 * 4096 + 8, device="cuda").to(torch.bfloat16)
    aligned, misaligned = buf[:4096].view(1, 4096), buf[1:4097].view(1, 4096)
    assert misaligned.data_ptr() % 16 != 0
    for x in (aligned, misaligned):
        for _ in range(3):
            y = fn(hidden_states=x, weight=w, eps=1e-6)
            xf = x.float()
            ref = (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype)
            assert (y.float() - ref.float()).abs().max() <= 0.02
    device = torch.cuda.current_device()
    cache = launcher.kernel.device_caches[device][0]
    entries = [entry for site in launcher._sites for entry in site.ready.values()]
    functions = {entry[1] for entry in entries}
    assert len(functions) >= 2  # the misaligned pointer got its own compiled kernel
    for entry in entries:
        (compiled,) = [c for c in cache.values() if c.function == entry[1]]
        assert isinstance(compiled, triton.compiler.CompiledKernel)
        assert entry[2] == compiled.packed_metadata and entry[-1] == device
        if entry[3] is not None:  # the C launch function of the kernel's own launcher
            assert triton.__version__.startswith("3.6") and entry[0] is compiled.run.launch


@pytest.mark.gpu
def test_a_registered_launch_hook_sees_every_launch():
    from triton import knobs

    fn = _bundled("rmsnorm_h4096")
    launcher = _launcher_of(fn)
    x, w = torch.randn(1, 4096, device="cuda").to(torch.bfloat16), torch.randn(4096, device="cuda").to(torch.bfloat16)
    for _ in range(3):
        fn(hidden_states=x, weight=w)
    seen = []
    hook = seen.append
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        before = launcher.fast_calls
        for _ in range(3):
            fn(hidden_states=x, weight=w)
        assert len(seen) == 3 and launcher.fast_calls == before
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    fn(hidden_states=x, weight=w)
    assert launcher.fast_calls == before + 1


def _per_call_us(call, n=2000, repeats=7):
    for _ in range(50):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            call()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(times)


@pytest.mark.gpu
def test_eager_timing_table_rmsnorm_h4096_batch1():
    """Prints per-call wall time (launch included) at batch 1, bf16; run with -s."""
    import flashinfer
    import triton

    import flashinfer_trace_apply as fita

    fn = _bundled("rmsnorm_h4096")
    launcher = _launcher_of(fn)
    x = torch.randn(1, 4096, device="cuda").to(torch.bfloat16)
    w = torch.randn(4096, device="cuda").to(torch.bfloat16)
    out = torch.empty_like(x)
    rows = {}
    rows["flashinfer.rmsnorm (original)"] = _per_call_us(lambda: flashinfer.rmsnorm(x, w, eps=1e-6, out=out))
    rows["solution, fast launch"] = _per_call_us(lambda: fn(hidden_states=x, weight=w, eps=1e-6, out=out))
    with _Forced(launcher):
        rows["solution, standard launch"] = _per_call_us(lambda: fn(hidden_states=x, weight=w, eps=1e-6, out=out))
    fita.enable_apply({"rmsnorm_h4096": fita.load_solutions(fita.bundled_solutions_path())["rmsnorm_h4096"]})
    try:
        rows["flashinfer.rmsnorm routed (fast launch)"] = _per_call_us(lambda: flashinfer.rmsnorm(x, w, eps=1e-6, out=out))
        stats = fita.stats()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fita.disable_apply()
    print(f"\neager wall time per call, rmsnorm_h4096 bf16 batch 1, {torch.cuda.get_device_name()}, "
          f"triton {triton.__version__}, torch {torch.__version__}")
    print(f"{'path':44s} {'us/call':>8s}")
    for name, us in rows.items():
        print(f"{name:44s} {us:8.2f}")
    print(f"routed stats: {stats.get('flashinfer.norm.rmsnorm')}")
    assert launcher.off is None and launcher.fast_calls > 0
    assert rows["solution, fast launch"] < rows["solution, standard launch"]
