"""The CUDA path, on a GPU: the checks of benchmarks/gpu_check.py as tests (skipped without CUDA; on the CPU the
same checks run in the gpu_check smoke test)."""
import dataclasses

import pytest
import torch

from benchmarks import gpu_check
from resnet import TrainConfig
from resnet.data import device_data

from .conftest import SMALL_SOURCE

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")
BASE = gpu_check.tiny(TrainConfig(data=str(SMALL_SOURCE), device="cuda"), depth=8)


@pytest.fixture(scope="module")
def cuda_data():
    return device_data(BASE, CUDA)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("net, depth", [("plain", 20), ("resnet", 20), ("resnet", 110)])
def test_graph_replay_equals_eager(cuda_data, precision, net, depth):
    gpu_check.check_graph_equals_eager(dataclasses.replace(BASE, net=net, depth=depth, precision=precision), cuda_data)


def test_resume_on_cuda_is_bit_identical(cuda_data):
    gpu_check.check_resume(BASE, cuda_data)


def test_runs_together_on_cuda_equal_each_alone(cuda_data):
    gpu_check.check_together(BASE, cuda_data)


def test_cuda_generators_repeat_and_restore():
    gpu_check.check_generators(CUDA)


def test_bf16_predicts_as_fp32(cuda_data):
    gpu_check.check_bf16(BASE, cuda_data)


def test_a_parallel_sweep_on_a_cold_cache_trains_every_run():
    gpu_check.check_cold_cache_sweep(BASE)


def test_no_host_device_sync_between_evaluations(cuda_data):
    from resnet.sweeps import time_network

    for cuda_graph in (False, True):
        time_network(dataclasses.replace(BASE, cuda_graph=cuda_graph), cuda_data, 20, sync_check=True)


def test_auto_gives_every_network_between_one_and_the_most_places_on_the_gpu():
    from resnet.sweeps import measure_runs_per_gpu

    configs = [dataclasses.replace(BASE, net=n) for n in ("plain", "resnet")]
    choice = measure_runs_per_gpu(configs, most=4, iterations=3)
    assert set(choice) == {("plain", 8), ("resnet", 8)} and all(1 <= k <= 4 for k in choice.values())
