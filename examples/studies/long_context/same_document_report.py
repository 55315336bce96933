"""table.md of the same-document study: accuracy per model (mean ± std over seeds, a bootstrap 95%
interval over documents), paired differences, words/s and peak memory of the runs that had a GPU
to themselves, and the CPU baselines.

    python -m examples.studies.long_context.same_document_report OUT   # rebuild OUT/table.md (and the plot)

With matplotlib, OUT/accuracy_by_update.png: each run's valid and test accuracy at its validations.

The bootstrap resamples A's documents (``same_document.cluster_of``), not rows: the rows of one
document overlap and share its B, so they are not independent. Each replicate draws documents
with replacement, takes their rows, and averages the accuracy over the seeds on those rows; the
interval is the 2.5th-97.5th percentile. A difference between two models uses the same draws
(paired).
"""

import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from examples.common.stats import mean_std

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 12345
RESULTS, TABLE, PREDICTIONS, PLOT = "results.jsonl", "table.md", "predictions", "accuracy_by_update.png"


def read_records(out_dir: str) -> List[dict]:
    path = os.path.join(out_dir, RESULTS)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def correctness(out_dir: str, record: dict, subset: str) -> Optional[np.ndarray]:
    """1/0 per row of ``subset`` for a fine-tuning record with predictions, else None."""
    if not record.get("predictions"):
        return None
    path = os.path.join(out_dir, record["predictions"])
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        result = json.load(f)["subsets"].get(subset)
    if result is None:
        return None
    return (np.asarray(result["predicted"]) == np.asarray(result["target"])).astype(float)


def cluster_draws(clusters: List[str], replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED):
    """Row weights of each replicate (how often each row is drawn), [replicates, rows]: documents
    drawn with replacement, each bringing all its rows."""
    names = sorted(set(clusters))
    index = {name: i for i, name in enumerate(names)}
    row_cluster = np.array([index[c] for c in clusters])
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(names), size=(replicates, len(names)))
    counts = np.stack([np.bincount(d, minlength=len(names)) for d in drawn])  # [replicates, clusters]
    return counts[:, row_cluster].astype(float)


def bootstrap_interval(correct_by_seed: np.ndarray, weights: np.ndarray):
    """95% percentile interval (in %) of the seeds' mean accuracy; correct_by_seed [seeds, rows]."""
    per_replicate = (weights @ correct_by_seed.mean(0)) / weights.sum(1)
    low, high = np.percentile(100.0 * per_replicate, [2.5, 97.5])
    return round(float(low), 1), round(float(high), 1)


def _fmt(value, fmt="{:.1f}"):
    return "" if value is None else fmt.format(value)


def summarize(out_dir: str, records: List[dict], clusters: Dict[str, List[str]], models: List[str]) -> dict:
    """Per model: seeds, valid/test mean, std, bootstrap interval; cost from the runs alone on a GPU;
    and paired differences of the first model against the others."""
    runs = [r for r in records if r.get("step") == "finetune"]
    draws = {subset: cluster_draws(c) for subset, c in clusters.items()}
    out = {"models": {}, "differences": {}}
    correct_of = {}
    for model in models:
        mine = [r for r in runs if r["model"] == model and not r.get("error")]
        if not mine:
            continue
        entry = {"seeds": [r["seed"] for r in mine], "variant": mine[0]["variant"], "n": mine[0]["n"]}
        for subset in ("valid", "test"):
            mean, std = mean_std([r.get(f"{subset}_accuracy") for r in mine])
            entry[subset] = {"mean": mean, "std": std, "per_seed": [r.get(f"{subset}_accuracy") for r in mine]}
            correct = [correctness(out_dir, r, subset) for r in mine]
            if subset in draws and correct and all(c is not None and len(c) == len(clusters[subset]) for c in correct):
                stacked = np.stack(correct)
                correct_of[(model, subset)] = stacked
                entry[subset]["interval"] = bootstrap_interval(stacked, draws[subset])
                entry[subset]["predicted_mean"] = round(100.0 * float(stacked.mean()), 2)
        alone = [r for r in mine if r.get("alone")]
        cost_keys = ("seed", "wps", "sentences_per_s", "peak_gpu_mem_mib", "wall_s")
        entry["cost"] = {key: alone[0].get(key) for key in cost_keys} if alone else None
        out["models"][model] = entry
    present = [m for m in models if m in out["models"]]
    for other in present[1:]:
        first = present[0]
        for subset in ("valid", "test"):
            if (first, subset) in correct_of and (other, subset) in correct_of:
                a, b = correct_of[(first, subset)].mean(0), correct_of[(other, subset)].mean(0)
                w = draws[subset]
                diffs = 100.0 * ((w @ a) - (w @ b)) / w.sum(1)
                low, high = np.percentile(diffs, [2.5, 97.5])
                out["differences"][f"{first} - {other} ({subset})"] = {
                    "mean": round(100.0 * float(a.mean() - b.mean()), 1), "interval": (round(float(low), 1),
                                                                                     round(float(high), 1))}
    return out


def table(out_dir: str, records: List[dict], manifest: dict, clusters: Dict[str, List[str]], models: List[str]) -> str:
    s = summarize(out_dir, records, clusters, models)
    ex, docs = manifest["examples"], manifest.get("documents", {})
    lines = ["# Same-document task: which of B1, B2 comes from A's document?", "",
             "Examples (" + " / ".join(manifest["labels"]) + "): " + "; ".join(
                 " / ".join(str(e["per_class"].get(label)) for label in manifest["labels"]) + f" {split}"
                 + (f" (A from {docs[split]['a_documents']} documents)" if split in docs else "")
                 for split, e in ex.items())
             + f". Parts of up to {manifest.get('part_pieces')} pieces, gap {manifest.get('gap_tokens')}; the "
             f"truncated variant keeps the first {manifest['truncate_tokens']} tokens.", ""]
    fts = [r for r in records if r.get("step") == "finetune"]
    if fts:
        r0 = fts[0]
        lines += [f"Fine-tuning: {r0['max_update']} updates of batch {r0['batch_size']}, lr {r0['lr']}, validated "
                  f"every {r0['validate_interval']} updates on valid and test; each run reports the validation "
                  "with the best valid accuracy (test is never used to choose). Accuracy (%): mean ± std over "
                  "seeds [each seed]; 95% interval: bootstrap over A's documents, seeds averaged.", ""]
    lines += ["| model | input | seeds | valid | valid 95% | test | test 95% | words/s | sentences/s | peak GPU MiB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for model, e in s["models"].items():
        cells = [model, e["variant"], ", ".join(str(x) for x in e["seeds"])]
        for subset in ("valid", "test"):
            v = e[subset]
            seeds = ", ".join(_fmt(x) for x in v["per_seed"])
            cells.append(f"{_fmt(v['mean'])} ± {_fmt(v['std'])} [{seeds}]" if v["mean"] is not None else "")
            interval = v.get("interval")
            cells.append(f"{interval[0]:.1f}-{interval[1]:.1f}" if interval else "")
        cost = e["cost"] or {}
        cells += [_fmt(cost.get("wps"), "{:,.0f}"), _fmt(cost.get("sentences_per_s"), "{:,.1f}"),
                  _fmt(cost.get("peak_gpu_mem_mib"), "{:,.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Words/s (tokens/s of fairseq's log, over the second half of the updates) and peak memory come "
              "from each model's first seed, which had its GPU to itself; the other seeds shared GPUs.", ""]
    if s["differences"]:
        lines += ["| difference (points) | mean | 95% (paired bootstrap) |", "|---|---|---|"]
        lines += [f"| {name} | {d['mean']:+.1f} | {d['interval'][0]:+.1f} to {d['interval'][1]:+.1f} |"
                  for name, d in s["differences"].items()]
        lines.append("")
    baselines = manifest.get("baselines")
    if baselines:
        lines += ["CPU baselines, fitted on train (accuracy %):", "", "| baseline | valid | test |", "|---|---|---|"]
        lines += [f"| {name} | {r.get('valid', '')} | {r.get('test', '')} |" for name, r in baselines.items()]
        lines.append("")
    errors = [r for r in records if r.get("error")]
    if errors:
        lines += ["## Errors", ""] + [f"- {r.get('model')} seed {r.get('seed')}: {r['error']}" for r in errors] + [""]
    return "\n".join(lines)


def write_table(out_dir: str, task_data: str, models: List[str]) -> str:
    from examples.studies.long_context.long_documents import load_manifest
    from examples.studies.long_context.same_document import cluster_of, read_pairs
    from linformer_plugin.io import atomic_write_text

    manifest = load_manifest(task_data)
    clusters = {subset: [cluster_of(r) for r in read_pairs(task_data, subset)]
                for subset in ("valid", "test") if subset in manifest["examples"]}
    text = table(out_dir, read_records(out_dir), manifest, clusters, models) + "\n"
    atomic_write_text(os.path.join(out_dir, TABLE), text)
    return text


def write_plot(out_dir: str, models: List[str]) -> Optional[str]:
    """PLOT: valid (left) and test (right) accuracy against fine-tuning updates, a line per run
    (model colour, one line per seed), chance at 50%. None (and no file) without matplotlib."""
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before its import logs at DEBUG
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from linformer_plugin.io import atomic_output

    records = [r for r in read_records(out_dir) if r.get("curve")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    colours = {m: f"C{i}" for i, m in enumerate(models)}
    for ax, subset in zip(axes, ("valid", "test")):
        labelled = set()
        for r in records:
            points = [(c["num_updates"], c[f"{subset}_accuracy"]) for c in r["curve"]
                      if c.get("num_updates") is not None and c.get(f"{subset}_accuracy") is not None]
            if points:
                ax.plot([float(u) for u, _ in points], [float(a) for _, a in points], "o-", markersize=3,
                        color=colours.get(r["model"], "k"), alpha=0.8,
                        label=None if r["model"] in labelled else r["model"])
                labelled.add(r["model"])
        ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{subset} accuracy")
        ax.set_xlabel("fine-tuning updates")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("accuracy (%)")
    fig.tight_layout()
    path = os.path.join(out_dir, PLOT)
    with atomic_output(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit(__doc__)
    with open(os.path.join(argv[0], "study.json"), encoding="utf-8") as f:
        study = json.load(f)
    print(write_table(argv[0], study["task_data"], study["models"]))
    write_plot(argv[0], study["models"])


if __name__ == "__main__":
    main()
