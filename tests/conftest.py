"""Shared test set-up: GPU tests are skipped without CUDA, and every test
starts and ends with the plugin disabled (a leaked patch would make later
tests pass or fail for the wrong reason)."""

from __future__ import annotations

import os

import pytest

import torch

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors only under its interpreter, chosen
    # before triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _plugin_disabled_around_each_test(tmp_path_factory, monkeypatch):
    import flashinfer_trace_apply as fita

    monkeypatch.setenv("FLASHINFER_TRACE_APPLY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fita-cache"))
    fita.disable_apply()
    yield
    fita.disable_apply()
