"""Kernel time of the bundled norm and activation kernels under alternative
launch configurations, next to FlashInfer's own kernel, on one GPU in one
process: the evidence behind the tile and warp choices in
``solutions/src/norm_triton.py`` and ``solutions/src/activation_triton.py``.

    python scripts/sweep_kernel_configs.py [--only act] [--act-cases silu_and_mul:12288 ...]
        [--norm-cases rmsnorm:512:576 ...] [--json OUT.json]

Timing as in ``bench_solutions.py`` (calls captured in a CUDA graph,
replayed, CUDA events). Each row: FlashInfer µs, then per configuration
FlashInfer / configuration (above 1: faster than FlashInfer).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

import flashinfer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "solutions" / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_solutions import kernel_us  # noqa: E402


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"_sweep_{name}", ROOT / "solutions" / "src" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def norm_rows(norm, args) -> List[Dict[str, Any]]:
    rows = []
    for spec in args.norm_cases:
        op, n, *stride = spec.split(":")
        n = int(n)
        stride = int(stride[0]) if stride else n  # row stride of the input (a view of a wider buffer)
        for dtype in (torch.bfloat16, torch.float16):
            for batch in args.norm_batches:
                x = torch.randn(batch, stride, device="cuda", dtype=dtype)[:, :n]
                r = torch.randn(batch, n, device="cuda", dtype=dtype)
                w = torch.randn(n, device="cuda", dtype=dtype)
                y = torch.empty_like(x)
                add = op.startswith("fused")
                size = x.element_size()
                moved = ((4 if add else 2) * batch * n + n) * size
                if add:
                    ref = lambda: flashinfer.fused_add_rmsnorm(x, r, w, eps=1e-6)  # noqa: E731
                else:
                    fi = getattr(flashinfer, op)
                    ref = lambda: fi(x, w, eps=1e-6, out=y)  # noqa: E731
                row = {"op": op, "n": n, "dtype": str(dtype).split(".")[-1], "batch": batch,
                       "flashinfer_us": kernel_us(ref, moved, args.budget_ms)}
                block = 1 << (n - 1).bit_length()
                for warps in (1, 2, 4, 8, 16):
                    def call(warps=warps):
                        norm._rmsnorm_rows[(batch,)](
                            x, r if add else y, w, stride, 0, n, 0, 1, n, 1e-6,
                            BLOCK=block, EVEN=block == n, W_OFFSET=1.0 if "gemma" in op else 0.0, ADD=add,
                            num_warps=warps,
                        )
                    row[f"w{warps}"] = row["flashinfer_us"] / kernel_us(call, moved, args.budget_ms)
                rows.append(row)
                print(_line(row), flush=True)
    return rows


# Tile and warp choices tried for the activations: 4 to 16 elements a thread.
ACT_CONFIGS = [(block, warps) for block in (256, 512, 1024, 2048, 4096) for warps in (1, 2, 4, 8, 16)
               if 4 <= block // (32 * warps) <= 16]


def act_rows(act, args) -> List[Dict[str, Any]]:
    rows = []
    codes = {"silu_and_mul": 0, "gelu_and_mul": 1, "gelu_tanh_and_mul": act.GELU_TANH_PTX}
    for spec in args.act_cases:
        op, h = spec.rsplit(":", 1)
        h = int(h)
        code = codes[op]
        for dtype in [getattr(torch, name) for name in args.act_dtypes]:
            for batch in args.act_batches:
                d = h // 2
                x = torch.randn(batch, h, device="cuda", dtype=dtype)
                y = torch.empty(batch, d, device="cuda", dtype=dtype)
                moved = (batch * h + batch * d) * x.element_size()
                fi = getattr(flashinfer, op)
                row = {"op": op, "n": h, "dtype": str(dtype).split(".")[-1], "batch": batch,
                       "flashinfer_us": kernel_us(lambda: fi(x, out=y), moved, args.budget_ms)}
                for block, warps in ACT_CONFIGS:
                    if block > 2 * triton_next_power_of_2(d):
                        continue
                    def call(block=block, warps=warps):
                        act._act_and_mul_rows[(batch, -(-d // block))](
                            x, y, h, 0, 1, d, BLOCK=block, EVEN=d % block == 0, ACT=code, num_warps=warps,
                        )
                    row[f"b{block}w{warps}"] = row["flashinfer_us"] / kernel_us(call, moved, args.budget_ms)
                rows.append(row)
                print(_line(row), flush=True)
    return rows


def triton_next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _line(row: Dict[str, Any]) -> str:
    configs = " ".join(f"{k}={v:.2f}" for k, v in row.items() if k not in ("op", "n", "dtype", "batch", "flashinfer_us"))
    return f"{row['op']} n={row['n']} {row['dtype']} batch={row['batch']}: flashinfer {row['flashinfer_us']:.2f} us | {configs}"


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norm-batches", type=int, nargs="+", default=[1, 16, 256, 1024, 4096, 16384])
    parser.add_argument("--norm-cases", nargs="+",
                        default=["rmsnorm:4096", "rmsnorm:5120", "rmsnorm:8192", "gemma_rmsnorm:2304",
                                 "gemma_rmsnorm:3584", "fused_add_rmsnorm:4096"],
                        help="op:width[:row stride] for the norm sweep (rmsnorm:512:576 is DeepSeek's kv_a view)")
    parser.add_argument("--act-batches", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--act-cases", nargs="+", default=["silu_and_mul:28672", "gelu_tanh_and_mul:28672"],
                        help="op:gated width pairs for the activation sweep")
    parser.add_argument("--act-dtypes", nargs="+", default=["bfloat16", "float16"])
    parser.add_argument("--only", choices=["norm", "act"], help="sweep one family only")
    parser.add_argument("--budget-ms", type=float, default=20.0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = []
    if args.only != "act":
        rows += norm_rows(_module("norm_triton"), args)
    if args.only != "norm":
        rows += act_rows(_module("activation_triton"), args)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
