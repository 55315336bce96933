"""CPU smoke tests of the benchmarks (examples.benchmarks.attention, examples.benchmarks.train; tiny
sizes) and of the allocator-trace reader (examples.common.memory_at_peak).

They check that every expected case gives one record with positive numbers and that the report
files are written; the real runs (GPU, default sizes) are too long for the test suite.
"""

import importlib.util
import json
import pickle
import subprocess
import sys

import pytest

from conftest import REPO
from examples.benchmarks import attention as bench_attention
from examples.common.fairseq_logs import parse_train_log


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_benchmark_attention_cpu_smoke(tmp_path):
    bench = bench_attention
    out = tmp_path / "attention"
    args = ["--device", "cpu", "--dtypes", "fp32", "--lengths", "64", "128", "--tokens", "256", "--ks", "16",
            "--embed-dim", "64", "--heads", "4", "--repeat", "2", "--warmup", "1", "--out-dir", str(out)]
    bench.main(args)

    records = _read_jsonl(out / "results.jsonl")
    expected = bench.expected_cases(["ours", "fq_linf", "fq_mha", "sdpa_full"], [64, 128], [16], ["fp32"])
    assert len(expected) == 8
    assert sorted((r["impl"], r["n"], r["k"], r["dtype"], r.get("padding", "none")) for r in records) == sorted(expected)
    for r in records:
        assert "error" not in r, r
        assert r["B"] == 256 // r["n"]
        assert r["fwd_ms"] > 0 and r["train_ms"] > 0, r
        assert r["fwd_mem_mb"] == 0 and r["train_mem_mb"] == 0  # no CUDA: memory is not measured

    report = (out / "results.md").read_text()
    assert "fq_linf/ours k=16" in report and "fq_mha/ours k=16" in report
    env = json.loads((out / "env.json").read_text())
    assert env["device"] == "cpu" and env["torch"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "time_fp32.png").stat().st_size > 0
        assert (out / "memory_fp32.png").stat().st_size > 0

    # --sdpa: ours' SDPA kernels forced for the run, named in ours' records (the baselines keep theirs)
    bench.main(args[:-1] + [str(tmp_path / "forced"), "--impls", "ours", "sdpa_full", "--lengths", "64",
                            "--sdpa", "cudnn-bucketed"])
    records = _read_jsonl(tmp_path / "forced" / "results.jsonl")
    assert sorted((r["impl"], r.get("sdpa")) for r in records) == [("ours", "cudnn-bucketed"), ("sdpa_full", None)]
    assert all(r["fwd_ms"] > 0 and "error" not in r for r in records), records

    # the building blocks, as another script would call them
    record = bench.time_case("fq_linf", 64, 32, "fp32", 128, embed_dim=32, num_heads=2, device="cpu",
                             warmup=0, repeat=1)
    assert record["B"] == 2 and record["fwd_ms"] > 0 and "error" not in record


def test_benchmark_attention_projection_variants_cpu_smoke(tmp_path):
    """The projection variants (--compressed-projection / --compressed-sharing) on padded batches."""
    bench = bench_attention
    out = tmp_path / "variants"
    variants = list(bench.VARIANT_IMPLS)
    assert variants == ["ours_none", "ours_conv", "ours_conv_none", "ours_mean", "ours_max"]
    bench.main(["--device", "cpu", "--dtypes", "fp32", "--lengths", "64", "--tokens", "128", "--ks", "16",
                "--embed-dim", "32", "--heads", "2", "--repeat", "1", "--warmup", "0", "--padded", "--no-plots",
                "--impls", "ours", *variants, "--out-dir", str(out)])
    records = _read_jsonl(out / "results.jsonl")
    assert [r["impl"] for r in records] == ["ours", *variants]
    for r in records:
        assert "error" not in r, r
        assert r["padded"] and r["k"] == 16 and r["fwd_ms"] > 0 and r["train_ms"] > 0, r
    assert (records[2]["projection"], records[2]["sharing"]) == ("conv", "headwise")
    report = (out / "results.md").read_text()
    assert "ours_conv/ours k=16" in report and "Padded batches" in report
    # the variants run only when asked for
    assert not set(variants) & set(bench.parse_args([]).impls)
    assert set(variants) <= set(bench.parse_args(["--variants"]).impls)


def test_benchmark_attention_paddings_and_short_inputs_cpu_smoke(tmp_path):
    """Padded beside unpadded in one run (the padded / unpadded table), and inputs shorter than k in
    a Linformer built for longer ones (--max-positions)."""
    out = tmp_path / "paddings"
    bench_attention.main(["--device", "cpu", "--dtypes", "fp32", "--lengths", "16", "--tokens", "64", "--ks", "32",
                          "--embed-dim", "32", "--heads", "2", "--repeat", "1", "--warmup", "0", "--no-plots",
                          "--impls", "ours", "sdpa_full", "--paddings", "none", "right", "left",
                          "--max-positions", "64", "--out-dir", str(out)])
    records = _read_jsonl(out / "results.jsonl")
    assert [(r["impl"], r.get("padding", "none")) for r in records] == [
        (impl, padding) for padding in ("none", "right", "left") for impl in ("ours", "sdpa_full")]
    for r in records:
        assert "error" not in r and r["fwd_ms"] > 0 and r["train_ms"] > 0, r
        assert r["impl"] == "sdpa_full" or (r["k"] == 32 and r["max_positions"] == 64)  # k = 32 > n = 16
    report = (out / "results.md").read_text()
    assert "## fp32: padded / unpadded" in report and "| ours k=32 | 16 | left |" in report
    assert "sdpa_full/ours k=32" in report
    with pytest.raises(SystemExit):
        bench_attention.parse_args(["--padded", "--paddings", "left"])
    # a padded batch of one sentence would time the padded path on a mask without pads: refused, with the fix
    record = bench_attention.time_case("ours", 64, 16, "fp32", 64, embed_dim=32, num_heads=2, device="cpu",
                                       padding="right")
    assert record["fwd_ms"] is None and "B = 1" in record["error"] and "--tokens 128" in record["error"]


@pytest.mark.slow
def test_benchmark_train_cpu_smoke(tmp_path):
    out = tmp_path / "train"
    cmd = [sys.executable, "-m", "examples.benchmarks.train", "--device", "cpu", "--small",
           "--lengths", "64", "--tokens", "256", "--max-update", "3", "--ks", "16", "--out-dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    records = _read_jsonl(out / "results.jsonl")
    assert [r["model"] for r in records] == ["ours_k16", "reference_k16", "roberta"]
    for r in records:
        assert r["error"] is None and r["rc"] == 0, r
        assert r["n"] == 64 and r["B"] == 4
        assert r["wps"] > 0 and r["num_updates"] == 3, r
        assert r["peak_gpu_mem_mib"] is None  # printed only where CUDA is available
        log = (out / r["log"]).read_text().splitlines()
        assert 0 < len(log) <= 201 and "train_inner" in "\n".join(log)
    assert "--compressed-dim 16" in records[0]["command"] and "--compressed 4" in records[1]["command"]
    report = (out / "results.md").read_text()
    assert "ours_k16/roberta" in report and "ours_k16/reference_k16" in report
    assert (out / "env.json").exists()


def test_benchmark_train_parses_fairseq_output():
    """The GPU-only lines (peak memory, OOM) that the CPU smoke run cannot produce."""
    inner = '{"epoch": 1, "update": 0.1, "wps": "%s", "num_updates": "%d"}'
    text = "\n".join([
        "2026-01-01 00:00:00 | INFO | train_inner | " + inner % ("100.5", 10),
        "2026-01-01 00:00:01 | INFO | train_inner | " + inner % ("2000.0", 20),
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        "PEAK_GPU_MEMORY_MIB=1234.5",
        "PEAK_GPU_MEMORY_RESERVED_MIB=2048.0",
    ])
    parsed = parse_train_log(text)
    assert parsed["wps"] == 2000.0 and parsed["num_updates"] == 20 and parsed["train_inner_lines"] == 2
    assert parsed["peak_gpu_mem_mib"] == 1234.5 and parsed["peak_gpu_reserved_mib"] == 2048.0
    assert parsed["error_line"].startswith("torch.OutOfMemoryError")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_memory_at_peak_replays_a_snapshot_to_its_peak(tmp_path):
    """A synthetic allocator trace (the format of torch.cuda.memory._dump_snapshot): the peak is the
    highest live total, and its blocks are named by our frame, else fairseq's, else the ATen op of a C++
    stack, else the innermost frame."""
    mib = 2**20

    def frames(*files):
        return [{"filename": f, "line": i + 1, "name": f"f{i}"} for i, f in enumerate(files)]

    ours = frames("/x/torch/nn/functional.py", "/x/linformer_plugin/modules/sequence_projection.py", "/x/fairseq/y.py")
    theirs = frames("/x/torch/a.py", "/x/fairseq/modules/multihead_attention.py")
    other = frames("/x/torch/autograd.py")
    # a C++ stack (stacks="all", the autograd engine's thread): the ATen op, not the allocator
    cpp = [{"filename": "c10/cuda/CUDACachingAllocator.cpp", "line": 9, "name": "c10::cuda::malloc"},
           {"filename": "aten/src/ATen/native/attention_backward.cu", "line": 7,
            "name": "at::native::_flash_attention_backward"}]
    # a fairseq layer called by the plugin's encoder, under the entry points: the layer's line
    layer = frames("/x/torch/nn/functional.py", "/x/fairseq/modules/transformer_layer.py",
                   "/x/linformer_plugin/modules/linformer_encoder.py", "/x/linformer_plugin/fairseq_fixes.py",
                   "/x/fairseq_cli/train.py", "/x/examples/common/train_with_peak_memory.py")
    events = [
        {"action": "free_completed", "addr": 99, "size": 5 * mib},  # allocated before the window: ignored
        {"action": "alloc", "addr": 1, "size": 64 * mib, "frames": ours},
        {"action": "alloc", "addr": 2, "size": 32 * mib, "frames": theirs},
        {"action": "alloc", "addr": 3, "size": 8 * mib, "frames": other},
        {"action": "free_requested", "addr": 3, "size": 8 * mib},
        {"action": "free_completed", "addr": 3, "size": 8 * mib},
        {"action": "alloc", "addr": 4, "size": 16 * mib, "frames": ours},  # 64 + 32 + 16 = 112 live
        {"action": "free_completed", "addr": 1, "size": 64 * mib},
        {"action": "alloc", "addr": 5, "size": 70 * mib, "frames": cpp},  # 32 + 16 + 70 = 118
        {"action": "alloc", "addr": 6, "size": 4 * mib, "frames": layer},  # 122: the peak
        {"action": "free_completed", "addr": 6, "size": 4 * mib},
    ]
    path = tmp_path / "snap.pickle"
    path.write_bytes(pickle.dumps({"segments": [], "device_traces": [events]}))
    out = subprocess.run([sys.executable, "-m", "examples.common.memory_at_peak", str(path)],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "peak of what they allocate: 122.0 MiB" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "MiB" not in line]
    assert rows == ["| 70.0 | 1 | aten/src/ATen/native/attention_backward.cu:7 at::native::_flash_attention_backward |",
                    "| 32.0 | 1 | fairseq/modules/multihead_attention.py:2 f1 |",
                    "| 16.0 | 1 | linformer_plugin/modules/sequence_projection.py:2 f1 |",
                    "| 4.0 | 1 | fairseq/modules/transformer_layer.py:2 f1 |"]
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(pickle.dumps({"segments": []}))
    proc = subprocess.run([sys.executable, "-m", "examples.common.memory_at_peak", str(bad)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and "is not a CUDA memory snapshot (no device_traces)" in proc.stderr
