"""What every benchmark records beside its figures: the device, the versions, the date, the commit."""
from __future__ import annotations

import platform
import time

import torch

from resnet.report import markdown_table  # noqa: F401 - the benchmarks' table format
from resnet.trainer import device_name, git_commit, versions
from resnet.steps import resolve_device


def environment(device: str = "auto") -> dict:
    dev = resolve_device(device)
    return {"date": time.strftime("%Y-%m-%d"), "device": device_name(dev), **versions(),
            "python": platform.python_version(), "git_commit": git_commit()}

