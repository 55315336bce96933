"""What ran where: the record (env.json) every benchmark and study writes beside its results.

``python -m examples.common.environment`` prints the torch and GPU facts as JSON: the harnesses ask
a child process, since a CUDA context in the harness would hold GPU memory through all its runs.
"""

import importlib.metadata
import json
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone

from examples.common.fairseq_commands import REPO_ROOT, child_env
from examples.common.reference import fairseq_package_dir, reference_user_dir


def visible_gpus():
    """The GPU ids a study's jobs may use: CUDA_VISIBLE_DEVICES if set, else every GPU torch sees."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        import torch

        visible = ",".join(str(i) for i in range(torch.cuda.device_count()))
    return [d for d in visible.split(",") if d.strip()]


def module_command(module, argv, python=sys.executable):
    """The command line that runs ``module`` (e.g. a harness's ``__spec__.name``) with argv."""
    return shlex.join([python, "-m", module] + [str(a) for a in argv])


def torch_facts(gpu=True):
    """torch's versions, threads and, with ``gpu`` and CUDA available, the first GPU."""
    import torch

    facts = {"torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             "cpu_threads": torch.get_num_threads()}
    if gpu and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts.update(gpu=p.name, gpu_memory_mib=p.total_memory // 2**20, gpu_capability=f"{p.major}.{p.minor}",
                     gpu_count=torch.cuda.device_count())
    return facts


def environment(command, device, python=sys.executable, in_child=True):
    """The record: when, the command, Python, platform, device, fairseq (where, which version, its
    reference Linformer), torch and the GPU. ``in_child``: torch's facts from a child process running
    ``python`` (the harness's runs use that Python too); else from this process, GPU facts only for a
    CUDA device."""
    env = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "fairseq_dir": fairseq_package_dir(),
        "fairseq_linformer_src": reference_user_dir(),
    }
    for dist in ("fairseq", "fairseq-fixed", "torch"):
        try:
            env[f"{dist}_version"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if not in_child:
        env.update(torch_facts(gpu=str(device).startswith("cuda")))
        return env
    try:
        out = subprocess.run([python, "-m", "examples.common.environment"], capture_output=True, text=True,
                             timeout=120, cwd=REPO_ROOT, env=child_env())
        env.update(json.loads(out.stdout.strip().splitlines()[-1]))
    except Exception as exc:  # noqa: BLE001  (env.json is informative only)
        env["probe_error"] = repr(exc)
    return env


if __name__ == "__main__":
    print(json.dumps(torch_facts()))
