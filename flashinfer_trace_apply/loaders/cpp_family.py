"""Load C++/CUDA-family solutions (cpp, cuda, cutlass) by compiling them.

Builds go through FlashInfer's own JIT (``flashinfer.jit.gen_jit_spec``):
it already knows the CUDA toolchain, target architectures, include paths for
TVM-FFI and FlashInfer headers, and guards concurrent builds with a file
lock, so we reuse it instead of maintaining a second build system. The module
name is derived from the content hash, so a changed solution gets a fresh
build and identical ones share it. Solutions that declare the ``torch``
binding are PyTorch extensions instead and are built with
``torch.utils.cpp_extension``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SolutionLoadError
from ..solution import Solution
from .materialize import cache_root, materialize, private_dir

__all__ = ["COMPILED_SUFFIXES", "extension_name", "load_cpp"]

# Files handed to the compiler; headers and anything else only need to be
# present in the include directory.
COMPILED_SUFFIXES: frozenset[str] = frozenset({".cu", ".cpp", ".cc", ".cxx", ".c"})


def extension_name(solution: Solution) -> str:
    """Name of the compiled module (also its build directory name)."""
    return f"fita_{solution.content_hash()[:16]}"


def _build_tvm_ffi(name: str, sources: list[Path], folder: Path) -> Any:
    from flashinfer.jit import gen_jit_spec

    spec = gen_jit_spec(name, sources, extra_include_paths=[folder])
    return spec.build_and_load()


def _build_torch(name: str, sources: list[Path], folder: Path) -> Any:
    from torch.utils.cpp_extension import load

    # Keep build products with our other cached files, keyed like them.
    build_dir = private_dir(private_dir(cache_root() / "torch_extensions") / name)
    return load(
        name=name,
        sources=[str(s) for s in sources],
        extra_include_paths=[str(folder)],
        build_directory=str(build_dir),
    )


def load_cpp(solution: Solution, definition: str | None = None) -> Callable[..., Any]:
    """Compile (or reuse the build of) a solution; return its entry symbol.

    ``definition`` only names the definition in error messages (defaults to
    ``solution.definition``). Needs a CUDA toolchain and GPU.
    """
    definition = definition if definition is not None else solution.definition

    def fail(cause: Exception) -> SolutionLoadError:
        return SolutionLoadError.from_cause(solution.name, definition, cause)

    if solution.spec.is_python_family:
        raise fail(ValueError(f"language '{solution.spec.language}' is not compiled"))
    folder = materialize(solution)
    sources = sorted(
        folder / s.normalized_path
        for s in solution.sources
        if Path(s.path).suffix.lower() in COMPILED_SUFFIXES
    )
    if not sources:
        raise fail(
            ValueError(
                "no compilable source file (one of "
                f"{sorted(COMPILED_SUFFIXES)}) among {[s.path for s in solution.sources]}"
            )
        )
    name = extension_name(solution)
    if solution.spec.binding == "torch":
        module = _build_torch(name, sources, folder)
    else:
        # None means the FlashInfer-Bench default for compiled code, TVM-FFI.
        module = _build_tvm_ffi(name, sources, folder)

    fn = getattr(module, solution.entry_symbol, None)
    if fn is None or not callable(fn):
        cause = AttributeError(
            f"compiled module '{name}' exports no callable '{solution.entry_symbol}'"
        )
        raise fail(cause) from cause
    return fn
