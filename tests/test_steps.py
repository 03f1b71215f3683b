"""The training step, eager and graphed. On the CPU there is no CUDA graph: the graphed step runs the same
operations in the same order through its static buffers, so it must match the eager step exactly (bit for bit);
the CUDA graph itself is compared with the eager step on a GPU by benchmarks/gpu_check.py (and tests/test_cuda.py)."""

import pytest
import torch

from resnet import TrainConfig
from resnet.data import Batches, random_crop_flip
from resnet.steps import GraphedStep, Step, make_step
from resnet.trainer import build, learning_rate


def _train_steps(cfg: TrainConfig, data, iterations: int, graphed: bool = False):
    """(per-iteration wrong counts, the loss/error window every 50 iterations, final weights) of ``iterations``
    updates of ``cfg``, with its lr rule (warm-up included)."""
    model, optimizer = build(cfg, torch.device("cpu"))
    batches = Batches(data, cfg.batch_size, cfg.seed)  # laid out as the trainer lays it out on the CPU
    window = torch.zeros(2, dtype=torch.float64)
    update = make_step(cfg, model, optimizer, window, graphed=graphed)
    wrongs, windows = [], []
    for it in range(iterations):
        lr = learning_rate(it, cfg, warming_up=it < 30)
        wrongs.append(update(*next(batches), lr).item())
        if (it + 1) % 50 == 0:
            windows.append(window.tolist())
            window.zero_()
    return wrongs, windows, {k: v.clone() for k, v in model.state_dict().items()}, update


def test_steps_are_graphed_by_default_on_cuda_and_eager_on_the_cpu(monkeypatch):
    import types

    import resnet.steps

    model, optimizer = build(TrainConfig(depth=8), torch.device("cpu"))
    cpu = torch.zeros(2, dtype=torch.float64)
    assert TrainConfig().cuda_graph and type(make_step(TrainConfig(), model, optimizer, cpu)) is Step
    # on CUDA (a window there, as make_step sees it; the step itself is not built without a GPU)
    monkeypatch.setattr(resnet.steps, "GraphedStep", lambda *a: "graphed")
    on_cuda = types.SimpleNamespace(device=torch.device("cuda"))
    assert make_step(TrainConfig(), model, optimizer, on_cuda) == "graphed"
    assert type(make_step(TrainConfig(cuda_graph=False), model, optimizer, on_cuda)) is Step


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_graphed_step_trains_exactly_as_the_eager_step(small_data, precision, monkeypatch):
    recorded = []
    real_record = GraphedStep._record
    monkeypatch.setattr(GraphedStep, "_record", lambda self: recorded.append(self.optimizer.param_groups[0]["lr"])
                        or real_record(self))
    cfg = TrainConfig(depth=8, batch_size=32, milestones=(100, 160), iterations=200, precision=precision, device="cpu")
    eager = _train_steps(cfg, small_data, 200)
    graphed = _train_steps(cfg, small_data, 200, graphed=True)
    assert isinstance(graphed[3], GraphedStep) and not isinstance(eager[3], GraphedStep)
    assert graphed[0] == eager[0] and graphed[1] == eager[1]
    assert all(torch.equal(graphed[2][k], eager[2][k]) for k in eager[2])
    # recorded once per lr after its eager start: the warm-up's 0.01, then 0.1, 0.01, 0.001 at the milestones
    assert recorded == pytest.approx([0.01, 0.1, 0.01, 0.001])
    assert eager[1][-1][1] < eager[1][0][1]  # and it learns: fewer errors in the last window than in the first


def test_the_recorded_region_never_reads_a_value_back_to_the_host(small_data, monkeypatch):
    # A CUDA graph cannot record a host synchronisation (.item(), .tolist(), a tensor in an `if`, a copy to the
    # CPU): here every such read raises while the graphed step runs its recorded region, as it would during capture.
    cfg = TrainConfig(depth=8, batch_size=32, device="cpu", precision="bf16")
    model, optimizer = build(cfg, torch.device("cpu"))
    update = make_step(cfg, model, optimizer, torch.zeros(2, dtype=torch.float64), graphed=True)
    x, y = random_crop_flip(small_data.train_x[:32], torch.Generator().manual_seed(0)).contiguous(), small_data.train_y[:32]
    for _ in range(GraphedStep.eager):
        update(x, y, 0.1)

    def host_read(*args, **kwargs):
        raise AssertionError("a host synchronisation inside the recorded region")

    for name in ("item", "tolist", "__bool__", "numpy", "cpu", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    update._update()  # the region a graph records
    update(x, y, 0.01)  # and a call that records again (a new lr) and replays
    monkeypatch.undo()
    assert update.calls == GraphedStep.eager + 1
