"""Tables and curves from the quality study's results (examples.studies.quality.study): a markdown
table and PNG plots.

    python -m examples.studies.quality.report RESULTS.jsonl [MORE.jsonl ...] --out-dir OUT_DIR

Later files override earlier ones run by run (by name), so a rerun of some runs can be merged
into a study. Writes OUT_DIR/table.md, OUT_DIR/valid_ppl.png (validation perplexity against
updates) and OUT_DIR/sst2_dev.png (SST-2 dev accuracy against fine-tuning updates, if any); for
same-n runs (roberta_nN, linformer_nN_kK) the table compares each with RoBERTa at its n (perplexity,
words/s, peak memory) and OUT_DIR/valid_ppl_by_n.png, a panel per n, replaces valid_ppl.png.
"""

import argparse
import json
import os
import re

from linformer_plugin.io import atomic_output, atomic_write_text


def load(paths):
    merged = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    merged[record["name"]] = {**merged.get(record["name"], {}), **record}
    return list(merged.values())


def _fmt(value, spec):
    return "–" if value is None else format(value, spec)


def best_valid(record):
    curve = [c for c in record.get("valid_curve") or [] if c[2] is not None]
    return min(curve, key=lambda c: c[1]) if curve else None


def accuracy_cell(record, split):
    """"84.4", or "84.4 ± 0.3 (3 seeds)" for a mean over fine-tuning seeds (± the std between them)."""
    mean = record.get(f"sst2_{split}_acc")
    seeds = len(record.get("sst2_runs") or [])
    if mean is None or seeds < 2:
        return _fmt(mean, ".1f")
    std = record.get(f"sst2_{split}_std")
    return f"{mean:.1f} ± {std:.1f} ({seeds} seeds)" if std is not None else f"{mean:.1f} ({seeds} seeds)"


def table(records):
    baseline = next((r for r in records if r["name"] == "roberta"), None)
    base_ppl = baseline.get("valid_ppl") if baseline else None
    rows = ["| run | n | k | extra flags | params | valid ppl (final) | vs roberta | best valid ppl (update) "
            "| SST-2 dev acc | SST-2 test acc |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        ppl = r.get("valid_ppl")
        ratio = f"{ppl / base_ppl:.3f}x" if ppl and base_ppl and r is not baseline else ""
        best = best_valid(r)
        best_txt = f"{best[2]:.1f} ({best[0]})" if best else "–"
        params = f"{r['params'] / 1e6:.1f}M" if r.get("params") else "–"
        rows.append(
            f"| {r['name']} | {r['n']} | {r.get('k') or 'full'} | {' '.join(r.get('flags') or []) or ''} | {params} "
            f"| {_fmt(ppl, '.1f')} | {ratio} | {best_txt} | {accuracy_cell(r, 'dev')} | {accuracy_cell(r, 'test')} |")
    return "\n".join(rows) + "\n"


_SAME_N = re.compile(r"^(roberta|linformer)_n(\d+)(?:_k(\d+))?$")


def same_n_records(records):
    """{n: [records]} of the same-n study's runs (roberta_nN, linformer_nN_kK), RoBERTa first."""
    by_n = {}
    for r in records:
        m = _SAME_N.match(r["name"])
        if m:
            by_n.setdefault(r.get("n") or int(m.group(2)), []).append(r)  # r["n"]: --tiny scales it
    return {n: sorted(rs, key=lambda r: (r.get("k") is not None, r.get("k") or 0)) for n, rs in sorted(by_n.items())}


def _ratio(value, base):
    return f"{value / base:.3f}x" if value and base else "–"


def same_n_table(by_n):
    """Perplexity, speed and memory of each run against RoBERTa at the same n (after the same updates)."""
    rows = ["| n | model | updates | valid ppl | vs RoBERTa, same n | best valid ppl (update) | words/s | vs RoBERTa "
            "| peak GPU MiB | vs RoBERTa | SST-2 dev | SST-2 test |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, rs in by_n.items():
        base = next((r for r in rs if r.get("k") is None), {})
        for r in rs:
            is_base = r is base
            best = best_valid(r)
            rows.append(
                f"| {n} | {'roberta (full)' if is_base else 'linformer k=' + str(r.get('k'))} "
                f"| {r.get('valid_updates', '–')} | {_fmt(r.get('valid_ppl'), '.2f')} "
                f"| {'' if is_base else _ratio(r.get('valid_ppl'), base.get('valid_ppl'))} "
                f"| {f'{best[2]:.2f} ({best[0]})' if best else '–'} "
                f"| {_fmt(r.get('pretrain_wps'), ',')} | {'' if is_base else _ratio(r.get('pretrain_wps'), base.get('pretrain_wps'))} "
                f"| {_fmt(r.get('peak_gpu_mem_mib'), ',.0f')} "
                f"| {'' if is_base else _ratio(r.get('peak_gpu_mem_mib'), base.get('peak_gpu_mem_mib'))} "
                f"| {accuracy_cell(r, 'dev') if r.get('sst2_dev_acc') is not None else ''} "
                f"| {accuracy_cell(r, 'test') if r.get('sst2_test_acc') is not None else ''} |")
    return "\n".join(rows) + "\n"


def plot_same_n(by_n, out_dir):
    """valid_ppl_by_n.png: validation perplexity against updates, one panel per n."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_n), figsize=(3.6 * len(by_n), 3.6), sharey=True, squeeze=False)
    for ax, (n, rs) in zip(axes[0], by_n.items()):
        for r in rs:
            curve = [c for c in r.get("valid_curve") or [] if c[2] is not None]
            if curve:
                label = "roberta" if r.get("k") is None else f"linformer k={r['k']}"
                ax.plot([c[0] for c in curve], [c[2] for c in curve], "k-" if r.get("k") is None else "-",
                        label=label, linewidth=1.4)
        ax.set_title(f"n = {n}")
        ax.set_yscale("log")
        ax.set_xlabel("updates")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("validation perplexity (masked LM)")
    fig.tight_layout()
    with atomic_output(os.path.join(out_dir, "valid_ppl_by_n.png"), "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def plot(records, out_dir):
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before its import logs at DEBUG
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_n = same_n_records(records)
    if by_n:  # one panel per n says it all; one plot of every run would repeat it
        plot_same_n(by_n, out_dir)
    else:
        plot_all(records, out_dir, plt)
    plot_finetuning(records, out_dir, plt)


def plot_all(records, out_dir, plt):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in records:
        curve = r.get("valid_curve") or []
        if curve:
            style = "k-" if r["name"] == "roberta" else "-"
            ax.plot([c[0] for c in curve], [c[2] for c in curve], style, label=r["name"], linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("updates")
    ax.set_ylabel("validation perplexity (masked LM)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(os.path.join(out_dir, "valid_ppl.png"), "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def plot_finetuning(records, out_dir, plt):
    finetuned = [r for r in records if r.get("sst2_dev_curve")]
    if finetuned:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in finetuned:
            curve = r["sst2_dev_curve"]
            ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-", label=r["name"])
        ax.set_xlabel("fine-tuning updates")
        ax.set_ylabel("SST-2 dev accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_output(os.path.join(out_dir, "sst2_dev.png"), "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="results.jsonl files of examples.studies.quality.study")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    records = load(args.results)
    os.makedirs(args.out_dir, exist_ok=True)
    by_n = same_n_records(records)
    text = table(records) if len(by_n) == 0 or any(not _SAME_N.match(r["name"]) for r in records) else ""
    if by_n:
        text = (text + "\n" if text else "") + same_n_table(by_n)
    atomic_write_text(os.path.join(args.out_dir, "table.md"), text)
    print(text)
    if not args.no_plots:
        plot(records, args.out_dir)


if __name__ == "__main__":
    main()
