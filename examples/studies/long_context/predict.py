"""Per-example predictions of a fine-tuned sentence_prediction checkpoint, for bootstrap intervals:

    python -m examples.studies.long_context.predict CHECKPOINT DATA_BIN OUT.json [--subsets valid test] [--cpu]

Writes ``{"checkpoint", "subsets": {SUBSET: {"predicted": [...], "target": [...], "accuracy"}}}``
with one entry per row of the data-bin, in its row order (class indices, as the criterion counts
them). fp16 on a GPU, as the fine-tuning validated.
"""

import argparse
import json
import os


def predict(checkpoint, data, subsets, cpu=False, batch_size=16):
    import torch

    import linformer_plugin  # noqa: F401  (registers linformer_roberta; lets torch load fairseq checkpoints)
    from fairseq import checkpoint_utils, utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    model = models[0].eval()
    use_cuda = torch.cuda.is_available() and not cpu
    if use_cuda:
        model = model.half().cuda()
    head = getattr(cfg.criterion, "classification_head_name", None) or "sentence_classification_head"
    out = {}
    for subset in subsets:
        task.load_dataset(subset, combine=False, epoch=1)
        dataset = task.dataset(subset)
        iterator = task.get_batch_iterator(
            dataset=dataset, max_sentences=batch_size,
            max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
            ignore_invalid_inputs=False, num_workers=0, seed=1).next_epoch_itr(shuffle=False)
        predicted, target = [None] * len(dataset), [None] * len(dataset)
        with torch.no_grad():
            for sample in iterator:
                if use_cuda:
                    sample = utils.move_to_cuda(sample)
                logits, _ = model(**sample["net_input"], features_only=True, classification_head_name=head)
                labels = model.get_targets(sample, [logits]).view(-1)
                for i, p, t in zip(sample["id"].tolist(), logits.argmax(-1).tolist(), labels.tolist()):
                    predicted[i], target[i] = p, t
        if any(p is None for p in predicted):
            raise SystemExit(f"{subset}: {predicted.count(None)} rows were not predicted "
                             "(longer than the model's positions?)")
        correct = sum(p == t for p, t in zip(predicted, target))
        out[subset] = {"predicted": predicted, "target": target, "accuracy": round(100.0 * correct / len(target), 2)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("data", help="the sentence_prediction data-bin the checkpoint was fine-tuned on")
    p.add_argument("out", help="the json file to write")
    p.add_argument("--subsets", nargs="+", default=["valid", "test"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cpu", action="store_true")
    args = p.parse_args(argv)
    for path, what in ((args.checkpoint, "checkpoint"), (args.data, "data-bin")):
        if not os.path.exists(path):
            raise SystemExit(f"{what} not found: {path}")
    result = predict(args.checkpoint, args.data, args.subsets, args.cpu, args.batch_size)
    from linformer_plugin.io import atomic_write_text

    atomic_write_text(args.out, json.dumps({"checkpoint": args.checkpoint, "subsets": result}) + "\n")
    print(" ".join(f"{subset} {r['accuracy']}" for subset, r in result.items()))


if __name__ == "__main__":
    main()
