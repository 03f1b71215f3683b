"""A network outside training: the device a run names, and the network's loss and error on images (eval mode, in
the run's precision). The trainer evaluates with it at each evaluation point, and so do a saved run's re-check,
the cost estimate and the benchmarks, without the training loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .steps import autocast


def resolve_device(name: str) -> torch.device:
    """The device ``name`` means ('auto': CUDA where there is a GPU, else the CPU); CUDA asked for without one is
    an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here")
    return torch.device(name)


@torch.inference_mode()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32",
             batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, error %) of ``model`` in eval mode on the given images."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        with autocast(x.device, precision):
            logits = model(x[i:i + batch_size]).float()
        t = y[i:i + batch_size]
        sums += torch.stack([F.cross_entropy(logits, t, reduction="sum").double(),
                             (logits.argmax(1) != t).sum().double()])
    model.train(was_training)
    loss, wrong = sums.tolist()
    return loss / len(x), 100.0 * wrong / len(x)


@torch.inference_mode()
def predictions(model, x: torch.Tensor, precision: str = "fp32", batch_size: int = 1000) -> torch.Tensor:
    """The class ``model`` in eval mode predicts for each of the given images."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        with autocast(x.device, precision):
            out.append(model(x[i:i + batch_size]).argmax(1))
    model.train(was_training)
    return torch.cat(out)
