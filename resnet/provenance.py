"""Where a number came from: the device, the code's commit, the versions and the numerical settings in force.

Recorded in every run's ``run.json`` and beside every benchmark, so that a result can be traced and rerun.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3', or 'cpu (x86_64, 2 cores)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def git_commit() -> str:
    """The checkout's commit, with '-dirty' when tracked files differ from it; 'unknown' outside git. A copy of
    a tree without its .git (a copy on another machine) names its commit in RESNET_GIT_COMMIT."""
    if os.environ.get("RESNET_GIT_COMMIT"):
        return os.environ["RESNET_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict:
    """torch, CUDA and cuDNN versions (None where not built with them)."""
    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}


def numerics(device: torch.device) -> dict:
    """The settings that change a run's arithmetic beyond its own: threads on the CPU (float sums depend on how
    work is split, so a resume is bit-for-bit only with as many), TF32 on CUDA ("fp32" convolutions are TF32
    under cuDNN's default) and cuDNN's algorithm choice."""
    if device.type != "cuda":
        return {"cpu_threads": torch.get_num_threads()}
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic}
