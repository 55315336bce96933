"""Candidates for the padded projection (issue #16), in examples.benchmarks: the shared prefix (one GEMM
for the positions every sentence fills, per-sentence columns for the rest) and zeroed pads (under right
padding, x with its pads zeroed and one GEMM). Each against float64 (forward, grad x, grad E; right,
left, interior and no padding) and patched into the attention module against the library's path (on a
GPU: fp32 and fp16)."""

import json

import pytest
import torch

from examples.benchmarks import shared_prefix_projection, zeroed_pads_projection
from linformer_plugin.modules import padding


@pytest.mark.parametrize("candidate", [shared_prefix_projection, zeroed_pads_projection], ids=lambda m: m.__name__)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_candidate_agrees_with_float64_and_with_the_library(candidate, device, tmp_path):
    flags = ["--cpu"] if device == "cpu" else []
    assert candidate.main(["--check-only", *flags, "--out-dir", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r.get("padding") for r in records} >= {"right", "left", "interior", "none"}
    assert {r.get("b_major") for r in records} >= {True, False}
    assert any("module" in r for r in records) and all(r["ok"] for r in records)


def test_shared_positions_end_at_the_first_pad_of_any_sentence_rounded_down_to_8():
    mask = torch.zeros(3, 16, dtype=torch.bool)
    assert shared_prefix_projection.build_plan(mask).shared == 16  # no pads: one GEMM
    mask[1, 14:], mask[2, 13:] = True, True
    plan = shared_prefix_projection.build_plan(mask)  # the first pad at 13: 8 shared positions
    assert plan.shared == 8 and plan.tail.right_padded
    assert plan.tail.column.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 8, 8], [0, 1, 2, 3, 4, 8, 8, 8]]
    mask[0, 0] = True  # a left pad: every position takes the columns
    assert shared_prefix_projection.build_plan(mask).shared == 0


def test_zeroed_pads_take_the_one_gemm_only_under_right_padding():
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    assert padding.right_padded_keep(mask)[:, :, 0].T.tolist() == (~mask).tolist()
    mask[0, 0] = True  # a left pad: the library's path
    assert padding.right_padded_keep(mask) is None
