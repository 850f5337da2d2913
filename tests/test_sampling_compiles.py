"""The bundled sampling kernels compile for a Hopper GPU, on a machine
without one (TRITON_INTERPRET runs the kernels' Python, not Triton's
compiler, so a type error in the compiled path would pass every CPU test).

Triton specializes an integer argument equal to 1 as a constant, which
turns a runtime ``if`` into a compile-time one and changes the rules on
variables assigned in its branches: round 1 of the pivot search (and a
one-row, one-chunk call) is compiled with ``r``, ``rows`` and ``nchunks``
as constants, so those are compiled here too (this failed on the H200 with
Triton 3.6 before the fix)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton")
SOURCES = Path(__file__).resolve().parent.parent / "solutions" / "src"

# Runs in a child: TRITON_INTERPRET (set for this suite) swaps every kernel
# for the interpreter's stand-in, which has no compiler path.
COMPILE_ALL = textwrap.dedent("""
    import itertools, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sys.path.insert(0, sys.argv[1])
    import sampling_triton as st

    def signature(kernel, top_k, fixed):
        types = {}
        for name in kernel.arg_names:
            if name in fixed:
                types[name] = "constexpr"
            elif name in ("state_ptr", "maxb_ptr") or (name == "arr_ptr" and top_k):
                types[name] = "*i32"
            elif name == "x_ptr":
                types[name] = "*bf16" if top_k else "*fp32"
            elif name.endswith("_ptr"):
                types[name] = "*fp32"
            else:
                types[name] = "fp32" if name == "value" else "i32"
        return types

    failed = []
    for top_k, has_arr in itertools.product([True, False], [True, False]):
        for kernel in (st._renorm_round, st._renorm_apply):
            fixed = dict(HAS_ARR=has_arr, TOP_K=top_k, CPAD=4, P=st._PIVOTS, BLOCK=st._BLOCK, r=1, rows=1, nchunks=1)
            source = ASTSource(fn=kernel, signature=signature(kernel, top_k, fixed),
                               constexprs={(kernel.arg_names.index(k),): v for k, v in fixed.items()})
            try:
                triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
            except Exception as error:  # report every combination, not just the first
                failed.append(f"{kernel.__name__} top_k={top_k} per_row={has_arr}: {repr(error.__cause__ or error)[:300]}")
    print("\\n".join(failed) or "all compiled")
    sys.exit(1 if failed else 0)
""")


def test_kernels_compile_for_sm90_with_ones_specialized():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE_ALL, str(SOURCES)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
