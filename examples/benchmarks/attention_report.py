"""The attention benchmark's report: markdown tables (baseline / ours ratios) and time and memory
plots of its records (examples.benchmarks.attention)."""

import logging
import os

from examples.benchmarks.attention import VARIANT_IMPLS, column_label, fmt
from linformer_plugin.io import atomic_output


def _table(records, metric, ks, unit):
    """Markdown table: rows n, columns impl (per k), then baseline/ours ratios per k."""
    by_key = {(r["n"], column_label(r["impl"], r["k"])): r for r in records}
    columns = []
    for r in records:
        label = column_label(r["impl"], r["k"])
        if label not in columns:
            columns.append(label)
    ratio_columns = []
    for k in ks:
        for base in ("fq_linf", "fq_mha", "sdpa_full", *VARIANT_IMPLS):
            base_label = column_label(base, k)
            if base_label in columns and column_label("ours", k) in columns:
                ratio_columns.append((f"{base_label.split()[0]}/ours k={k}", base_label, column_label("ours", k)))
    ns = sorted({r["n"] for r in records})
    header = ["n", "B"] + [f"{c} ({unit})" for c in columns] + [name for name, _, _ in ratio_columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n in ns:
        bsz = next(r["B"] for r in records if r["n"] == n)
        row = [str(n), str(bsz)]
        for c in columns:
            r = by_key.get((n, c))
            if r is None:
                row.append("")
            elif r.get(metric) is None:
                row.append(r.get("error", "")[:20] or "")
            else:
                row.append(fmt(r[metric], 1 if unit == "MiB" else 3))
        for _, base_label, ours_label in ratio_columns:
            base, ours = by_key.get((n, base_label)), by_key.get((n, ours_label))
            ok = base and ours and base.get(metric) and ours.get(metric)
            row.append(f"{base[metric] / ours[metric]:.2f}x" if ok else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _padding(record):
    return record.get("padding", "right" if record.get("padded") else "none")


def _padding_table(records):
    """Each padded case against the same impl unpadded: time ratios and the change of peak memory."""
    unpadded = {(r["impl"], r["k"], r["n"]): r for r in records if _padding(r) == "none"}
    lines = ["| impl | n | padding | fwd ms unpadded / padded | train ms unpadded / padded | train peak MiB change |",
             "|---|---|---|---|---|---|"]
    for r in records:
        base = unpadded.get((r["impl"], r["k"], r["n"]))
        if _padding(r) == "none" or base is None:
            continue
        cells = []
        for metric in ("fwd_ms", "train_ms"):
            a, b = base.get(metric), r.get(metric)
            cells.append(f"{fmt(a, 3)} / {fmt(b, 3)}" + (f" ({b / a:.2f}x)" if a and b else ""))
        a, b = base.get("train_mem_mb"), r.get("train_mem_mb")
        cells.append(f"{b - a:+.0f}" if a is not None and b is not None else "")
        lines.append(f"| {column_label(r['impl'], r['k'])} | {r['n']} | {_padding(r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(records, ks):
    sections = ["# Attention module benchmark", "",
                "Ratios are baseline / ours: above 1x, ours is faster (time) or smaller (memory). "
                "Memory is the peak above what was allocated before the step (0 on CPU)."]
    metrics = (("fwd_ms", "inference forward", "ms"), ("train_ms", "forward + backward", "ms"),
               ("fwd_mem_mb", "inference forward peak memory", "MiB"),
               ("train_mem_mb", "forward + backward peak memory", "MiB"))
    paddings = list(dict.fromkeys(_padding(r) for r in records))
    if any(r.get("padded") for r in records):
        sections += ["", "Padded batches: sentence b of B has n - b n / (2B) tokens (lengths spread over (n/2, n]), "
                     f"padded on the {' or '.join(p for p in paddings if p != 'none')}, with a key_padding_mask."]
    if any(r.get("max_positions") for r in records):
        sections += ["", "The Linformers are built for inputs of up to "
                     f"{max(r.get('max_positions') or 0 for r in records)} tokens and fed n (short inputs: k may "
                     "exceed n)."]
    if any(r["impl"] in VARIANT_IMPLS for r in records):
        sections += ["", "Projection variants (ours_*/ours: above 1x the variant is slower or larger than the "
                     "default linear projection): "
                     + ", ".join(f"{impl} = --compressed-projection {p} --compressed-sharing {s}"
                                 for impl, (p, s) in VARIANT_IMPLS.items())
                     + "."]
    for dtype in dict.fromkeys(r["dtype"] for r in records):
        if "none" in paddings and len(paddings) > 1:
            sections += ["", f"## {dtype}: padded / unpadded", "", _padding_table([r for r in records
                                                                                  if r["dtype"] == dtype])]
        for padding in paddings:
            subset = [r for r in records if r["dtype"] == dtype and _padding(r) == padding]
            name = dtype if padding == "none" and len(paddings) == 1 else f"{dtype}, padding {padding}"
            for metric, title, unit in metrics:
                heading = f"## {name}: {title} ({unit}, median)" if unit == "ms" else f"## {name}: {title} ({unit})"
                sections += ["", heading, "", _table(subset, metric, ks, unit)]
    errors = [r for r in records if r.get("error")]
    if errors:
        sections += ["", "## Errors", ""]
        sections += [f"- {r['impl']} n={r['n']} k={r['k']} {r['dtype']} ({r.get('error_phase')}): {r['error']}"
                     for r in errors]
    return "\n".join(sections) + "\n"


def write_plots(records, out_dir):
    """time_<dtype>.png and memory_<dtype>.png; skipped with a warning without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.warning("matplotlib is not installed: no plots")
        return []
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    written = []
    for dtype in dict.fromkeys(r["dtype"] for r in records):
        subset = [r for r in records if r["dtype"] == dtype]
        labels = list(dict.fromkeys(column_label(r["impl"], r["k"]) for r in subset))
        for kind, metrics, ylabel in (("time", ("fwd_ms", "train_ms"), "ms"),
                                      ("memory", ("fwd_mem_mb", "train_mem_mb"), "MiB")):
            fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
            for ax, metric in zip(axes, metrics):
                for label in labels:
                    points = sorted((r["n"], r[metric]) for r in subset
                                    if column_label(r["impl"], r["k"]) == label and r.get(metric))
                    if points:
                        ax.plot(*zip(*points), marker="o", label=label)
                ax.set_xscale("log", base=2)
                if ax.lines:
                    ax.set_yscale("log")
                ax.set_xlabel("sequence length n (tokens per batch constant)")
                ax.set_ylabel(ylabel)
                phase = "forward (inference)" if metric.startswith("fwd") else "forward + backward"
                ax.set_title(f"{phase}, {dtype}")
                ax.grid(True, which="both", alpha=0.3)
                if ax.lines:
                    ax.legend(fontsize=8)
            fig.tight_layout()
            path = os.path.join(out_dir, f"{kind}_{dtype}.png")
            try:
                with atomic_output(path, "wb") as f:
                    fig.savefig(f, dpi=120, format="png")
            finally:
                plt.close(fig)
            written.append(path)
    return written
