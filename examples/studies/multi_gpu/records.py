"""The multi-GPU check's records and summary (examples.studies.multi_gpu.check): what a
fairseq-train log says (losses, parameters, the parameters DDP found without a gradient, the error),
one record per run or pair of runs, and summary.md."""

import os
import re
import statistics
import threading
import time

from examples.common.fairseq_logs import error_line, json_records
from linformer_plugin.io import write_jsonl

DDP_UNUSED_ERROR = "Expected to have finished reduction in the prior iteration"
_PARAMS = re.compile(r"num\. shared model params: ([\d,]+) \(num\. trained: ([\d,]+)\)")
_UNUSED_NAMES = re.compile(r"Parameters? which did not receive grad for rank \d+: (.+)$")
_UNUSED_INDICES = re.compile(r"Parameter indices which did not receive grad for rank \d+: (.+)$")
_RUN_MARK = re.compile(r"^@@RUN (\d+) (BEGIN|END)(?: rc=(-?\d+))?\s*$")
_OVERFLOW = "gradient overflow detected"
_MIN_SCALE = "Minimum loss scale reached"

# ----------------------------------------------------------------------------- parsing


def train_inner_entries(text):
    """The train_inner records of a fairseq log, values as numbers where they are."""
    return json_records(text).get("train_inner", [])

def split_harness_output(text):
    """{run index: (its lines' text, rc or None)} from examples.common.fairseq_train's @@RUN markers."""
    lines, rcs, current = {}, {}, None
    for line in text.splitlines():
        m = _RUN_MARK.match(line.strip())
        if m and m.group(2) == "BEGIN":
            current = int(m.group(1))
            lines[current], rcs[current] = [], None
        elif m and m.group(2) == "END":
            rcs[int(m.group(1))] = int(m.group(3))
            current = None
        elif current is not None:
            lines[current].append(line)
    return {i: ("\n".join(lines[i]), rcs[i]) for i in lines}


def error_of(text):
    """The line naming a failure; the DDP unused-parameter error when it is there."""
    for line in text.splitlines():
        if DDP_UNUSED_ERROR in line:
            return line.strip()[:500]
    return error_line([line for line in text.splitlines() if not line.startswith("@@RUN")])


def first_error(texts, default):
    """The failure line of the first text that names one (error_of once per text), else default."""
    return next(filter(None, map(error_of, texts)), default)


def first_failure(rcs):
    """The first non-zero exit status, 0 when all succeeded."""
    return next((rc for rc in rcs if rc != 0), 0)


def run_facts(text):
    """What a fairseq-train log says: per-update losses, parameters, unused parameters, error line."""
    entries = train_inner_entries(text)
    facts = {"num_updates": int(entries[-1]["num_updates"]) if entries else 0,
             "losses": [e.get("loss") for e in entries],
             "updates": [int(e["num_updates"]) for e in entries if "num_updates" in e]}
    m = _PARAMS.search(text)
    if m:
        facts["params"] = int(m.group(1).replace(",", ""))
        facts["params_trained"] = int(m.group(2).replace(",", ""))
    for regex, key in ((_UNUSED_NAMES, "unused_parameters"), (_UNUSED_INDICES, "unused_parameter_indices")):
        found = [m.group(1).strip() for m in map(regex.search, text.splitlines()) if m]
        if found:
            facts[key] = found[0][:1000]
    return facts, entries


# ----------------------------------------------------------------------------- records


class Records:
    """The records of the check's runs: one per run, or one per pair of runs (loss, resume,
    scaling) once both have finished; results.jsonl rewritten after each."""

    def __init__(self, args):
        self.args = args
        self.records = []
        self.lock = threading.Lock()
        self.started = time.time()
        self.runs = {}
        self.finish_lock = threading.Lock()  # tracks finish runs from their own threads
        self.paired = set()  # pairs (loss, resume, scaling) already recorded

    def add(self, record):
        with self.lock:
            record.setdefault("time_s", round(time.time() - self.started, 1))
            self.records.append(record)
            write_jsonl(os.path.join(self.args.out_dir, "results.jsonl"), self.records)
        status = record.get("status") or ("ok" if record.get("ok") else "FAILED" if record.get("ok") is False else "")
        what = " ".join(str(record[k]) for k in ("section", "name") if k in record)
        print(f"[{record['time_s']:6.1f}s] {what}: {status}"
              + (f"  [{record['error']}]" if record.get("error") and status != "ok" else ""), flush=True)

    def finish(self, run):
        with self.finish_lock:
            self.runs[run.name] = run
            getattr(self, f"record_{run.section}")(run)

    def _pair_ready(self, pair, names):
        """True once, when every run of the pair has finished."""
        if pair in self.paired or any(name not in self.runs for name in names):
            return False
        self.paired.add(pair)
        return True

    def _base(self, run):
        r = run.result
        rec = {"section": run.section, "name": run.name}
        rec.update(run.meta)
        for key in ("rc", "error", "num_updates", "params", "params_trained", "unused_parameters",
                    "unused_parameter_indices", "wall_s", "log", "launch", "command", "status"):
            if key in r:
                rec[key] = r[key]
        return rec

    def record_ddp(self, run):
        rec = self._base(run)
        r = run.result
        if r.get("status") == "skipped":
            self.add(rec)
            return
        expected = run.meta.get("expected_updates")
        rec["ok"] = r.get("rc") == 0 and r.get("num_updates") == expected
        losses = [x for x in r.get("losses", []) if isinstance(x, float)]
        if losses:
            rec["first_loss"], rec["last_loss"] = losses[0], losses[-1]
        if rec["ok"] is False and not rec.get("error"):
            rec["error"] = f"{r.get('num_updates')} updates of {expected}"
        self.add(rec)

    def record_control(self, run):
        rec = self._base(run)
        r = run.result
        if r.get("status") == "skipped":
            self.add(rec)
            return
        trained = r.get("rc") == 0 and r.get("num_updates") == run.meta.get("expected_updates")
        rec["trained"] = trained
        if run.meta["expect"] == "ddp_unused_error":
            rec["as_expected"] = not trained and DDP_UNUSED_ERROR in (r.get("error") or "")
            rec["failed_at_update"] = r.get("num_updates", 0) + 1 if not trained else None
        else:
            rec["as_expected"] = trained
        rec["ok"] = rec["as_expected"]
        self.add(rec)

    def record_precision(self, run):
        rec = self._base(run)
        r = run.result
        if r.get("status") == "skipped":
            self.add(rec)
            return
        entries, text = r.get("entries", []), r.get("text", "")
        losses = [e.get("loss") for e in entries]
        numeric = [x for x in losses if isinstance(x, float)]
        rec["first_loss"] = numeric[0] if numeric else None
        rec["final_loss"] = numeric[-1] if numeric else None
        rec["losses"] = [[int(e["num_updates"]), e.get("loss")] for e in entries if "num_updates" in e]
        rec["loss_scale"] = [[int(e["num_updates"]), e["loss_scale"]] for e in entries
                             if "loss_scale" in e and "num_updates" in e]
        valid = json_records(text).get("valid", [])
        rec["final_valid_loss"] = float(valid[-1]["valid_loss"]) if valid and "valid_loss" in valid[-1] else None
        overflow = [line.strip()[-160:] for line in text.splitlines() if _OVERFLOW in line]
        rec["overflow_notes"] = len(overflow)
        rec["overflow_examples"] = overflow[:5]
        rec["min_loss_scale_reached"] = _MIN_SCALE in text
        rec["nan_or_inf_loss"] = any(not isinstance(x, float) or x != x or x in (float("inf"), float("-inf"))
                                     for x in losses)
        wall = [e.get("train_wall") for e in entries]
        rec["ok"] = (r.get("rc") == 0 and r.get("num_updates") == run.meta["expected_updates"]
                     and not rec["min_loss_scale_reached"] and not rec["nan_or_inf_loss"])
        if wall and isinstance(wall[-1], float):
            rec["train_wall_s"] = wall[-1]
        self.add(rec)

    @staticmethod
    def _tag_fields(rec, tag, result, **keys):
        """One run of a pair: its rc, error and log, and each of ``keys`` (name=default), as NAME_TAG."""
        rec[f"rc_{tag}"] = result.get("rc")
        rec[f"error_{tag}"] = result.get("error") or result.get("status")
        rec[f"log_{tag}"] = result.get("log")
        for key, default in keys.items():
            rec[f"{key}_{tag}"] = result.get(key, default)

    def _compare_losses(self, rec, first, second, expected):
        """Two runs' per-update losses, compared at the updates both logged: updates_compared,
        max_abs_diff (and mean), tolerance in ``rec``; returns ({update: loss} of each, whether every
        expected update agrees)."""
        a = dict(zip(first.get("updates", []), first.get("losses", [])))
        b = dict(zip(second.get("updates", []), second.get("losses", [])))
        diffs = [abs(a[u] - b[u]) for u in sorted(set(a) & set(b)) if isinstance(a[u], float) and isinstance(b[u], float)]
        rec["updates_compared"] = len(diffs)
        rec["max_abs_diff"] = max(diffs) if diffs else None
        rec["mean_abs_diff"] = sum(diffs) / len(diffs) if diffs else None
        rec["tolerance"] = self.args.loss_tolerance
        return a, b, bool(diffs) and len(diffs) == expected and rec["max_abs_diff"] <= self.args.loss_tolerance

    def record_loss(self, run):
        pair = run.meta["pair"]
        if not self._pair_ready(pair, (pair + "_1gpu", pair + "_2gpu")):
            return
        one, two = self.runs[pair + "_1gpu"], self.runs[pair + "_2gpu"]
        rec = {"section": "loss", "name": pair, "unit": "process" if self.args.cpu else "GPU"}
        rec.update({k: v for k, v in two.meta.items() if k not in ("pair", "world")})
        rec["batch_1gpu"], rec["batch_per_gpu_2gpu"] = one.meta["batch"], two.meta["batch"]
        rec.pop("batch", None)
        for tag, r in (("1gpu", one.result), ("2gpu", two.result)):
            self._tag_fields(rec, tag, r, losses=[], command=None)
        expected = one.meta["expected_updates"]
        _, _, rec["ok"] = self._compare_losses(rec, one.result, two.result, expected)
        if not rec["ok"]:
            rec["error"] = rec["error_1gpu"] or rec["error_2gpu"] or (
                f"compared {rec['updates_compared']} of {expected} updates" if rec["updates_compared"] != expected
                else "losses differ")
        self.add(rec)

    def record_resume(self, run):
        pair = run.meta["pair"]
        if not self._pair_ready(pair, (pair + "_whole", pair + "_stopped")):
            return
        whole, cut = self.runs[pair + "_whole"], self.runs[pair + "_stopped"]
        rec = {"section": "resume", "name": pair, "unit": "process" if self.args.cpu else "GPU"}
        rec.update({k: v for k, v in cut.meta.items() if k not in ("pair",)})
        for tag, r in (("whole", whole.result), ("stopped", cut.result)):
            self._tag_fields(rec, tag, r, losses=[])
        for key in ("part1_stopped", "part1_max_update", "part2_first_update", "resumed_from_checkpoint_last",
                    "log_part2", "command"):
            rec[key] = cut.result.get(key)
        expected = cut.meta["expected_updates"]
        a, b, agree = self._compare_losses(rec, whole.result, cut.result, expected)
        rec["max_abs_diff_after_restart"] = max(
            (abs(a[u] - b[u]) for u in b if u > cut.meta["stop_at"] and u in a
             and isinstance(a[u], float) and isinstance(b[u], float)), default=None)
        rec["ok"] = (agree and rec["resumed_from_checkpoint_last"]
                     and rec["part2_first_update"] == cut.meta["stop_at"] + 1)
        if not rec["ok"]:
            rec["error"] = rec["error_whole"] or rec["error_stopped"] or (
                f"compared {rec['updates_compared']} of {expected} updates" if rec["updates_compared"] != expected else
                "the restart did not continue at its checkpoint" if rec["part2_first_update"] != cut.meta["stop_at"] + 1
                else "losses differ")
        self.add(rec)

    def record_scaling(self, run):
        if not self._pair_ready("scaling", ("scaling_1gpu", "scaling_2gpu")):
            return
        one, two = self.runs["scaling_1gpu"], self.runs["scaling_2gpu"]
        rec = {"section": "scaling", "name": "scaling"}
        rec.update({k: v for k, v in two.meta.items() if k not in ("world",)})
        skip = self.args.scaling_skip_intervals
        for tag, r in (("1gpu", one.result), ("2gpu", two.result)):
            wps = [e["wps"] for e in r.get("entries", []) if isinstance(e.get("wps"), float)][skip:]
            rec[f"wps_{tag}_intervals"] = wps
            rec[f"wps_{tag}"] = statistics.median(wps) if wps else None
            self._tag_fields(rec, tag, r, command=None, wall_s=None)
        if rec["wps_1gpu"] and rec["wps_2gpu"]:
            rec["efficiency"] = round(rec["wps_2gpu"] / (2 * rec["wps_1gpu"]), 4)
            rec["ok"] = True
        else:
            rec["efficiency"] = None
            rec["ok"] = False
            rec["error"] = rec["error_1gpu"] or rec["error_2gpu"] or "no words/s after the skipped intervals"
        self.add(rec)


# ----------------------------------------------------------------------------- summary


def _fmt(x, spec="{:.3f}"):
    return "" if x is None else spec.format(x) if isinstance(x, (int, float)) else str(x)


def summary(records, env):
    lines = ["# DDP / mixed-precision check", "",
             f"{env.get('time_utc', '')}: {env.get('gpu', 'CPU')} x {env.get('gpu_count', 0)}, torch {env.get('torch', '')}, "
             f"fairseq {env.get('fairseq-fixed_version', env.get('fairseq_version', ''))}", ""]
    ddp = [r for r in records if r["section"] in ("ddp", "control")]
    if ddp:
        lines += ["## ddp (world size 2, no --find-unused-parameters)", "",
                  "| run | backend | ok | updates | trained / total params | unused parameters | error |",
                  "|---|---|---|---|---|---|---|"]
        for r in ddp:
            params = f"{r['params_trained']:,} / {r['params']:,}" if "params" in r else ""
            ok = r.get("status") or ("yes" if r.get("ok") else "no")
            if r["section"] == "control" and "as_expected" in r:
                ok = f"{'as expected' if r['as_expected'] else 'NOT as expected'}: {r.get('expect')}"
            lines.append(f"| {r['name']} | {r.get('backend', '')} | {ok} | {r.get('num_updates', '')} | {params} | "
                         f"{(r.get('unused_parameters') or r.get('unused_parameter_indices') or '')[:80]} | "
                         f"{(r.get('error') or '').replace('|', '/')[:160]} |")
        lines.append("")
    for r in (r for r in records if r["section"] == "loss"):
        unit, units = ("process", "processes") if r.get("unit") == "process" else ("GPU", "GPUs")
        lines += [f"## loss: 1 {unit} x batch {r.get('batch_1gpu')} vs 2 {units} x batch {r.get('batch_per_gpu_2gpu')} "
                  f"({r.get('mode')}, {r.get('precision')})", "",
                  f"max |diff| {_fmt(r.get('max_abs_diff'), '{:.4f}')} over {r.get('updates_compared')} updates "
                  f"(mean {_fmt(r.get('mean_abs_diff'), '{:.4f}')}, tolerance {r.get('tolerance')}): "
                  f"{'ok' if r.get('ok') else 'FAILED ' + str(r.get('error'))}", "",
                  f"| update | 1 {unit} | 2 {units} |", "|---|---|---|"]
        for u, (a, b) in enumerate(zip(r.get("losses_1gpu", []), r.get("losses_2gpu", [])), 1):
            lines.append(f"| {u} | {a} | {b} |")
        lines.append("")
    for r in (r for r in records if r["section"] == "resume"):
        lines += [f"## resume: 2 {'processes' if r.get('unit') == 'process' else 'GPUs'}, stopped (SIGKILL) after the "
                  f"checkpoint at update {r.get('stop_at')}, the same command again", "",
                  f"restart loaded checkpoint_last.pt: {r.get('resumed_from_checkpoint_last')}, continued at update "
                  f"{r.get('part2_first_update')}; max |diff| against the uninterrupted run "
                  f"{_fmt(r.get('max_abs_diff'), '{:.4f}')} over {r.get('updates_compared')} updates "
                  f"(after the restart {_fmt(r.get('max_abs_diff_after_restart'), '{:.4f}')}): "
                  f"{'ok' if r.get('ok') else 'FAILED ' + str(r.get('error'))}", ""]
    for r in (r for r in records if r["section"] == "scaling"):
        lines += ["## scaling", "",
                  f"{r.get('arch')} n={r.get('n')} k={r.get('k')} batch {r.get('batch_per_gpu')}/GPU, {r.get('precision')}, "
                  f"task {r.get('task')}: words/s 1 GPU {_fmt(r.get('wps_1gpu'), '{:.0f}')}, 2 GPUs "
                  f"{_fmt(r.get('wps_2gpu'), '{:.0f}')}, efficiency {_fmt(r.get('efficiency'), '{:.3f}')}"
                  + (f" [{r.get('error')}]" if r.get("error") else ""), ""]
    prec = [r for r in records if r["section"] == "precision"]
    if prec:
        lines += ["## precision", "", "| run | ok | updates | first loss | final loss | final valid loss | "
                  "loss scale first -> last (min) | overflow notes | min scale reached | NaN | error |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in prec:
            scales = [s for _, s in r.get("loss_scale", [])]
            scale = f"{scales[0]:g} -> {scales[-1]:g} ({min(scales):g})" if scales else ""
            ok = r.get("status") or ("yes" if r.get("ok") else "no")
            lines.append(f"| {r['name']} | {ok} | {r.get('num_updates', '')} | {_fmt(r.get('first_loss'))} | "
                         f"{_fmt(r.get('final_loss'))} | {_fmt(r.get('final_valid_loss'))} | {scale} | "
                         f"{r.get('overflow_notes', '')} | {r.get('min_loss_scale_reached', '')} | "
                         f"{r.get('nan_or_inf_loss', '')} | {(r.get('error') or '').replace('|', '/')[:160]} |")
        lines.append("")
    return "\n".join(lines) + "\n"
