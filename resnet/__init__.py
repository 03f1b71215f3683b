"""Paper-faithful CIFAR-10 ResNets and plain networks (He et al. 2016, section 4.2).

The public API, what a study needs: the settings and the training (``TrainConfig``, ``train``, ``sweep``, the
notebook's ``study_from_environment`` and the cost estimate), the data and the networks (``load_cifar10``,
``build_model``), the results (``load_runs``, ``by_study``, ``load_run``, ``pretrained``, ``evaluate``,
``evaluate_run``) and the paper's table, claims and figures. Everything else is in its module (``resnet.data``,
``resnet.models``, ...). The figures (matplotlib) and tables (pandas) are imported on first use, so loading a model
(torch.hub) needs torch alone.
"""
from .config import TrainConfig
from .data import load_cifar10
from .models import build_model
from .results import by_study, evaluate_run, load_run, load_runs, pretrained
from .steps import evaluate
from .study import study_from_environment
from .sweeps import estimate_cost, format_cost, sweep
from .trainer import train

# imported on first use: matplotlib (figures) and pandas (tables) are not needed to train or to load a model
_LAZY = {"figures": ("draw_figure7", "figure7_runs", "plot_studies"),
         "compare": ("error_table", "findings", "format_table", "response_findings")}


def __getattr__(name: str):
    for module, names in _LAZY.items():
        if name in names:
            import importlib

            return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module 'resnet' has no attribute {name!r}")


__all__ = [
    "TrainConfig", "train", "sweep", "study_from_environment", "estimate_cost", "format_cost",
    "load_cifar10", "build_model",
    "load_runs", "by_study", "load_run", "pretrained", "evaluate", "evaluate_run",
    *(n for names in _LAZY.values() for n in names),
]
