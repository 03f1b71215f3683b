"""Horizontal fusion: K runs of one network (its seeds) trained as one network of grouped convolutions, each run in
its own group of channels, against the same K runs trained separately.

    python -m benchmarks.fusion --data PATH [--device cpu] [--precision bf16] [--out benchmarks]
    python -m benchmarks.fusion --smoke --data PATH       # seconds: the same code, tiny, no timing claims

A fused network holds K copies of a CIFAR network side by side: every convolution a grouped one (groups = K), every
BN K times as wide (BN is per channel, so each run keeps its own statistics), option A's zero padding done within
each group, the classifier a grouped 1x1 convolution. Each run sees its own images (its own data order and
augmentation, stacked along the channels) and has its own loss; the losses are summed, so each run's parameters get
its own gradient, and SGD with momentum and weight decay acts on each parameter element alone: the same arithmetic
as K separate runs, in fewer, larger kernels.

Measured, per network (ResNet-20, 56, 110) and K = 1, 2, 4: the aggregate images/s of the fused network and of K
separate networks stepped one after another (``train_together``'s way), each step timed in its steady state on
fresh batches; and, in fp32, the fused network's losses and weights after 100 updates against K separate runs'
(equal to rounding: grouped kernels sum in another order). The decision rule (from the project's issue): fusion
goes into the trainer only if it gains at least 1.3x on the CPU for the seeds.
Writes <out>/fusion.md and <out>/fusion.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from resnet import TrainConfig
from resnet.data import Batches, device_data
from resnet.files import write_atomic
from resnet.models import Block, CifarNet, ZeroPadShortcut
from resnet.steps import autocast, resolve_device
from resnet.trainer import build

from .common import environment, markdown_table

GATE = 1.3  # the gain over separate runs at which fusion would be worth building into the trainer


def _grouped_conv(convs: list[nn.Conv2d]) -> nn.Conv2d:
    c = convs[0]
    fused = nn.Conv2d(c.in_channels * len(convs), c.out_channels * len(convs), c.kernel_size, stride=c.stride,
                      padding=c.padding, groups=len(convs), bias=False)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([m.weight for m in convs]))  # group k's filters are run k's
    return fused


def _wide_bn(bns: list[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    fused = nn.BatchNorm2d(bns[0].num_features * len(bns))
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(fused, name).copy_(torch.cat([getattr(b, name) for b in bns]))
    return fused


class FusedBlock(nn.Module):
    def __init__(self, blocks: list[Block]):
        super().__init__()
        b, self.k = blocks[0], len(blocks)
        self.conv1, self.bn1 = _grouped_conv([x.conv1 for x in blocks]), _wide_bn([x.bn1 for x in blocks])
        self.conv2, self.bn2 = _grouped_conv([x.conv2 for x in blocks]), _wide_bn([x.bn2 for x in blocks])
        self.shortcut = b.shortcut
        if b.shortcut is not None and not isinstance(b.shortcut, (nn.Identity, ZeroPadShortcut)):
            raise ValueError("fusion is measured for option A and plain networks only")

    def forward(self, x):  # (B, K*in, H, W)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if isinstance(self.shortcut, ZeroPadShortcut):  # within each run's group of channels
            n, c, h, w = x.shape
            s = self.shortcut(x.reshape(n * self.k, c // self.k, h, w))  # (n*K, planes, h/stride, w/stride)
            out = out + s.reshape(n, -1, *s.shape[2:])
        elif self.shortcut is not None:
            out = out + x
        return F.relu(out)


class FusedNet(nn.Module):
    """K CifarNets of one shape as one network: run k's channels are group k of every layer."""

    def __init__(self, nets: list[CifarNet]):
        super().__init__()
        self.k = len(nets)
        self.conv1, self.bn1 = _grouped_conv([n.conv1 for n in nets]), _wide_bn([n.bn1 for n in nets])
        for stage in ("layer1", "layer2", "layer3"):
            blocks = [getattr(n, stage) for n in nets]
            self.add_module(stage, nn.Sequential(*[FusedBlock([b[i] for b in blocks]) for i in range(len(blocks[0]))]))
        lin = [n.linear for n in nets]
        self.linear = nn.Conv1d(lin[0].in_features * self.k, lin[0].out_features * self.k, 1, groups=self.k)
        with torch.no_grad():
            self.linear.weight.copy_(torch.cat([m.weight for m in lin])[:, :, None])
            self.linear.bias.copy_(torch.cat([m.bias for m in lin]))

    def forward(self, x):  # (B, K*3, 32, 32): run k's images in channels 3k..3k+2
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = x.mean(dim=(2, 3))[:, :, None]  # (B, K*64, 1)
        return self.linear(x).reshape(len(x), self.k, -1)  # (B, K, 10)

    def run_weights(self, k: int) -> list[torch.Tensor]:
        """Run k's parameters, in the order of a CifarNet's ``parameters()``."""
        out = []
        for p in self.parameters():
            chunk = p.shape[0] // self.k
            out.append(p[k * chunk:(k + 1) * chunk].reshape(-1))
        return out


def _sgd(cfg: TrainConfig, model) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _fused_step(model, optimizer, batches: list[tuple], precision: str):
    x = torch.cat([b[0] for b in batches], dim=1)
    with autocast(x.device, precision):
        logits = model(x).float()  # (B, K, 10)
        loss = sum(F.cross_entropy(logits[:, k], y) for k, (_, y) in enumerate(batches))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _separate_step(model, optimizer, x, y, precision: str):
    with autocast(x.device, precision):
        loss = F.cross_entropy(model(x).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _runs(cfg: TrainConfig, data, k: int):
    """K seeds of ``cfg``: their networks, optimisers and batches, as the trainer builds them, in the contiguous
    layout the fused network has (and fusion.md was measured in)."""
    device = data.train_x.device
    configs = [dataclasses.replace(cfg, seed=s) for s in range(k)]
    built = [build(c, device, layout="contiguous") for c in configs]
    return [m for m, _ in built], [o for _, o in built], [Batches(data, c.batch_size, c.seed) for c in configs]


def equality(cfg: TrainConfig, data, k: int, iterations: int) -> dict:
    """K separate fp32 runs and their fusion over ``iterations`` updates on the same batches.

    The fused network is set to the separate runs' weights and momentum before each update, so that each of its
    updates is compared from the same state: the largest difference of a run's weights after one update, over its
    largest weight, is the rounding of one update (grouped kernels sum in another order). Left to train on their own
    instead, two computations that differ by rounding drift apart as training amplifies every difference (as any
    change of summation order does: of thread count, of kernel): the summed losses of the free-running fused
    network against the separate runs' are reported beside it."""
    cfg = dataclasses.replace(cfg, precision="fp32")
    nets, opts, batches = _runs(cfg, data, k)
    fused = FusedNet(nets)
    fused_opt = _sgd(cfg, fused)
    free = FusedNet(nets)
    free_opt = _sgd(cfg, free)
    worst_update, worst_loss, worst_free = 0.0, 0.0, 0.0
    for _ in range(iterations):
        drawn = [next(b) for b in batches]
        _set_state(fused, fused_opt, nets, opts)
        together = _fused_step(fused, fused_opt, drawn, "fp32")
        free_loss = _fused_step(free, free_opt, drawn, "fp32")
        apart = torch.stack([_separate_step(n, o, x, y, "fp32") for n, o, (x, y) in zip(nets, opts, drawn)]).sum()
        worst_loss = max(worst_loss, abs(together.item() - apart.item()) / abs(apart.item()))
        worst_free = max(worst_free, abs(free_loss.item() - apart.item()) / abs(apart.item()))
        for i, net in enumerate(nets):
            a = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
            b = torch.cat(fused.run_weights(i)).detach()
            worst_update = max(worst_update, ((a - b).abs().max() / a.abs().max()).item())
    return {"network": f"{cfg.net}-{cfg.depth}", "K": k, "updates": iterations,
            "one update: weights, worst relative difference": worst_update,
            "one update: losses, worst relative difference": worst_loss,
            "free-running: losses, worst relative difference": worst_free}


def _set_state(fused: FusedNet, fused_opt, nets: list[CifarNet], opts):
    """The fused network's weights, BN statistics and momentum made those of the separate runs."""
    with torch.no_grad():
        for j, p in enumerate(fused.parameters()):
            parts = [list(n.parameters())[j] for n in nets]
            p.copy_(torch.cat([q.reshape(q.shape[0], *p.shape[1:]) for q in parts]))
            buffers = [o.state[q].get("momentum_buffer") for o, q in zip(opts, parts)]
            if buffers[0] is not None:
                fused_opt.state[p]["momentum_buffer"] = torch.cat([m.reshape(m.shape[0], *p.shape[1:]) for m in buffers])
        wide = [m for m in fused.modules() if isinstance(m, nn.BatchNorm2d)]
        for j, bn in enumerate(wide):
            parts = [[m for m in n.modules() if isinstance(m, nn.BatchNorm2d)][j] for n in nets]
            bn.running_mean.copy_(torch.cat([m.running_mean for m in parts]))
            bn.running_var.copy_(torch.cat([m.running_var for m in parts]))


def speed(cfg: TrainConfig, data, k: int, iterations: int) -> dict:
    """Aggregate images/s of K fused runs and of K separate runs stepped in turn (after 2 untimed steps each; the
    timed steps of the two alternate)."""
    nets, opts, batches = _runs(cfg, data, k)
    fused = FusedNet([CifarNet(cfg.depth, cfg.shortcut if cfg.net == "resnet" else None) for _ in range(k)])
    fused_opt = _sgd(cfg, fused)

    def separate():
        for n, o, b in zip(nets, opts, batches):
            _separate_step(n, o, *next(b), cfg.precision)

    def together():
        _fused_step(fused, fused_opt, [next(b) for b in batches], cfg.precision)

    seconds = {"separate": 0.0, "fused": 0.0}
    for _ in range(2):  # untimed: allocations, kernel choice
        separate(), together()
    for _ in range(iterations):  # alternated, so that a machine's drift weighs on both alike
        for name, step in (("separate", separate), ("fused", together)):
            start = time.perf_counter()
            step()
            seconds[name] += time.perf_counter() - start
    rates = {name: k * cfg.batch_size * iterations / s for name, s in seconds.items()}
    return {"network": f"{cfg.net}-{cfg.depth}", "K": k, "images/s, separate": round(rates["separate"], 1),
            "images/s, fused": round(rates["fused"], 1), "gain": round(rates["fused"] / rates["separate"], 3)}


def _two_processes(precision: str) -> dict[str, float]:
    """Per network, how much sooner two runs at once in two processes (one thread each, as a CPU sweep trains them)
    finish than one at a time, as benchmarks/cpu_parallel.json measured it on this project's CPU ({} without it)."""
    path = Path(__file__).with_name("cpu_parallel.json")
    if not path.exists():
        return {}
    measured = json.loads(path.read_text())
    return {r["network"]: r["gain"] for r in measured["rows"]} if measured.get("precision") == precision else {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="data source: the batches are drawn from its training images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"), help="of the speed (equality: fp32)")
    p.add_argument("--iterations", type=int, default=10, help="timed steps per network, K and kind")
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--smoke", action="store_true", help="depth 8, batch 16, 2 steps: the code, no timing claims")
    p.add_argument("--out", default="benchmarks")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    base = TrainConfig(data=args.data, device=str(device), precision=args.precision, train_subset=1000 if args.smoke else 0)
    depths, updates = args.depths, 100
    if args.smoke:
        depths, args.iterations, updates, base = [8], 2, 5, dataclasses.replace(base, batch_size=16)
    data = device_data(dataclasses.replace(base, test_subset=100), device)
    equal = [equality(dataclasses.replace(base, depth=d), data, 2, updates) for d in depths[:1]]
    print(equal, flush=True)
    rows = []
    for depth in depths:
        for k in args.ks:
            rows.append(speed(dataclasses.replace(base, depth=depth), data, k, args.iterations))
            print(rows[-1], flush=True)
    seeds = [r for r in rows if r["K"] > 1]
    best = max((r["gain"] for r in seeds), default=0.0)
    two = _two_processes(args.precision) if device.type == "cpu" else {}
    for r in seeds:
        if r["K"] == 2 and r["network"] in two:
            r["gain over 2 processes (est.)"] = round(r["gain"] / two[r["network"]], 3)
    against = max((r.get("gain over 2 processes (est.)", r["gain"]) for r in seeds), default=0.0)
    verdict = "smoke mode: no decision" if args.smoke else (
        f"fusion gains at most {best:.2f}x over separate runs in turn"
        + (f" and at most {against:.2f}x over two runs at once in two processes" if two else "") + ", "
        + (f"at least the {GATE}x gate: worth building into the trainer" if against >= GATE else
           f"below the {GATE}x gate: not built into the trainer"))
    env = environment(str(device))
    summary = {"environment": env, "smoke": args.smoke, "precision": args.precision, "equality": equal,
               "speed": rows, "best gain": best, "gate": GATE, "verdict": verdict}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(json.dumps(summary, indent=1) + "\n", out / "fusion.json")
    lines = [f"# Horizontal fusion of seeds{' — SMOKE MODE: no meaningful timings' if args.smoke else ''}", "",
             __doc__.split("\n\n")[2].replace("\n", " "), "",
             f"## Speed ({args.precision}, batch {base.batch_size} per run, {args.iterations} timed steps each after 2 "
             "untimed, the two kinds alternating)", "", markdown_table(rows), "",
             "*gain*: the fused network's images/s over the separate runs'. *gain over 2 processes (est.)*: for K = 2,"
             " that gain divided by how much two runs at once in two processes gain over one at a time, as "
             "[cpu_parallel.md](cpu_parallel.md) measured it: what fusion would add to the way a CPU sweep trains "
             "two seeds.", "",
             f"**Decision: {verdict}.**", "",
             "## Equality with separate runs (fp32)", "", markdown_table(equal), "",
             f"Measured {env['date']} on {env['device']}, torch {env['torch']}, commit {env['git_commit'][:10]}; "
             f"batches from {Path(args.data).name}'s training images."]
    write_atomic("\n".join(lines) + "\n", out / "fusion.md")
    print(f"wrote {out / 'fusion.md'}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
