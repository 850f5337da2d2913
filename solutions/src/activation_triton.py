"""Gated activations in Triton: silu_and_mul, gelu_and_mul (exact, erf) and
gelu_tanh_and_mul, one kernel for all three.

Source of the bundled ``silu_and_mul_h*``, ``gelu_and_mul_h*`` and
``gelu_tanh_and_mul_h*`` solutions (scripts/build_solutions.py embeds this
file in one Solution JSON per definition; the entry point picks the op). The
definition's ``h`` is the gated input width, twice the output width.

``out[..., j] = act(x[..., j]) * x[..., d + j]`` with ``d = x.shape[-1] // 2``.
The grid is rows x column tiles, so a single token still spreads over many
programs; arithmetic is fp32, only the store rounds. Widths that are a
multiple of the tile need no mask (a compile-time flag); all widths share a
few compiled kernels. Input rows are addressed through their stride (a row slice of a wider
buffer is read in place); any leading shape is accepted.

Launches go through a ``_fast_launch.LaunchSite`` per set of constexprs (a
sibling source of every bundled Solution): after a specialization has been
launched and checked the standard way, it is launched directly, skipping
Triton's per-call overhead; under ``torch.compile`` the standard launch,
which Dynamo traces.
"""

import os
import sys

import torch
import triton
import triton.language as tl

# Siblings: relative when imported as a package (this plugin's loader and
# FlashInfer-Bench's builder do so), by plain name from the folder itself.
try:
    from ._rows import row_layout
    from ._fast_launch import FastLauncher
except ImportError:
    from _rows import row_layout
    from _fast_launch import FastLauncher


# torch.compile: Dynamo must import the module of every function it inlines;
# a sibling file is importable only where the loader keeps it in sys.modules
# (this plugin's does, as a module of the solution's package; a plain-name
# import elsewhere may not), so the check lives here, the same lines in each kernel file.
_modules = sys.modules
_is_compiling = torch.compiler.is_compiling


def compiling() -> bool:
    """True while torch.compile (Dynamo) traces the caller. Without
    ``torch._dynamo`` imported nothing is being compiled, so an eager call
    pays one dict lookup; Dynamo folds ``is_compiling()`` to True."""
    return "torch._dynamo" in _modules and _is_compiling()

SILU, GELU, GELU_TANH, GELU_TANH_PTX = 0, 1, 2, 3


# gelu_tanh's form, decided when the solution loads: the tanh instruction on
# NVIDIA GPUs; the portable form under Triton's CPU interpreter (no inline PTX
# there) and on other backends.
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "").strip().lower() not in ("", "0", "false", "off", "no")
_GELU_TANH_CODE = GELU_TANH if _INTERPRETING or torch.version.hip is not None else GELU_TANH_PTX


@triton.jit
def _act_and_mul_rows(
    x_ptr, y_ptr, x_outer, x_inner, inner, d,
    BLOCK: tl.constexpr, EVEN: tl.constexpr, ACT: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    x_row = x_ptr + (row // inner) * x_outer + (row % inner) * x_inner
    y_row = y_ptr + row * d
    if EVEN:
        a = tl.load(x_row + cols).to(tl.float32)
        b = tl.load(x_row + d + cols).to(tl.float32)
    else:
        mask = cols < d
        a = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(x_row + d + cols, mask=mask, other=0.0).to(tl.float32)
    if ACT == 0:
        g = a * tl.sigmoid(a)
    elif ACT == 1:
        g = 0.5 * a * (1.0 + tl.math.erf(a * 0.7071067811865476))
    elif ACT == 2:
        # 0.5 * a * (1 + tanh(z)) == a * sigmoid(2 z), z = sqrt(2/pi) (a + 0.044715 a^3)
        g = a * tl.sigmoid(1.5957691216057308 * (a + 0.044715 * a * a * a))
    else:
        # The same with the GPU's tanh instruction (one special-function op
        # instead of exp + reciprocal: the bound when the rows sit in L2).
        z = 0.7978845608028654 * (a + 0.044715 * a * a * a)
        t = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [z], dtype=tl.float32, is_pure=True, pack=1)
        g = 0.5 * a * (1.0 + t)
    y = (g * b).to(y_ptr.dtype.element_ty)
    if EVEN:
        tl.store(y_row + cols, y)
    else:
        tl.store(y_row + cols, y, mask=mask)


_ACT_AND_MUL_ROWS = FastLauncher(_act_and_mul_rows)
_SITES = {}  # (d, act, wide) -> (LaunchSite, column tiles)


def _fixed(d, act, wide):
    """Constexprs and launch options for output width ``d``: 8 elements a
    thread, wider tiles once there are more rows than fit in L2 when
    repeated (``wide``, above 256 rows at 28672:
    scripts/sweep_kernel_configs.py), narrower ones for fewer tokens.
    Returns (fixed, column tiles)."""
    block = min(2048 if wide else 1024, triton.next_power_of_2(d))
    return dict(BLOCK=block, EVEN=d % block == 0, ACT=act, num_warps=max(1, min(8, block // 256))), triton.cdiv(d, block)


def _site(d, act, wide):
    """(launch, column tiles) for output width ``d``: the LaunchSite's
    launch, or under torch.compile the standard launch (Dynamo traces it)."""
    if compiling():
        fixed, tiles = _fixed(d, act, wide)
        return (lambda grid_x, grid_y, *args: _act_and_mul_rows[(grid_x, grid_y, 1)](*args, **fixed)), tiles
    found = _SITES.get((d, act, wide))
    if found is None:
        fixed, tiles = _fixed(d, act, wide)
        found = _SITES[d, act, wide] = (_ACT_AND_MUL_ROWS.site("ppiiii", **fixed), tiles)
    return found[0].launch, found[1]  # read per call: a site swaps its launch once a key validates


def _act_and_mul(x, act, out=None):
    shape = x.shape
    d = shape[-1] // 2
    if x.dim() == 2:
        rows = shape[0]
        x_outer, x_col = x.stride()
        # The caller's out= buffer is written directly when the kernel can
        # address it (contiguous, right shape and dtype); otherwise a fresh one.
        if out is None or out.shape != (rows, d) or out.dtype is not x.dtype or not out.is_contiguous() \
                or out.get_device() != x.get_device():
            out = x.new_empty((rows, d))  # x's dtype and device, without building a device object
        if x_col == 1:
            if rows and d:
                launch, tiles = _site(d, act, rows > 256)
                launch(rows, tiles, x, out, x_outer, 0, 1, d)
            return out
    return _act_and_mul_any(x, act, out)


def _act_and_mul_any(x, act, out):
    """Any leading shape; rows addressed by (outer, inner) strides or copied."""
    d = x.shape[-1] // 2
    shape = x.shape[:-1] + (d,)
    if out is None or not out.is_contiguous() or out.shape != shape or out.dtype != x.dtype or out.device != x.device:
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
    rows = out.numel() // d if d else 0
    if rows == 0:
        return out
    layout = row_layout(x)
    if layout is None:
        x = x.contiguous()
        layout = row_layout(x)
    launch, tiles = _site(d, act, rows > 256)
    launch(rows, tiles, x, out, layout[0], layout[2], layout[1], d)
    return out


# Every entry point takes FlashInfer's enable_pdl= and ignores it: Programmatic
# Dependent Launch is a launch-overlap hint, and these kernels launch without it.
def silu_and_mul(input, out=None, enable_pdl=None):
    """``silu(input[..., :d]) * input[..., d:]``."""
    return _act_and_mul(input, SILU, out)


def gelu_and_mul(input, out=None, enable_pdl=None):
    """``gelu(input[..., :d]) * input[..., d:]`` (exact, erf-based GELU)."""
    return _act_and_mul(input, GELU, out)


def gelu_tanh_and_mul(input, out=None, enable_pdl=None):
    """``gelu_tanh(input[..., :d]) * input[..., d:]`` (tanh approximation)."""
    return _act_and_mul(input, _GELU_TANH_CODE, out)
