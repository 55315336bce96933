"""The shared-prefix candidate for the padded projection (examples.benchmarks.shared_prefix_projection):
one GEMM for the positions every sentence fills, per-sentence columns for the rest; forward, grad x and
grad E against float64 for right, left, interior and no padding, and the attention module with it
patched in against the library's path (on a GPU: fp32 and fp16)."""

import json

import pytest
import torch

from examples.benchmarks import shared_prefix_projection


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_candidate_agrees_with_float64_and_with_the_library(device, tmp_path):
    flags = ["--cpu"] if device == "cpu" else []
    assert shared_prefix_projection.main(["--check-only", *flags, "--out-dir", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r.get("padding") for r in records} >= {"right", "left", "interior", "none"}
    assert {r.get("b_major") for r in records} >= {True, False}
    assert any("module" in r for r in records) and all(r["ok"] for r in records)


def test_shared_positions_end_at_the_first_pad_of_any_sentence():
    mask = torch.zeros(3, 8, dtype=torch.bool)
    assert shared_prefix_projection.build_plan(mask).shared == 8  # no pads: one GEMM
    mask[1, 6:], mask[2, 5:] = True, True
    plan = shared_prefix_projection.build_plan(mask)
    assert plan.shared == 5 and plan.column.tolist() == [[0, 1, 2], [0, 3, 3], [3, 3, 3]]
    mask[0, 0] = True  # a left pad: every position takes the columns
    assert shared_prefix_projection.build_plan(mask).shared == 0
