"""Paper-faithful CIFAR-10 ResNets and plain networks (He et al. 2016, section 4.2).

Public API: the settings, the data, the networks, the trainer, results, the cost estimate and figures. The
figures (matplotlib) are imported on first use, so loading a model (torch.hub) needs torch alone.
"""
from .config import TrainConfig
from .cost import estimate_cost, format_cost
from .batches import DeviceData, crop_flip, random_crop_flip, to_device
from .data import CLASSES, Cifar10, DataError, load_cifar10
from .models import CifarNet, build_model, capture_responses, count_parameters, from_peer_checkpoint
from .results import ResultsError, by_study, load_runs
from .runfolder import RunConflict, RunLocked
from .runs import LoadedRun, evaluate_run, find_run, load_run, pretrained
from .study import Study, study_from_environment
from .sweeps import sweep
from .evaluation import evaluate
from .trainer import TrainingDiverged, learning_rate, train

# imported on first use: matplotlib (figures) and pandas (tables) are not needed to train or to load a model
_LAZY = {"figures": ("draw_figure7", "figure7_data", "figure7_runs", "layer_response_std", "plot_figure6",
                     "plot_figure7", "plot_shortcuts", "plot_studies"),
         "compare": ("error_table", "findings", "format_table", "paper_protocol", "response_findings")}


def __getattr__(name: str):
    for module, names in _LAZY.items():
        if name in names:
            import importlib

            return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module 'resnet' has no attribute {name!r}")


__all__ = [
    "TrainConfig", "estimate_cost", "format_cost",
    "CLASSES", "Cifar10", "DataError", "DeviceData", "crop_flip", "load_cifar10", "random_crop_flip", "to_device",
    "CifarNet", "build_model", "capture_responses", "count_parameters", "from_peer_checkpoint",
    "ResultsError", "by_study", "load_runs",
    "Study", "study_from_environment", "RunConflict", "RunLocked", "LoadedRun", "evaluate_run", "find_run", "load_run", "pretrained", "sweep",
    "TrainingDiverged", "evaluate", "learning_rate", "train", *(n for names in _LAZY.values() for n in names),
]
