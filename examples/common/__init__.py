"""Helpers the benchmarks and studies share: fairseq command blocks, the json-log reader and the
one logged-subprocess runner, the environment record, where fairseq's reference Linformer lives,
two fairseq-train entry points (several runs a process; peak GPU memory), the studies' mean and
standard deviation over seeds, and their GPU job slots (gpu_slots)."""
