"""The training step: forward, loss, backward and the SGD update of one batch, run eagerly or replayed from a
CUDA graph.

Eagerly, a ResNet-20 step launches about 300 kernels and a ResNet-110 step about 1,600, each from Python: on a
GPU the small CIFAR networks are bound by those launches, not by arithmetic. ``GraphedStep`` records the step
once in a CUDA graph and replays it with one launch; the sampling and augmentation (a dozen kernels) stay eager
and feed the graph through static input buffers. It performs the same operations as the eager step, so it
trains the same run (``TrainConfig.cuda_graph`` is not part of a run's identity), and it is the default on CUDA.
The CPU has no graphs and steps eagerly; ``GraphedStep`` asked for there calls the same code directly, which is
how its logic is tested without a GPU.

A network outside training: the device a run names, and the network's loss and error on images (eval mode, in
the run's precision). The trainer evaluates with it at each evaluation point, and so do a saved run's re-check,
the cost estimate and the benchmarks, without the training loop.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F



# The memory layout of a run's weights and batches. A run trains in channels-last, the faster on CUDA (cuDNN) and on
# the CPU (oneDNN; benchmarks/cpu_layout.md), and keeps the layout it began in (the layout changes the order of the
# float sums, so a resume in another is not bit-for-bit the uninterrupted run).
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
LAYOUT = "channels_last"


def older_layout(device_type: str) -> str:
    """The layout of runs recorded before their layout was: channels-last on CUDA, contiguous on the CPU."""
    return "channels_last" if device_type == "cuda" else "contiguous"


def autocast(device: torch.device, precision: str, cache: bool = True):
    """bf16 autocast on ``device``, or nothing for fp32. ``cache=False`` inside a CUDA graph (a cached cast of a
    weight would be replayed stale)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def step(model, optimizer, x: torch.Tensor, y: torch.Tensor, precision: str, cache: bool = True
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD update on the batch (x, y); returns the (loss, logits), still on the device."""
    with autocast(x.device, precision, cache):
        logits = model(x)  # (B, 10)
        # under bf16 autocast the weights, BN's running statistics and the loss are fp32; BN's outputs are bf16
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


class Step:
    """The eager step. Called with a batch and the lr, it updates the model, adds the batch's (loss sum, wrong
    predictions) to ``window`` and returns the wrong predictions, all on the device (nothing waits for it)."""

    untimed = 1  # calls before the step's speed is steady (allocations, cuDNN's algorithm search)

    def __init__(self, model, optimizer, precision: str, window: torch.Tensor):
        self.model, self.optimizer, self.precision, self.window = model, optimizer, precision, window

    def set_lr(self, lr: float):
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        self.set_lr(lr)
        loss, logits = step(self.model, self.optimizer, x, y, self.precision)
        wrong = (logits.argmax(1) != y).sum().double()
        self.window += torch.stack([loss.detach().double() * len(y), wrong])
        return wrong


class GraphedStep(Step):
    """The same step, recorded once in a CUDA graph and replayed.

    The first ``eager`` calls run eagerly (on a side stream, as capture requires): they create the momentum
    buffers and let cuDNN choose its algorithms. The lr is a constant of the recorded update, so the step is
    recorded again whenever it changes (at the warm-up's end and at each milestone: a few times per run).
    """

    eager = 3
    untimed = eager + 2  # and the capture

    def __init__(self, model, optimizer, precision: str, window: torch.Tensor, batch_size: int):
        super().__init__(model, optimizer, precision, window)
        device = window.device
        self.cuda = device.type == "cuda"
        # static inputs, which the graph reads: each batch is copied in (x laid out as the first batch is)
        self.x, self.y = None, torch.empty(batch_size, dtype=torch.long, device=device)
        self.wrong = torch.zeros((), dtype=torch.float64, device=window.device)  # static output
        self.calls, self.lr, self.graph = 0, None, None

    def _update(self):
        """The recorded region: no host synchronisation, and every tensor it writes outlives it."""
        loss, logits = step(self.model, self.optimizer, self.x, self.y, self.precision, cache=False)
        wrong = (logits.argmax(1) != self.y).sum().double()
        self.window += torch.stack([loss.detach().double() * len(self.y), wrong])
        self.wrong.copy_(wrong)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        if self.x is None:
            self.x = torch.empty_like(x)
        self.x.copy_(x)
        self.y.copy_(y)
        self.calls += 1
        if self.calls <= self.eager:
            self.set_lr(lr)
            self._on_side_stream(self._update)
        else:
            if lr != self.lr:
                self.set_lr(lr)
                self.graph, self.lr = self._record(), lr
            self.graph() if self.graph is not None else self._update()
        return self.wrong.clone()

    def _on_side_stream(self, fn):
        if not self.cuda:
            return fn()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)

    def _record(self):
        """The update recorded in a CUDA graph, as a function that replays it (None on the CPU: no graph)."""
        if not self.cuda:
            return None
        self.graph = None  # the previous graph's memory goes back before the new one is recorded
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # the gradients are allocated inside the graph's memory
        with torch.cuda.graph(graph):
            self._update()
        return graph.replay


def make_step(cfg, model, optimizer, window: torch.Tensor, graphed: bool | None = None) -> Step:
    """The step of run ``cfg`` (a TrainConfig): graphed on CUDA unless cfg.cuda_graph is off, eager on the CPU.
    ``graphed`` decides instead where given: True on the CPU runs ``GraphedStep``'s code without a graph (how its
    logic is tested without a GPU)."""
    if graphed is None:
        graphed = cfg.cuda_graph and window.device.type == "cuda"
    if graphed:
        return GraphedStep(model, optimizer, cfg.precision, window, cfg.batch_size)
    return Step(model, optimizer, cfg.precision, window)


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
