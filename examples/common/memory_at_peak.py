"""What holds GPU memory at the peak of a run: a CUDA allocator snapshot replayed to its peak.

    BENCH_MEMORY_SNAPSHOT=lin.pickle python -m examples.common.train_with_peak_memory DATA ... --max-update 3
    python -m examples.common.memory_at_peak lin.pickle [--top 25]

The snapshot (``torch.cuda.memory._dump_snapshot``) keeps the last N allocator events. Replaying
them gives the bytes allocated *within that window* and still live, at each event; at the highest
point the live blocks are grouped by the code that allocated them: the innermost stack frame in
linformer_plugin or fairseq (a fairseq layer's own line, not the plugin's encoder that called it;
never the training entry points every stack passes through), else the innermost frame at all.
Memory allocated before the window (parameters, optimizer state) is not in the replay, so the
numbers are what a step adds: activations, kept tensors and temporaries, which is what differs
between two attention variants.
"""

import argparse
import pickle
from collections import defaultdict

OURS, FAIRSEQ = "linformer_plugin", "fairseq"
# frames on every stack of a run (the training entry points): never the name of an allocation
WRAPPERS = ("train_with_peak_memory", "linformer_plugin/fairseq_fixes.py", "fairseq_cli/")


def site(frames):
    """file:line function of the frame that best names who allocated (frames: innermost first)."""
    def fmt(f):
        name = f.get("filename", "?").split("site-packages/")[-1]
        for marker in (OURS + "/", FAIRSEQ + "/"):  # a repository checkout: from the package on
            if marker in name:
                name = name[name.index(marker):]
                break
        return f"{name}:{f.get('line', 0)} {f.get('name', '?')}"

    for frame in frames:  # innermost first: the plugin's or fairseq's line nearest the allocation
        name = frame.get("filename", "")
        if (OURS in name or FAIRSEQ in name) and not any(w in name for w in WRAPPERS):
            return fmt(frame)
    for frame in frames:  # C++ stacks (stacks="all"; the autograd engine's thread has no Python): the op
        if "at::native::" in frame.get("name", ""):
            return fmt(frame)
    return fmt(frames[0]) if frames else "(no stack)"


def _replay(events, stop=None):
    """Live blocks {addr: (size, frames)} after events[:stop], and the index of the event after
    which the live total was highest, and that total."""
    live, total, peak, peak_at = {}, 0, 0, 0
    for i, event in enumerate(events[:stop]):
        if event["action"] == "alloc":
            live[event["addr"]] = (event["size"], event.get("frames") or [])
            total += event["size"]
            if total > peak:
                peak, peak_at = total, i + 1
        elif event["action"] == "free_completed" and event["addr"] in live:
            total -= live.pop(event["addr"])[0]
    return live, peak, peak_at


def replay(events):
    """(peak bytes, live blocks at the peak {addr: (size, frames)}) of one device's trace: one pass
    finds the peak, a second stops there (no copy of the live set at every new high)."""
    _, peak, peak_at = _replay(events)
    return peak, _replay(events, peak_at)[0]


def peak_sites(snapshot, top=25):
    """Per device with events: {"device", "events", "peak_mib", "sites": [{"mib", "blocks", "site"}]},
    the sites that hold the most at the peak first."""
    devices = []
    for device, events in enumerate(snapshot.get("device_traces", [])):
        if not events:
            continue
        peak, blocks = replay(events)
        by_site = defaultdict(lambda: [0, 0])
        for size, frames in blocks.values():
            entry = by_site[site(frames)]
            entry[0] += size
            entry[1] += 1
        ranked = sorted(by_site.items(), key=lambda kv: -kv[1][0])[:top]
        devices.append({"device": device, "events": len(events), "peak_mib": round(peak / 2**20, 1),
                        "sites": [{"mib": round(size / 2**20, 1), "blocks": count, "site": name}
                                  for name, (size, count) in ranked]})
    return devices


def summarize(snapshot, top=25):
    lines = []
    for d in peak_sites(snapshot, top):
        lines.append(f"device {d['device']}: {d['events']} events; peak of what they allocate: {d['peak_mib']:.1f} MiB")
        lines.append("| MiB | blocks | allocated at |")
        lines.append("|---|---|---|")
        lines += [f"| {s['mib']:.1f} | {s['blocks']} | {s['site']} |" for s in d["sites"]]
    return "\n".join(lines) if lines else "no allocator events in this snapshot"


def load_snapshot(path):
    try:
        with open(path, "rb") as f:
            snapshot = pickle.load(f)  # noqa: S301  (a file the user made with _dump_snapshot)
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise SystemExit(f"cannot read {path} as a CUDA memory snapshot: {exc}")
    if not isinstance(snapshot, dict) or "device_traces" not in snapshot:
        raise SystemExit(f"{path} is not a CUDA memory snapshot (no device_traces); make one with "
                         "BENCH_MEMORY_SNAPSHOT=PATH python -m examples.common.train_with_peak_memory ...")
    return snapshot


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("snapshot", help="a pickle from torch.cuda.memory._dump_snapshot")
    p.add_argument("--top", type=int, default=25, help="how many allocation sites to list")
    args = p.parse_args(argv)
    snapshot = load_snapshot(args.snapshot)
    print(summarize(snapshot, args.top))


if __name__ == "__main__":
    main()
