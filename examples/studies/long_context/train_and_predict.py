"""fairseq-train, then the per-row predictions of its best checkpoint, in one process (one start-up
of torch and fairseq instead of two):

    python -m examples.studies.long_context.train_and_predict CHECKPOINT_BEST DATA_BIN OUT.json [--cpu] \\
        -- <fairseq-train args>

Training runs as ``examples.common.train_with_peak_memory`` (its peak GPU memory printed when
training ends, before predicting); then, if CHECKPOINT_BEST exists, the rows of valid and test of
DATA_BIN are predicted with it (``examples.studies.long_context.predict``) and written to OUT.json.
"""

import json
import os
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    mine, train_args = argv[:split], argv[split + 1:]
    cpu = "--cpu" in mine
    mine = [a for a in mine if a != "--cpu"]
    if len(mine) != 3:
        raise SystemExit(__doc__)
    checkpoint, data, out = mine

    from examples.common import train_with_peak_memory

    sys.argv = [sys.argv[0]] + train_args
    train_with_peak_memory.main()  # raises (non-zero exit) if training fails
    if not os.path.isfile(checkpoint):
        print(f"PREDICT_SKIPPED=no {checkpoint}", flush=True)
        return
    from examples.studies.long_context.predict import predict
    from linformer_plugin.io import atomic_write_text

    result = predict(checkpoint, data, ["valid", "test"], cpu=cpu)
    atomic_write_text(out, json.dumps({"checkpoint": checkpoint, "subsets": result}) + "\n")
    print("PREDICTED " + " ".join(f"{subset}={r['accuracy']}" for subset, r in result.items()), flush=True)


if __name__ == "__main__":
    main()
