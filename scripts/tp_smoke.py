"""Tensor-parallel smoke test: the plugin in every rank, as SGLang and vLLM run it.

Each rank is a process started with ``spawn`` (as both engines start theirs)
with ``FLASHINFER_TRACE_APPLY=1`` over a curated folder written here: a
Python solution for ``rmsnorm_h<H>`` and one for ``allreduce_fusion_h<H>``
that does a real collective through ``torch.distributed`` (plain all-reduce,
or all-reduce + residual add + RMSNorm into the caller's ``residual_out`` and
``norm_out``). Each rank imports FlashInfer (the hook enables the plugin),
imports ``flashinfer.comm`` afterwards (as engines do), runs a few layers of
norm + all-reduce eagerly (and, on CUDA, captured as a CUDA graph and
replayed), and compares with the same layers computed with plain torch and
torch.distributed. Every rank writes its stats to a stats directory, read
back with ``flashinfer-trace-apply stats``'s aggregator; the rank comes from
``torch.distributed``.

On CPU (gloo, CI): ``python scripts/tp_smoke.py --backend gloo``. On two GPUs:
``python scripts/tp_smoke.py --backend nccl`` (NVLink multicast left off).
Prints one JSON report; exit status 1 if any rank disagrees or missed a hit.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

HIDDEN = 256
LAYERS = 3
TOKENS = 5

RMSNORM_SOURCE = '''\
import torch


def run(hidden_states, weight, eps=1e-6):
    x = hidden_states.float()
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(hidden_states.dtype)
'''

# FlashInfer's allreduce_fusion writes the fused pattern's results into the
# caller's residual_out / norm_out: the solution names them, so it receives
# them (a solution that did not would leave such calls to FlashInfer's kernel).
ALLREDUCE_SOURCE = '''\
import torch
import torch.distributed as dist

K_ALLREDUCE, K_AR_RESIDUAL_RMSNORM = 0, 1


def run(input, workspace, pattern, residual_in=None, rms_gamma=None, rms_eps=1e-6, weight_bias=0.0,
        output=None, residual_out=None, norm_out=None):
    reduced = input.clone()
    dist.all_reduce(reduced)
    if int(pattern) == K_AR_RESIDUAL_RMSNORM:
        residual = reduced + residual_in
        x = residual.float()
        normed = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + rms_eps) * (rms_gamma.float() + weight_bias))
        residual_out.copy_(residual)
        norm_out.copy_(normed.to(norm_out.dtype))
    return reduced
'''


def _solution(definition: str, source: str) -> Dict[str, Any]:
    return {
        "name": f"tp_smoke_{definition}", "definition": definition, "author": "tp_smoke",
        "spec": {"language": "python", "target_hardware": [], "entry_point": "kernel.py::run",
                 "dependencies": [], "destination_passing_style": False},
        "sources": [{"path": "kernel.py", "content": source}],
    }


def write_folder(root: Path) -> Path:
    for definition, source in ((f"rmsnorm_h{HIDDEN}", RMSNORM_SOURCE), (f"allreduce_fusion_h{HIDDEN}", ALLREDUCE_SOURCE)):
        path = root / "solutions" / f"{definition}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_solution(definition, source), indent=1))
    return root


def _reference_layers(torch: Any, dist: Any, x: Any, weights: List[Any], eps: float) -> Any:
    residual = torch.zeros_like(x)
    for w in weights:
        xf = x.float()
        h = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)
        reduced = h.clone()
        dist.all_reduce(reduced)
        residual = reduced + residual
        rf = residual.float()
        x = (rf * torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)
    return x, residual


def _plugin_layers(torch: Any, flashinfer: Any, comm: Any, x: Any, weights: List[Any], eps: float) -> Any:
    residual = torch.zeros_like(x)
    for w in weights:
        h = flashinfer.rmsnorm(x, w, eps=eps)
        residual_out, norm_out = torch.empty_like(x), torch.empty_like(x)
        comm.allreduce_fusion(
            input=h, workspace=None, pattern=comm.AllReduceFusionPattern.kARResidualRMSNorm,
            residual_out=residual_out, norm_out=norm_out, residual_in=residual, rms_gamma=w, rms_eps=eps,
        )
        x, residual = norm_out, residual_out
    return x, residual


def rank_main(rank: int, world: int, backend: str, port: int, result_dir: str) -> None:
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    import flashinfer  # the hook enables the plugin here
    import flashinfer.comm as comm  # imported late, as engines do: wrapped as it arrives

    import flashinfer_trace_apply as fita

    torch.manual_seed(1234 + rank)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    weights = [torch.rand(HIDDEN, dtype=dtype, device=device) + 0.5 for _ in range(LAYERS)]
    x = torch.randn(TOKENS, HIDDEN, dtype=dtype, device=device)
    eps = 1e-5
    report: Dict[str, Any] = {"rank": rank, "enabled": fita.is_enabled()}
    got, got_res = _plugin_layers(torch, flashinfer, comm, x, weights, eps)
    want, want_res = _reference_layers(torch, dist, x, weights, eps)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    report["eager_equal"] = bool(torch.allclose(got.float(), want.float(), atol=tol, rtol=tol)
                                 and torch.allclose(got_res.float(), want_res.float(), atol=tol, rtol=tol))
    if device.type == "cuda":
        static_x = x.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, _ = _plugin_layers(torch, flashinfer, comm, static_x, weights, eps)
        static_x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        want_graph, _ = _reference_layers(torch, dist, static_x, weights, eps)
        report["graph_equal"] = bool(torch.allclose(out.float(), want_graph.float(), atol=tol, rtol=tol))
    report["stats"] = fita.stats()
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    # The process group stays up until exit, as in a serving engine: the
    # stats file written at exit then carries the rank.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    parser.add_argument("--world", type=int, default=2)
    args = parser.parse_args(argv)

    import torch.multiprocessing as mp

    from flashinfer_trace_apply.stats_report import read_dir, totals

    work = Path(tempfile.mkdtemp(prefix="tp-smoke-"))
    folder = write_folder(work / "curated")
    stats_dir, result_dir = work / "stats", work / "results"
    result_dir.mkdir()
    os.environ.update({
        "FLASHINFER_TRACE_APPLY": "1",
        "FLASHINFER_TRACE_APPLY_PATH": str(folder),
        "FLASHINFER_TRACE_APPLY_STATS_DIR": str(stats_dir),
        "FLASHINFER_TRACE_APPLY_CACHE_DIR": str(work / "cache"),
        "NCCL_NVLS_ENABLE": "0",  # the machine's notes: leave NVLink multicast off
    })
    mp.spawn(rank_main, args=(args.world, args.backend, _free_port(), str(result_dir)), nprocs=args.world, join=True)

    ranks = [json.loads((result_dir / f"rank{r}.json").read_text()) for r in range(args.world)]
    records = read_dir(str(stats_dir))
    per_rank = {rec.get("rank"): rec.get("apis", {}) for rec in records}
    report = {"backend": args.backend, "world": args.world, "ranks": ranks,
              "stats_files_rank": sorted(r for r in per_rank if r is not None), "totals": totals(records)}
    ok = all(r["enabled"] and r["eager_equal"] and r.get("graph_equal", True) for r in ranks)
    for r in ranks:
        for op in ("rmsnorm", "allreduce_fusion"):
            hits = sum(c.get("hit", 0) for api, c in r["stats"].items() if api.rsplit(".", 1)[-1] == op)
            ok = ok and hits > 0
    ok = ok and report["stats_files_rank"] == list(range(args.world))
    report["ok"] = ok
    print(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
