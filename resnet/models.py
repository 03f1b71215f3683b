"""CIFAR-10 ResNets and plain networks of depth 6n+2 (He et al. 2016, section 4.2).

    layer    output    residual / plain block            n = 3 (depth 20)
    conv1    32x32     3x3, 16
    layer1   32x32     [3x3, 16;  3x3, 16] x n
    layer2   16x16     [3x3, 32;  3x3, 32] x n  (first conv strides 2)
    layer3    8x8      [3x3, 64;  3x3, 64] x n  (first conv strides 2)
    pool+fc  1x1       global average pool, 10-way linear

BN follows every conv, before the ReLU; in a residual block the shortcut is
added after the second BN, then ReLU. Parameters, option A or plain
(the paper rounds them to 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M):

    depth    20        32        44        56        110         1202
    params   269,722   464,154   658,586   853,018   1,727,962   19,421,274

Module names follow akamaster/pytorch_resnet_cifar10 (conv1, bn1,
layer{1,2,3}.i.{conv1,bn1,conv2,bn2}, linear), so its trained option-A
weights load unchanged.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .config import SHORTCUTS, TrainConfig, check_depth

WIDTHS = (16, 32, 64)


def conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by the stride and pad the new channels with zeros; no parameters.

    The zero channels go half before and half after the old ones, as in the
    peer implementation whose weights we load (the paper does not say where).
    """

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, before, self.extra - before))


class Projection(nn.Sequential):
    """Options B and C: a strided 1x1 convolution and BN."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))


def make_shortcut(option: str, in_planes: int, planes: int, stride: int) -> nn.Module:
    reshapes = stride != 1 or in_planes != planes
    if option == "C" or (option == "B" and reshapes):
        return Projection(in_planes, planes, stride)
    if reshapes:
        return ZeroPadShortcut(in_planes, planes, stride)
    return nn.Identity()


class Block(nn.Module):
    """Two 3x3 conv+BN layers; with a shortcut a residual unit, without one a plain pair."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str | None):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = None if shortcut is None else make_shortcut(shortcut, in_planes, planes, stride)

    def forward(self, x):  # (B, in, H, W)
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # response of this layer, before the addition
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarNet(nn.Module):
    """A ResNet (``shortcut`` 'A', 'B' or 'C') or a plain network (``shortcut=None``) of depth 6n+2."""

    def __init__(self, depth: int, shortcut: str | None = "A", num_classes: int = 10):
        super().__init__()
        check_depth(depth)
        if shortcut not in (None, *SHORTCUTS):
            raise ValueError(f"shortcut must be one of {SHORTCUTS} or None (plain), got {shortcut!r}")
        self.depth, self.shortcut = depth, shortcut
        n = (depth - 2) // 6
        self.conv1 = conv3x3(3, WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        in_planes = WIDTHS[0]
        for stage, planes in enumerate(WIDTHS, start=1):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 1 and i == 0 else 1  # only the first block of a stage strides
                blocks.append(Block(in_planes, planes, stride, shortcut))
                in_planes = planes
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(WIDTHS[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015 ("MSRA"), forward case: std = sqrt(2 / (k*k*c_in)).
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):  # (B, 3, 32, 32)
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.layer1(x)  # (B, 16, 32, 32)
        x = self.layer2(x)  # (B, 32, 16, 16)
        x = self.layer3(x)  # (B, 64, 8, 8)
        x = x.mean(dim=(2, 3))  # (B, 64)
        return self.linear(x)  # (B, 10)

    def response_layers(self) -> list[nn.BatchNorm2d]:
        """The BN after every 3x3 conv, in network order: their outputs are Figure 7's responses."""
        layers = [self.bn1]
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage:
                layers += [block.bn1, block.bn2]
        return layers


def build_model(cfg: TrainConfig) -> CifarNet:
    return CifarNet(cfg.depth, cfg.shortcut if cfg.net == "resnet" else None)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def capture_responses(model: CifarNet):
    """Within the block, every forward appends a list of the 3x3 layers' responses to the yielded list."""
    captured: list[list[torch.Tensor]] = []
    current: list[torch.Tensor] = []
    layers = model.response_layers()

    def hook(module, inputs, output):
        current.append(output.detach())
        if module is layers[-1]:
            captured.append(current.copy())
            current.clear()

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def from_peer_checkpoint(path) -> CifarNet:
    """An option-A network holding the weights of an akamaster/pytorch_resnet_cifar10 checkpoint.

    Those files hold {"best_prec1", "state_dict"} with 'module.' prefixes (DataParallel) and no
    BN ``num_batches_tracked`` counters (older PyTorch); nothing else may differ.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # tensors and numbers only: never code
    state = {k.removeprefix("module."): v for k, v in ckpt.get("state_dict", ckpt).items()}
    n = len({k.split(".")[1] for k in state if k.startswith("layer1.")})
    model = CifarNet(6 * n + 2, "A")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: not an option-A CIFAR ResNet checkpoint (missing {missing}, unexpected {unexpected})")
    return model.eval()
