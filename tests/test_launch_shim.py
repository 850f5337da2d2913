"""The compiled launch site (solutions/src/_launch_shim.c, built by
_launch_shim.py) that launches the bundled Triton kernels' validated keys.

CPU: it builds with the machine's C compiler into the package cache, once,
and a failed build leaves nothing behind; the parameter block follows
Triton's own specializer; a call matches only the exact key it was given
(dtype, alignment, device of each tensor, each int's value, float slots,
current device, Triton's option knobs, no hooks), and anything else goes to
the fallback with the same arguments. ``describe()`` shows what a call
would launch without launching, so none of this needs a GPU; the GPU tests
in test_fast_launch.py launch through it and compare results bit for bit.
"""

from __future__ import annotations

import importlib.util
import itertools
import struct
import sys
from pathlib import Path

import pytest
import torch

SOURCE = Path(__file__).resolve().parent.parent / "solutions" / "src" / "_launch_shim.py"
_counter = itertools.count()


def fresh_copy():
    """A fresh copy of _launch_shim.py, as each solution imports its own."""
    spec = importlib.util.spec_from_file_location(f"_fita_test_launch_shim_{next(_counter)}", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


needs_compiler = pytest.mark.skipif(fresh_copy()._compiler() is None, reason="no C compiler on this machine")


@pytest.fixture(scope="module")
def shim_module():
    copy = fresh_copy()
    module = copy.load()
    if module is None:
        pytest.skip(f"the compiled site cannot be built here: {copy.status()}")
    return module


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------


@needs_compiler
def test_it_is_built_once_into_the_cache_and_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHINFER_TRACE_APPLY_CACHE_DIR", str(tmp_path))
    first = fresh_copy()
    target = first._target(first.SOURCE.read_bytes())
    for name in [key for key in sys.modules if key.startswith(first.MODULE)]:
        monkeypatch.delitem(sys.modules, name)  # a process that has not loaded it yet
    module = first.load()
    assert module is not None, first.status()
    assert first.status() is None and target.is_file() and target.is_relative_to(tmp_path)
    built = target.stat().st_mtime_ns
    second = fresh_copy()  # another solution's copy of the file
    assert second.load() is module and target.stat().st_mtime_ns == built
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no build leftovers


@pytest.mark.parametrize("env", [{"FLASHINFER_TRACE_APPLY_CACHE_DIR": "~/x"}, {"XDG_CACHE_HOME": "/tmp/xdg"}, {}])
def test_it_uses_the_packages_cache_folder(monkeypatch, env):
    from flashinfer_trace_apply.loaders.materialize import cache_root

    for name in ("FLASHINFER_TRACE_APPLY_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert fresh_copy()._cache_root() == cache_root()


def test_a_failed_build_leaves_nothing_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHINFER_TRACE_APPLY_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    copy = fresh_copy()
    assert copy.load() is None
    assert "false" in copy.status() and "failed" in copy.status()
    assert copy.load() is None  # decided once, not retried per call
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


# ---------------------------------------------------------------------------
# The parameter block
# ---------------------------------------------------------------------------


def _triton_types(values):
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    return [native_specialize_impl(BaseBackend, v, False, True, True)[0] for v in values]


def test_parameters_follow_tritons_specialization():
    shim = fresh_copy()
    x = torch.empty(8, dtype=torch.bfloat16)
    args = [x, x, 4096, 1, -5, 2**31, 1e-6]  # runtime slots
    kinds = "ppiiiif"
    tail = [64, True]  # constexprs passed by keyword
    names = ["a", "b", "n", "one", "neg", "wide", "eps", "BLOCK", "EVEN"]
    signature = dict(zip(names, _triton_types(args) + ["constexpr", "constexpr"]))
    assert signature["one"] == "constexpr" and signature["wide"] == "i64"
    params = shim.params_of(signature, names, args + tail, kinds)
    P, F32, C = shim.POINTER, shim.F32, shim.CONST
    assert params == (
        (P, 0), (P, 1),
        (C, 4096),                       # i32, keyed by value
        (C, (-5) & 0xFFFFFFFF),          # a negative i32, two's complement in 4 bytes
        (C, 2**31),                      # i64
        (F32, 0),
        (C, 0), (C, 0),                  # Triton's global and profile scratch pointers
    )


def test_parameters_of_a_type_it_does_not_pack_refuse_the_kernel():
    shim = fresh_copy()
    x = torch.empty(8)
    assert shim.params_of({"a": "*fp32", "h": "fp16"}, ["a", "h"], [x, 0.5], "pf") is None
    assert shim.params_of({"a": "*fp32", "t": ("*fp32", "*fp32")}, ["a", "t"], [x, (x, x)], "pp") is None
    assert shim.params_of({"a": "*fp32"}, ["a"], [3], "i") is None  # a pointer type in an int slot


# ---------------------------------------------------------------------------
# Matching a call
# ---------------------------------------------------------------------------


class Kernel:
    def __init__(self):
        self.pre_run_hooks = []


class Fallback:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return "fallback"


def _site(module, device=0):
    from triton import knobs

    fallback, kernel = Fallback(), Kernel()
    site = module.Site(
        kinds="ppiif", fallback=fallback, get_device=lambda: device, get_stream=lambda d: 0,
        kernel=kernel, runtime=knobs.runtime, chain_type=knobs.HookChain,
        knobs=((knobs.runtime, "debug"), (knobs.compilation, "instrumentation_mode")),
    )
    return site, fallback, kernel


def _options():
    from triton import knobs

    return (knobs.runtime.debug, knobs.compilation.instrumentation_mode)


PARAMS = ((0, 0), (0, 1), (3, 4096), (3, 7), (1, 0), (3, 0), (3, 0))


def _add(site, x, y, n=4096, m=7, device=0, function=0xABC, block=256, shared=0):
    keys = tuple((t.dtype, t.data_ptr() & 15, t.get_device()) for t in (x, y))
    return site.add(device, _options(), keys, (n, m), function, block, shared, PARAMS)


def _cells(described):
    return struct.unpack(f"<{len(described[5]) // 8}Q", described[5])


def test_a_call_with_the_validated_key_is_packed_as_triton_would(shim_module):
    site, fallback, _ = _site(shim_module)
    x, y = torch.randn(2, 4096).to(torch.bfloat16), torch.empty(2, 4096, dtype=torch.bfloat16)
    assert _add(site, x, y, block=512, shared=128) and site.entries == 1
    described = site.describe(2, 1, x, y, 4096, 7, 1e-6)
    assert described[:5] == (0, 2, 1, 512, 128)
    cells = _cells(described)
    assert cells[:4] == (x.data_ptr(), y.data_ptr(), 4096, 7)
    assert struct.pack("<I", cells[4]) == struct.pack("<f", 1e-6)  # eps as fp32 bits
    assert cells[5:] == (0, 0)
    # Other tensors with the same key: same entry, their own pointers.
    x2, y2 = x.clone(), torch.empty_like(y)
    assert _cells(site.describe(5, 1, x2, y2, 4096, 7, 0.5))[:2] == (x2.data_ptr(), y2.data_ptr())
    assert fallback.calls == []
    if not torch.cuda.is_available():
        # No CUDA context to launch in (nor one the key was validated in): the fallback decides.
        assert site(2, 1, x, y, 4096, 7, 1e-6) == "fallback" and site.fast_calls == 0


class Impostor:
    """Has a tensor's dtype and device, but data_ptr() gives a float."""

    def __init__(self, tensor):
        self.dtype, self._tensor = tensor.dtype, tensor

    def data_ptr(self):
        return float(self._tensor.data_ptr())

    def get_device(self):
        return self._tensor.get_device()


def test_anything_but_the_exact_key_goes_to_the_fallback(shim_module, monkeypatch):
    from triton import knobs

    site, fallback, kernel = _site(shim_module)
    buf = torch.randn(2 * 4096 + 8).to(torch.bfloat16)
    x, y = buf[:8192].view(2, 4096), torch.empty(2, 4096, dtype=torch.bfloat16)
    assert _add(site, x, y)
    assert site.describe(2, 1, x, y, 4096, 7, 1e-6) is not None
    misaligned = buf[1:8193].view(2, 4096)
    assert misaligned.data_ptr() % 16
    for call in [
        (2, 1, x.half(), y, 4096, 7, 1e-6),          # dtype
        (2, 1, misaligned, y, 4096, 7, 1e-6),        # 16-byte alignment
        (2, 1, x, y, 4097, 7, 1e-6),                 # an int's value
        (2, 1, x, y, 4096, 7, 1),                    # an int in the float slot
        (2, 1, x, y, 4096.0, 7, 1e-6),               # a float in an int slot
        (2, 1, x, 3, 4096, 7, 1e-6),                 # not a tensor in a tensor slot
        (2, 1, Impostor(x), y, 4096, 7, 1e-6),       # a tensor look-alike whose data_ptr() is no int
        (2, 1, x, y, 4096, 7),                       # too few arguments
        (0, 1, x, y, 4096, 7, 1e-6),                 # an empty grid: Triton's launcher decides
    ]:
        assert site.describe(*call) is None, call
        assert site(*call) == "fallback" and fallback.calls[-1] == (call, {})
    assert site(2, 1, x, y, 4096, 7, eps=1e-6) == "fallback"  # keywords are Triton's business
    other_device, _, _ = _site(shim_module, device=1)
    _add(other_device, x, y)
    assert other_device.describe(2, 1, x, y, 4096, 7, 1e-6) is None  # current device is not the key's
    kernel.pre_run_hooks.append(lambda *a, **k: None)
    assert site.describe(2, 1, x, y, 4096, 7, 1e-6) is None
    kernel.pre_run_hooks.clear()
    hook = [].append
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        assert site.describe(2, 1, x, y, 4096, 7, 1e-6) is None  # a profiler is listening
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    monkeypatch.setattr(knobs.runtime, "debug", not knobs.runtime.debug)
    assert site.describe(2, 1, x, y, 4096, 7, 1e-6) is None  # Triton would compile another kernel
    monkeypatch.undo()
    assert site.describe(2, 1, x, y, 4096, 7, 1e-6) is not None


def test_keys_are_bounded_and_cleared(shim_module):
    site, _, _ = _site(shim_module)
    x = torch.empty(4096, dtype=torch.bfloat16)
    assert all(_add(site, x, x, n=n) for n in range(64))
    assert not _add(site, x, x, n=64) and site.entries == 64
    site.clear()
    assert site.entries == 0 and site.describe(1, 1, x, x, 0, 7, 1e-6) is None
    with pytest.raises(ValueError, match="sizes"):
        site.add(0, _options(), ((x.dtype, 0, -1),), (1, 2), 1, 32, 0, PARAMS)  # one pointer key for two slots
    with pytest.raises(ValueError, match="slot"):
        site.add(0, _options(), ((x.dtype, 0, -1),) * 2, (1, 2), 1, 32, 0, ((0, 5),))  # no pointer slot 5
