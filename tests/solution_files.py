"""Writers of Solution JSON files for tests (real files, real loaders)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

RMSNORM_SOURCE = textwrap.dedent(
    """
    import torch

    def run(hidden_states, weight, eps=1e-6):
        x = hidden_states.float()
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return (y * weight.float()).to(hidden_states.dtype)
    """
)

RMSNORM_DPS_SOURCE = textwrap.dedent(
    """
    import torch

    def run(hidden_states, weight, output):
        x = hidden_states.float()
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        output.copy_((y * weight.float()).to(hidden_states.dtype))
    """
)


def solution_dict(definition: str, source: str, *, name: str = "test_solution", dps: bool = False) -> dict:
    return {
        "name": name,
        "definition": definition,
        "author": "tests",
        "spec": {
            "language": "python",
            "target_hardware": ["cpu"],
            "entry_point": "kernel.py::run",
            "dependencies": [],
            "destination_passing_style": dps,
        },
        "sources": [{"path": "kernel.py", "content": source}],
    }


def write_solution(folder: Path, relative: str, payload: dict) -> Path:
    path = folder / "solutions" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


CANDIDATES = Path(__file__).resolve().parent.parent / "candidates"


def catalog_folder(definition: str) -> Path:
    """The generated folder holding ``definition``: the bundled one, or
    candidates/ for a catalog entry the routing file leaves out (tests hold
    those kernels to the same rules before a GPU run bundles them)."""
    import flashinfer_trace_apply as fita  # noqa: PLC0415 - only tests that route need it

    for folder in (fita.bundled_solutions_path(), CANDIDATES):
        if any((folder / "solutions").rglob(f"{definition}.json")):
            return folder
    raise KeyError(f"{definition}: neither bundled nor a candidate (scripts/build_solutions.py's catalog)")
