"""The hub's ``encode_batch`` + ``predict``, timed: one model per process (a child of
examples.benchmarks.whole_model).

    python -m examples.benchmarks.hub_speed CHECKPOINT DATA_DIR --text FILE [--batch-sizes 1 32 256]
        [--length 512] [--lengths full mixed] [--fp16] [--cpu]

CHECKPOINT is a sentence_prediction checkpoint (ours or fairseq's RoBERTa: both load through fairseq's
hub_utils with sentencepiece and are wrapped in ``LinformerHubInterface``, whose ``encode_batch`` only
encodes and right-pads; importing linformer_plugin also lets torch.load read fairseq checkpoints). The
inputs are cut from FILE's text (.xz read as such) with the model's sentencepiece: ``full``: each
``--length - 2`` pieces (with <s> and </s>, --length tokens); ``mixed``: lengths spread over
[length / 2, length] (right-padded batches). Each call encodes a batch of strings, predicts with the
classification head and reads the predicted classes back (a GPU sync). Prints one JSON line per
(lengths, batch size): sentences/s and tokens/s over the timed calls, after warm-up calls.
"""

import argparse
import json
import lzma
import os
import random
import time

import torch


def read_text(path):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return " ".join(line.strip() for line in f if line.strip())


def make_inputs(hub, text, length, count, mixed, seed=1):
    """``count`` strings that encode to about ``length`` tokens (mixed: length / 2 .. length)."""
    pieces = hub.bpe.encode(text).split()
    rng = random.Random(seed)
    inputs, start = [], 0
    for _ in range(count):
        size = rng.randint(length // 2, length) - 2 if mixed else length - 2
        if start + size > len(pieces):
            start = 0
        if size > len(pieces):
            raise SystemExit(f"--text has {len(pieces)} pieces, fewer than one input of {size}")
        inputs.append(hub.bpe.decode(" ".join(pieces[start:start + size])))
        start += size
    return inputs


def time_calls(hub, head, inputs, batch, calls, warmup, max_tokens, device):
    sentences = tokens = 0
    seconds = 0.0
    for i in range(warmup + calls):
        batch_inputs = [inputs[(i * batch + j) % len(inputs)] for j in range(batch)]
        start = time.perf_counter()
        encoded = hub.encode_batch(batch_inputs)[:, :max_tokens]  # re-encoding may add a piece or two
        predicted = hub.predict(head, encoded.to(device)).argmax(-1).tolist()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            seconds += elapsed
            sentences += len(predicted)
            tokens += int(encoded.ne(hub.task.source_dictionary.pad()).sum())
    return {"calls": calls, "sentences": sentences, "tokens": tokens, "seconds": seconds,
            "sentences_per_s": sentences / seconds, "tokens_per_s": tokens / seconds}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("data", help="the data-bin the checkpoint was trained on (dictionaries)")
    p.add_argument("--text", required=True, help="raw text to cut the inputs from")
    p.add_argument("--sentencepiece-model", required=True)
    p.add_argument("--head", default="sentence_classification_head")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32, 256])
    p.add_argument("--length", type=int, default=512, help="tokens per input, <s> and </s> included")
    p.add_argument("--lengths", nargs="+", choices=("full", "mixed"), default=["full", "mixed"])
    p.add_argument("--sentences", type=int, default=512, help="timed sentences per batch size (at least 3 calls)")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--cpu", action="store_true")
    args = p.parse_args(argv)

    import linformer_plugin  # noqa: F401  (the model registry and the torch.load allow-list)
    from fairseq import hub_utils

    from linformer_plugin.hub_interface import LinformerHubInterface

    loaded = hub_utils.from_pretrained(os.path.dirname(os.path.abspath(args.checkpoint)),
                                       os.path.basename(args.checkpoint), os.path.abspath(args.data),
                                       bpe="sentencepiece", sentencepiece_model=os.path.abspath(args.sentencepiece_model),
                                       load_checkpoint_heads=True)
    hub = LinformerHubInterface(loaded["args"], loaded["task"], loaded["models"][0]).eval()
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    hub.to(device)
    if args.fp16:
        hub.half()
    text = read_text(args.text)
    with torch.no_grad():  # (inference_mode's masks have no version counter: our plan is then made per layer)
        for lengths in args.lengths:
            inputs = make_inputs(hub, text, args.length, max(args.batch_sizes) * 2, lengths == "mixed")
            for batch in args.batch_sizes:
                calls = max(3, args.sentences // batch)
                record = time_calls(hub, args.head, inputs, batch, calls, warmup=2, max_tokens=args.length,
                                    device=device)
                record.update(lengths=lengths, batch=batch, length=args.length)
                print("HUB_SPEED=" + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
