"""The Triton candidate for the padded projection (examples.benchmarks.triton_projection): forward, grad x
and grad E against float64 for right, left, interior and no padding, and the attention module with the
kernels patched in against the library's path; on the CPU through Triton's interpreter, on a GPU
compiled (fp32 and fp16). Triton is no dependency of the plugin: skipped where it is not installed (it
comes with CUDA builds of torch)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("triton")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_kernels_agree_with_float64_and_with_the_library(device):
    flags = ["--cpu"] if device == "cpu" else []
    out = subprocess.run([sys.executable, "-m", "examples.benchmarks.triton_projection", "--check-only", *flags],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert out.returncode == 0, out.stderr[-3000:]
    assert {r.get("padding") for r in records} >= {"right", "left", "interior", "none"}
    assert any("module" in r for r in records)
    assert all(r["ok"] for r in records)
