"""The long-context study's summary.md: its records as markdown tables."""


def model_name(record):
    return f"linformer k={record['k']}" if record["model"] == "linformer" else record["model"]


def _fmt(value, fmt="{:.0f}"):
    return "" if value is None else fmt.format(value)


def summary(records, manifest):
    lines = ["# Long-context study", ""]
    for mode in dict.fromkeys(r["sample_break_mode"] for r in records if r["step"] == "benchmark"):
        bench = [r for r in records if r["step"] == "benchmark" and r["sample_break_mode"] == mode]
        r0 = bench[0]
        lines += [f"## Masked-LM training at n = {r0['n']} ({mode}, --max-tokens {r0['max_tokens']}, "
                  f"{r0['max_update']} updates; words/s over the second half)", "",
                  "| model | words/s | peak GPU MiB | mean tokens per sample | error |", "|---|---|---|---|---|"]
        for r in bench:
            lines.append(f"| {model_name(r)} | {_fmt(r['wps'])} | {_fmt(r['peak_gpu_mem_mib'])} | "
                         f"{_fmt(r['mean_sample_tokens'], '{:.0f}')} | {r['error'] or ''} |")
        by = {r["model"]: r for r in bench}
        if all(by.get(m) and by[m]["wps"] and by[m]["peak_gpu_mem_mib"] for m in ("linformer", "roberta")):
            lines += ["", f"linformer / roberta: {by['linformer']['wps'] / by['roberta']['wps']:.2f}x words/s, "
                      f"{by['linformer']['peak_gpu_mem_mib'] / by['roberta']['peak_gpu_mem_mib']:.2f}x peak memory"]
        lines.append("")
    for r in (r for r in records if r["step"] == "memory_profile" and r.get("sites")):
        scope = "the whole run" if r["whole_run"] else f"its last {r['trace_events']} allocator events"
        lines += [f"## What is live at the peak: {model_name(r)}, n = {r['n']} ({r['sample_break_mode']}, "
                  f"{r['num_updates']} updates)", "",
                  f"Peak allocated {_fmt(r['peak_gpu_mem_mib'])} MiB; the trace ({scope}) peaks at "
                  f"{r['trace_peak_mib']:.0f} MiB, held by:", "", "| MiB | blocks | allocated at |", "|---|---|---|"]
        lines += [f"| {s['mib']:.0f} | {s['blocks']} | `{s['site']}` |" for s in r["sites"]]
        lines.append("")
    warm = [r for r in records if r["step"] in ("pretrain_roberta", "validate_roberta", "validate_converted", "mlm")]
    if warm:
        lines += ["## Warm start (masked-LM valid loss, base 2)", "", "| step | n | updates | valid loss | wall s |",
                  "|---|---|---|---|---|"]
        for r in warm:
            lines.append(f"| {r['step']} | {r['n']} | {_fmt(r.get('num_updates'))} | "
                         f"{_fmt(r.get('valid_loss'), '{:.3f}')} | {r['wall_s']} |")
        lines.append("")
    fts = [r for r in records if r["step"] == "finetune"]
    bayes = [r for r in records if r["step"] == "naive_bayes"]
    if fts or bayes:
        ex = manifest["examples"]
        setup = (f" at the last update ({fts[0]['max_update']} updates, batch {fts[0]['batch_size']}, "
                 f"lr {fts[0]['lr']}), mean over seeds; per seed in brackets" if fts else "")
        task = "" if manifest.get("task", "collection") == "collection" else "continuation task: "
        lines += ["## Long-document classification (" + task + " vs ".join(manifest["labels"]) + ")", "",
                  "Examples per class: " + "; ".join(f"{split} {next(iter(e['per_class'].values()))}"
                                                     for split, e in ex.items())
                  + f". Accuracy (%){setup}. naive Bayes: bag of pieces, trained on the same train set.", "",
                  "| model | input | valid acc | test acc | train words/s | wall s |", "|---|---|---|---|---|---|"]
        groups = {}
        for r in bayes + fts:
            groups.setdefault((r["model"], r["variant"]), []).append(r)
        for (model, variant), rs in groups.items():
            def mean_of(key):
                values = [r[key] for r in rs if r.get(key) is not None]
                if not values:
                    return "error" if any(r.get("error") for r in rs) else ""
                per_seed = ", ".join(f"{v:.1f}" for v in values)
                return f"{sum(values) / len(values):.1f} [{per_seed}]"
            wps = [r["wps"] for r in rs if r.get("wps")]
            wps = wps or [None]
            lines.append(f"| {model} | {variant} | {mean_of('valid_accuracy')} | {mean_of('test_accuracy')} | "
                         f"{_fmt(None if None in wps else sum(wps) / len(wps))} | {max(r['wall_s'] for r in rs)} |")
        lines.append("")
    errors = [r for r in records if r.get("error")]
    if errors:
        lines += ["## Errors", ""] + [f"- {r['step']} {r.get('model', '')} {r.get('variant', '')}: {r['error']}"
                                      for r in errors] + [""]
    return "\n".join(lines)
