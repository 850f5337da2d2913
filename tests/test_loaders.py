"""Tests for materializing and loading solutions (real files, real imports)."""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from flashinfer_trace_apply.errors import SolutionFormatError, SolutionLoadError
from flashinfer_trace_apply.loaders import LoadedSolution, clear_cache, load
from flashinfer_trace_apply.loaders.materialize import cache_root, materialize, solution_dir
from flashinfer_trace_apply.loaders.python_family import load_python, module_name
from flashinfer_trace_apply.solution import Solution

RMSNORM_SRC = '''\
import torch


def run(hidden_states, weight, eps=1e-6):
    x = hidden_states.float()
    rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (x * rms * weight.float()).to(hidden_states.dtype)
'''


def make_solution(
    sources: dict[str, str],
    *,
    entry: str = "kernel.py::run",
    name: str = "test_solution",
    definition: str = "test_def",
    language: str = "python",
    **spec: Any,
) -> Solution:
    return Solution.from_dict(
        {
            "name": name,
            "definition": definition,
            "author": "tests",
            "spec": {"language": language, "target_hardware": [], "entry_point": entry, **spec},
            "sources": [{"path": p, "content": c} for p, c in sources.items()],
        }
    )


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FLASHINFER_TRACE_APPLY_CACHE_DIR", str(cache))
    clear_cache()
    yield cache
    clear_cache()


# -- materialize -------------------------------------------------------------


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root() == tmp_path / "cache"
    monkeypatch.delenv("FLASHINFER_TRACE_APPLY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "flashinfer_trace_apply"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "flashinfer_trace_apply"


def test_materialize_writes_content_hashed_dir(cache_dir: Path) -> None:
    sol = make_solution(
        {"kernel.py": "def run():\n    return 1\n", "pkg/sub/data.txt": "a\r\nb\n\u00e9"}
    )
    path = materialize(sol)
    assert path == cache_dir / "solutions" / sol.content_hash()[:24]
    assert path == solution_dir(sol)
    assert (path / "kernel.py").read_text() == "def run():\n    return 1\n"
    # Content is written byte-exactly (no newline translation), as UTF-8.
    assert (path / "pkg" / "sub" / "data.txt").read_bytes() == "a\r\nb\n\u00e9".encode()
    # Nothing else in the cache: no staging directories left behind.
    assert [p.name for p in (cache_dir / "solutions").iterdir()] == [path.name]


def test_materialize_is_idempotent(cache_dir: Path) -> None:
    sol = make_solution({"kernel.py": "def run():\n    return 1\n"})
    first = materialize(sol)
    mtime = (first / "kernel.py").stat().st_mtime_ns
    again = materialize(make_solution({"kernel.py": "def run():\n    return 1\n"}, name="other"))
    assert again == first
    assert (first / "kernel.py").stat().st_mtime_ns == mtime  # not rewritten
    other = materialize(make_solution({"kernel.py": "def run():\n    return 2\n"}))
    assert other != first
    assert len(list((cache_dir / "solutions").iterdir())) == 2


def test_materialize_concurrently_yields_one_complete_dir(cache_dir: Path) -> None:
    sol = make_solution({f"f{i}.py": f"X = {i}\n" * 200 for i in range(20)}, entry="f0.py::X")
    barrier = threading.Barrier(8)
    results: list[Path] = []

    def worker() -> None:
        barrier.wait()
        results.append(materialize(sol))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    path = results[0]
    assert sorted(p.name for p in path.iterdir()) == sorted(f"f{i}.py" for i in range(20))
    assert [p.name for p in (cache_dir / "solutions").iterdir()] == [path.name]


def test_parent_traversal_rejected_by_schema() -> None:
    with pytest.raises(SolutionFormatError, match=r"sources\[1\]\.path"):
        make_solution({"kernel.py": "", "../x.py": ""})


def test_materialize_rechecks_paths(cache_dir: Path) -> None:
    sol = make_solution({"kernel.py": "", "ok.py": ""})
    # Forge a bad path past the schema check (frozen dataclass, so by force)
    # to exercise the defence-in-depth check in materialize itself.
    object.__setattr__(sol.sources[1], "path", "../escaped.py")
    with pytest.raises(ValueError, match="outside"):
        materialize(sol)
    solutions = cache_dir / "solutions"
    assert not (solutions.parent / "escaped.py").exists()
    assert not (solutions / "escaped.py").exists()
    assert list(solutions.iterdir()) == []  # no target, no staging dir


# -- python loader -----------------------------------------------------------


def test_python_loader_runs_torch_rmsnorm() -> None:
    sol = make_solution({"kernel.py": RMSNORM_SRC}, name="rmsnorm_torch", definition="rmsnorm_h64")
    loaded = load(sol, "rmsnorm_h64")
    assert isinstance(loaded, LoadedSolution)
    assert loaded.positional is False
    assert loaded.destination_passing is False
    assert loaded.solution is sol
    assert loaded.label == "rmsnorm_torch"

    torch.manual_seed(0)
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    w = torch.randn(64, dtype=torch.bfloat16)
    out = loaded.fn(hidden_states=x, weight=w)
    xf = x.float()
    expected = (xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype)
    torch.testing.assert_close(out, expected)
    # Registered under its hash-derived name, not as "kernel".
    assert loaded.fn.__module__ == module_name(sol)
    assert sys.modules[module_name(sol)].run is loaded.fn


def test_two_kernel_py_solutions_do_not_collide() -> None:
    a = make_solution({"kernel.py": "def run():\n    return 'a'\n"}, name="a")
    b = make_solution({"kernel.py": "def run():\n    return 'b'\n"}, name="b")
    fa = load(a, "d").fn
    fb = load(b, "d").fn
    assert (fa(), fb()) == ("a", "b")
    assert fa.__module__ != fb.__module__
    assert "kernel" not in sys.modules


def _multi_file(tag: str) -> Solution:
    return make_solution(
        {
            "kernel.py": (
                "import os, sys\n"
                "from helpers import scale\n"
                "from pkgdir.consts import OFFSET\n"
                "ON_PATH = os.path.dirname(os.path.abspath(__file__)) in sys.path\n"
                "def run(x):\n"
                "    return scale(x) + OFFSET\n"
            ),
            "helpers.py": f"TAG = {tag!r}\ndef scale(x):\n    return x * {len(tag)}\n",
            "pkgdir/__init__.py": "",
            "pkgdir/consts.py": f"OFFSET = {len(tag) * 100}\n",
        },
        name=f"multi_{tag}",
    )


def test_multi_file_sibling_imports_without_leaking() -> None:
    sentinel = type(sys)("helpers")  # someone else's module named "helpers"
    sys.modules["helpers"] = sentinel
    path_before = list(sys.path)
    try:
        one = load(_multi_file("x"), "d").fn
        two = load(_multi_file("yy"), "d").fn
        assert one(1) == 1 * 1 + 100
        assert two(1) == 1 * 2 + 200  # its own helpers.py, not the first one's
        assert sys.modules[one.__module__].ON_PATH is True
        assert sys.path == path_before
        # The other "helpers" is back; the solutions' siblings are not cached.
        assert sys.modules["helpers"] is sentinel
        assert "pkgdir" not in sys.modules and "pkgdir.consts" not in sys.modules
    finally:
        sys.modules.pop("helpers", None)


def test_relative_sibling_imports_load_as_flashinfer_bench_builds_them() -> None:
    """FlashInfer-Bench imports a solution's files as one package, so solutions
    written for it import their siblings relatively; they must load here too,
    and their siblings stay reachable under the solution's own package."""
    sol = make_solution(
        {
            "kernel.py": "from .helpers import scale\nfrom .pkgdir.consts import OFFSET\ndef run(x):\n    return scale(x) + OFFSET\n",
            "helpers.py": "def scale(x):\n    return x * 3\n",
            "pkgdir/__init__.py": "",
            "pkgdir/consts.py": "OFFSET = 40\n",
        },
        name="relative_siblings",
    )
    path_before = list(sys.path)
    fn = load(sol, "d").fn
    assert fn(2) == 46
    assert sys.path == path_before
    package = fn.__module__.rpartition(".")[0]
    assert package == module_name(sol)
    assert sys.modules[f"{package}.helpers"].scale(1) == 3  # kept, under a name no one else has
    assert "helpers" not in sys.modules and "pkgdir" not in sys.modules


def test_a_module_with_an_odd_path_imported_meanwhile_does_not_break_loading() -> None:
    """torch.classes (imported by Triton on first use) has a ``__path__`` that
    is not a list; a multi-file solution whose import brings it in loaded
    with a TypeError."""
    odd = (
        "import sys, types\n"
        "m = types.ModuleType('_fita_test_odd_path')\n"
        "m.__path__ = object()\n"
        "sys.modules['_fita_test_odd_path'] = m\n"
        "from helpers import scale\n"
        "def run(x):\n    return scale(x)\n"
    )
    try:
        fn = load(make_solution({"kernel.py": odd, "helpers.py": "def scale(x):\n    return 2 * x\n"}, name="odd"), "d").fn
        assert fn(4) == 8
    finally:
        sys.modules.pop("_fita_test_odd_path", None)


def test_single_file_solution_not_put_on_sys_path() -> None:
    src = "import os, sys\nON_PATH = os.path.dirname(os.path.abspath(__file__)) in sys.path\ndef run():\n    return ON_PATH\n"
    fn = load(make_solution({"kernel.py": src}), "d").fn
    assert fn() is False


@pytest.mark.parametrize(
    ("source", "exc_type"),
    [
        ("def run(:\n", "SyntaxError"),
        ("import does_not_exist_anywhere_123\n", "ModuleNotFoundError"),
        ("x = 1 / 0\ndef run():\n    pass\n", "ZeroDivisionError"),
    ],
)
def test_broken_source_raises_load_error(source: str, exc_type: str) -> None:
    sol = make_solution({"kernel.py": source}, name="broken_sol")
    with pytest.raises(SolutionLoadError) as info:
        load(sol, "rmsnorm_h4096")
    msg = str(info.value)
    assert msg.startswith(
        f"failed to load solution 'broken_sol' for definition 'rmsnorm_h4096': {exc_type}: "
    )
    assert type(info.value.__cause__).__name__ == exc_type
    assert info.value.solution == "broken_sol"
    assert info.value.definition == "rmsnorm_h4096"
    assert module_name(sol) not in sys.modules


def test_broken_multi_file_source_cleans_up() -> None:
    sol = make_solution(
        {"kernel.py": "import helpers2\nraise RuntimeError('boom')\n", "helpers2.py": "X = 1\n"},
        name="broken_multi",
    )
    path_before = list(sys.path)
    with pytest.raises(SolutionLoadError, match="RuntimeError: boom"):
        load(sol, "d")
    assert module_name(sol) not in sys.modules
    assert "helpers2" not in sys.modules
    assert sys.path == path_before


def test_missing_symbol_raises_load_error() -> None:
    sol = make_solution({"kernel.py": "def other():\n    pass\n"}, name="nosym")
    with pytest.raises(SolutionLoadError) as info:
        load(sol, "d1")
    msg = str(info.value)
    assert msg.startswith("failed to load solution 'nosym' for definition 'd1': AttributeError: ")
    assert "'run'" in msg
    assert module_name(sol) not in sys.modules
    # load_python on its own names the solution's own definition by default.
    with pytest.raises(SolutionLoadError, match="'nosym' for definition 'test_def'"):
        load_python(sol)


def test_failures_are_not_cached(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    src = (
        "import os\n"
        f"if not os.path.exists({str(marker)!r}):\n"
        "    raise RuntimeError('not ready')\n"
        "def run():\n"
        "    return 'ok'\n"
    )
    sol = make_solution({"kernel.py": src})
    with pytest.raises(SolutionLoadError, match="not ready"):
        load(sol, "d")
    marker.write_text("")
    assert load(sol, "d").fn() == "ok"


def test_invalid_solution_value_raises_load_error() -> None:
    bad = {"name": "bad_sol", "definition": "d", "author": "a", "spec": {}, "sources": []}
    with pytest.raises(SolutionLoadError) as info:
        load(bad, "my_def")
    assert str(info.value).startswith(
        "failed to load solution 'bad_sol' for definition 'my_def': SolutionFormatError: "
    )
    with pytest.raises(SolutionLoadError, match="for definition 'my_def': TypeError"):
        load(42, "my_def")


def test_load_accepts_dict_and_flashinfer_solution() -> None:
    ft = pytest.importorskip("flashinfer.trace")
    src = "def run(x):\n    return x + 1\n"
    theirs = ft.Solution(
        name="plus_one",
        definition="d",
        author="a",
        spec=ft.BuildSpec(
            language="python",
            target_hardware=["sm90"],
            entry_point="kernel.py::run",
            destination_passing_style=True,
        ),
        sources=[ft.SourceFile(path="kernel.py", content=src)],
    )
    from_theirs = load(theirs, "d")
    from_dict = load(make_solution({"kernel.py": src}).to_dict(), "d")
    assert from_theirs.fn(x=1) == 2
    # Same content hash: loaded once, same function object.
    assert from_dict.fn is from_theirs.fn
    # ...but each keeps its own calling-convention flags.
    assert from_theirs.destination_passing is True
    assert from_dict.destination_passing is False
    assert from_theirs.label == "plus_one"


def test_load_plain_callable() -> None:
    def my_kernel(x):
        return x * 2

    loaded = load(my_kernel, "d")
    assert loaded.fn is my_kernel
    assert loaded.positional is False
    assert loaded.destination_passing is False
    assert loaded.solution is None
    assert loaded.label.endswith("my_kernel")
    assert loaded.label == my_kernel.__qualname__
    assert load(my_kernel, "d") == loaded


def test_concurrent_loads_execute_module_once(tmp_path: Path) -> None:
    counter = tmp_path / "executions.log"
    src = (
        "import os, time\n"
        f"with open({str(counter)!r}, 'a') as f:\n"
        "    f.write('x\\n')\n"
        "time.sleep(0.2)  # widen the window in which other threads arrive\n"
        "def run():\n"
        "    return 42\n"
    )
    sol = make_solution({"kernel.py": src}, name="threaded")
    n = 16
    barrier = threading.Barrier(n)
    results: list[LoadedSolution] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait()
            loaded = load(sol, "d")
            with lock:
                results.append(loaded)
        except BaseException as exc:  # pragma: no cover - reported below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(results) == n
    assert counter.read_text() == "x\n"  # the entry module ran exactly once
    assert len({id(r.fn) for r in results}) == 1
    assert results[0].fn() == 42


# -- C++/CUDA family -----------------------------------------------------------

TVM_FFI_ADD_ONE = r"""
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/function.h>

#include "add_one_kernel.cuh"

void run(tvm::ffi::TensorView x, tvm::ffi::TensorView y) {
  int64_t n = x.size(0);
  add_one_kernel<<<(n + 255) / 256, 256>>>(
      static_cast<const float*>(x.data_ptr()), static_cast<float*>(y.data_ptr()), n);
}

TVM_FFI_DLL_EXPORT_TYPED_FUNC(run, run);
"""

ADD_ONE_HEADER = r"""
#pragma once
#include <cstdint>
__global__ void add_one_kernel(const float* x, float* y, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] + 1.0f;
}
"""


def _cuda_solution() -> Solution:
    return make_solution(
        {"kernel.cu": TVM_FFI_ADD_ONE, "add_one_kernel.cuh": ADD_ONE_HEADER},
        entry="kernel.cu::run",
        name="add_one_cuda",
        language="cuda",
        binding="tvm-ffi",
        destination_passing_style=True,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only failure path")
def test_cuda_solution_without_gpu_fails_cleanly() -> None:
    with pytest.raises(SolutionLoadError, match="'add_one_cuda' for definition 'd'"):
        load(_cuda_solution(), "d")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_solution_compiles_and_runs() -> None:
    loaded = load(_cuda_solution(), "d")
    assert loaded.positional is True
    assert loaded.destination_passing is True
    x = torch.arange(1000, dtype=torch.float32, device="cuda")
    y = torch.empty_like(x)
    loaded.fn(x, y)
    torch.cuda.synchronize()
    torch.testing.assert_close(y, x + 1)
    # Cached: a second load returns the same function without rebuilding.
    assert load(_cuda_solution(), "d").fn is loaded.fn


TORCH_EXT_ADD_ONE = r"""
#include <torch/extension.h>

#include "add_one_kernel.cuh"

torch::Tensor run(torch::Tensor x) {
  auto y = torch::empty_like(x);
  int64_t n = x.numel();
  add_one_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), n);
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("run", &run); }
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_binding_solution_compiles_and_runs(cache_dir: Path) -> None:
    sol = make_solution(
        {"kernel.cu": TORCH_EXT_ADD_ONE, "add_one_kernel.cuh": ADD_ONE_HEADER},
        entry="kernel.cu::run",
        name="add_one_torch",
        language="cuda",
        binding="torch",
    )
    loaded = load(sol, "d")
    assert loaded.positional is True
    assert loaded.destination_passing is False
    x = torch.arange(1000, dtype=torch.float32, device="cuda")
    torch.testing.assert_close(loaded.fn(x), x + 1)
    # Build products stay inside our cache directory.
    assert (cache_dir / "torch_extensions").is_dir()


# -- the cache is not trusted blindly -------------------------------------------


def _runs(value: int) -> Any:
    return make_solution({"kernel.py": f"def run():\n    return {value}\n"}, entry="kernel.py::run", name=f"returns_{value}")


def test_cache_folders_are_created_private(cache_dir: Path) -> None:
    path = materialize(_runs(1))
    for folder in (cache_dir, cache_dir / "solutions", path):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_an_edited_cached_source_is_replaced_not_run(cache_dir: Path) -> None:
    sol = _runs(1)
    path = materialize(sol)
    (path / "kernel.py").write_text("def run():\n    return 'tampered'\n")
    assert materialize(sol) == path
    assert (path / "kernel.py").read_text() == "def run():\n    return 1\n"
    clear_cache()
    assert load(sol, "d").fn() == 1


def test_a_deleted_cached_source_is_rebuilt(cache_dir: Path) -> None:
    sol = _runs(2)
    path = materialize(sol)
    (path / "kernel.py").unlink()
    clear_cache()
    assert load(sol, "d").fn() == 2


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_cache_others_can_write_is_refused_with_its_name(cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    os.chmod(cache_dir, 0o777)
    with pytest.raises(SolutionLoadError) as info:
        load(_runs(3), "d")
    assert str(cache_dir) in str(info.value) and "writable by other users" in str(info.value)
    os.chmod(cache_dir, 0o700)
    assert load(_runs(3), "d").fn() == 3
