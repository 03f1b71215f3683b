"""Paper-faithful CIFAR-10 ResNets and plain networks (He et al. 2016, section 4.2).

Public API: the settings, the data, the networks, the trainer, results and figures.
"""
from .config import TrainConfig
from .data import CLASSES, Cifar10, DataError, DeviceData, crop_flip, load_cifar10, random_crop_flip, to_device
from .cost import estimate_cost, format_cost
from .figures import (figure7_runs, layer_response_std, plot_figure6, plot_figure7, plot_shortcuts, plot_studies,
                      response_stds)
from .models import CifarNet, build_model, capture_responses, count_parameters, from_peer_checkpoint
from .results import ResultsError, by_study, error_table, findings, format_table, load_runs
from .training import (RunConflict, TrainingDiverged, evaluate, evaluate_run, learning_rate, load_weights,
                    pretrained, sweep, train)

__all__ = [
    "TrainConfig", "CLASSES", "Cifar10", "DataError", "DeviceData", "crop_flip", "load_cifar10",
    "random_crop_flip", "to_device", "layer_response_std", "plot_figure6", "plot_figure7", "plot_shortcuts", "plot_studies", "by_study",
    "figure7_runs", "estimate_cost", "format_cost",
    "response_stds", "CifarNet", "build_model", "capture_responses", "count_parameters", "from_peer_checkpoint",
    "ResultsError", "error_table", "findings", "format_table", "load_runs", "RunConflict", "TrainingDiverged", "evaluate", "evaluate_run",
    "learning_rate", "load_weights", "pretrained", "sweep", "train",
]
