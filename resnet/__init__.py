"""Paper-faithful CIFAR-10 ResNets and plain networks (He et al. 2016, section 4.2).

Public API: the settings, the data, the networks, the trainer, results, the cost estimate and figures. The
figures (matplotlib) are imported on first use, so loading a model (torch.hub) needs torch alone.
"""
from .config import TrainConfig
from .cost import estimate_cost, format_cost
from .data import CLASSES, Cifar10, DataError, DeviceData, crop_flip, load_cifar10, random_crop_flip, to_device
from .models import CifarNet, build_model, capture_responses, count_parameters, from_peer_checkpoint
from .results import ResultsError, by_study, error_table, findings, format_table, load_runs
from .training import (RunConflict, RunLocked, TrainingDiverged, evaluate, evaluate_run, learning_rate,
                       load_weights, pretrained, sweep, train)

_FIGURES = ("figure7_runs", "layer_response_std", "plot_figure6", "plot_figure7", "plot_shortcuts", "plot_studies",
            "response_stds")


def __getattr__(name: str):
    if name in _FIGURES:
        from . import figures

        return getattr(figures, name)
    raise AttributeError(f"module 'resnet' has no attribute {name!r}")


__all__ = [
    "TrainConfig", "estimate_cost", "format_cost",
    "CLASSES", "Cifar10", "DataError", "DeviceData", "crop_flip", "load_cifar10", "random_crop_flip", "to_device",
    "CifarNet", "build_model", "capture_responses", "count_parameters", "from_peer_checkpoint",
    "ResultsError", "by_study", "error_table", "findings", "format_table", "load_runs",
    "RunConflict", "RunLocked", "TrainingDiverged", "evaluate", "evaluate_run", "learning_rate", "load_weights",
    "pretrained", "sweep", "train", *_FIGURES,
]
