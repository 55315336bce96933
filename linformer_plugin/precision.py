"""``fairseq-train --bf16`` on a GPU (or CPU) with fairseq 0.12.

fairseq 0.12's ``parse_args_and_arch`` turns ``--bf16`` into ``--bf16 --tpu`` (fairseq issue #4696),
so ``fairseq-train --bf16`` asks torch_xla for a TPU and stops ('NoneType' object has no attribute
'xla_device'). ``fairseq-hydra-train common.bf16=true`` is not affected. When torch_xla is not
installed, a TPU run cannot be what the user meant: the run's config gets ``tpu=False`` back
before fairseq's ``call_main`` starts it, and it trains in bfloat16 on its own device.
"""

import importlib.util
import logging

logger = logging.getLogger(__name__)


def _clear_tpu(cfg):
    for key in list(cfg.keys()):
        group = cfg[key]
        if hasattr(group, "keys") and "tpu" in group:
            group["tpu"] = False
        elif getattr(group, "tpu", False):  # the model's argparse Namespace
            group.tpu = False


def keep_bf16_off_tpu():
    """Wrap fairseq's ``distributed_utils.call_main`` (idempotent)."""
    from fairseq.distributed import utils as distributed_utils

    call_main = distributed_utils.call_main
    if getattr(call_main, "keeps_bf16_off_tpu", False):
        return

    def call_main_without_unasked_tpu(cfg, main, **kwargs):
        common = getattr(cfg, "common", None)
        if (common is not None and common.bf16 and common.tpu
                and importlib.util.find_spec("torch_xla") is None):
            logger.info("--bf16: training in bfloat16 on this run's device (fairseq 0.12 turns --bf16 "
                        "into --tpu, fairseq issue #4696, and torch_xla is not installed)")
            _clear_tpu(cfg)
        return call_main(cfg, main, **kwargs)

    call_main_without_unasked_tpu.keeps_bf16_off_tpu = True
    distributed_utils.call_main = call_main_without_unasked_tpu
