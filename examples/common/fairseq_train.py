"""``fairseq-train`` with two fixes for fairseq 0.12, and several runs in one process.

    python -m examples.common.fairseq_train <fairseq-train args> [::: <fairseq-train args> ...]

The fixes (none changes a CUDA run launched the usual way):

- data-parallel training on CPU (gloo): fairseq's ``pytorch_ddp``/``c10d`` backend passes
  ``device_ids=[device_id]`` to torch's DistributedDataParallel, which torch refuses for a module on
  the CPU; for a CPU module they are left out, as torch asks. (``legacy_ddp`` needs no fix.)
- torchrun without GPUs: under torchrun fairseq computes the device as ``rank %
  torch.cuda.device_count()``, a ZeroDivisionError on CPU; without GPUs the device id is 0.

Data-parallel ranks are started by torchrun or one by one with ``--distributed-world-size W
--distributed-rank R --distributed-init-method tcp://HOST:PORT --distributed-no-spawn`` (plus
``--distributed-backend gloo`` on CPU, ``--device-id R`` on GPUs): fairseq spawns processes only
for GPUs.

Each ``:::``-separated argument list is one run, started by fairseq's own ``cli_main`` in this
process, one after another: the interpreter, fairseq's imports and the process group are set up
once (fairseq skips ``init_process_group`` when it is already initialised), which makes a matrix of
short runs affordable. Around each run it prints ``@@RUN <i> BEGIN`` and ``@@RUN <i> END
rc=<status>``; a run that raises is reported (traceback, rc=1) and the next one starts. The exit
status is that of the first run that failed. Used by the multi-GPU check
(examples.studies.multi_gpu) and tests/test_distributed.py.

(``--bf16`` needs no fix here: with ``--user-dir linformer_plugin`` the plugin keeps it off fairseq
0.12's TPU path, see ``linformer_plugin/fairseq_fixes.py``.)
"""

import os
import sys
import traceback

RUN_SEPARATOR = ":::"


def split_runs(argv):
    runs, current = [], []
    for arg in argv:
        if arg == RUN_SEPARATOR:
            runs.append(current)
            current = []
        else:
            current.append(arg)
    runs.append(current)
    return [run for run in runs if run]


def allow_ddp_of_cpu_modules():
    import fairseq.models.distributed_fairseq_model as dfm
    import torch

    ddp = torch.nn.parallel.DistributedDataParallel

    class DistributedDataParallel(ddp):
        def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
            if all(p.device.type == "cpu" for p in module.parameters()):
                device_ids = output_device = None
            super().__init__(module, device_ids, output_device, *args, **kwargs)

    dfm.DistributedDataParallel = DistributedDataParallel


def allow_torchrun_without_gpus():
    import fairseq.distributed.utils as du
    import torch

    infer = du._infer_torch_distributed_launch_init

    def infer_torch_distributed_launch_init(cfg):
        if torch.cuda.device_count() > 0:
            return infer(cfg)
        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0
        cfg.distributed_no_spawn = True

    du._infer_torch_distributed_launch_init = infer_torch_distributed_launch_init


def main(argv=None):
    runs = split_runs(sys.argv[1:] if argv is None else argv)
    if not runs:
        raise SystemExit(__doc__)
    # fairseq_cli.train first: it sets up logging before fairseq's imports configure the root logger
    from fairseq_cli.train import cli_main

    allow_ddp_of_cpu_modules()
    allow_torchrun_without_gpus()
    worst = 0
    for i, args in enumerate(runs):
        print(f"@@RUN {i} BEGIN", flush=True)
        sys.argv = ["fairseq-train"] + args
        try:
            cli_main()
            rc = 0
        except SystemExit as exc:  # argparse errors, fairseq's own exits
            rc = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, flush=True)
        except BaseException:  # noqa: BLE001  (reported; the next run still starts)
            traceback.print_exc()
            sys.stderr.flush()
            rc = 1
        print(f"@@RUN {i} END rc={rc}", flush=True)
        worst = worst or rc
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return worst


if __name__ == "__main__":
    sys.exit(main())
