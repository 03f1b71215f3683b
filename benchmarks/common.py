"""What every benchmark records beside its figures: the device, the versions, the date, the commit."""
from __future__ import annotations

import platform
import time

import torch

from resnet.report import markdown_table  # noqa: F401 - the benchmarks' table format
from resnet.training import _device_name, _git_commit, resolve_device


def environment(device: str = "auto") -> dict:
    dev = resolve_device(device)
    return {"date": time.strftime("%Y-%m-%d"), "device": _device_name(dev), "torch": torch.__version__,
            "python": platform.python_version(), "git_commit": _git_commit()}

