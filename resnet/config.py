"""Settings of one training run: a frozen dataclass whose defaults are the paper's.

He et al. 2016, section 4.2: SGD with momentum 0.9, weight decay 1e-4, batch
128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k. Variants are
made with ``dataclasses.replace``; every field is documented once, in its
``help`` metadata, and the command line is generated from it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

NETS = ("resnet", "plain")
SHORTCUTS = ("A", "B", "C")
PRECISIONS = ("fp32", "bf16")


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class TrainConfig:
    # network
    net: str = _f("resnet", "network kind: 'resnet' (with shortcuts) or 'plain' (none)", choices=NETS)
    depth: int = _f(20, "total depth 6n+2: 20, 32, 44, 56, 110, 1202, ...")
    shortcut: str = _f("A", "residual shortcut: A (zero-pad, no parameters), B (projection where the shape changes), C (projection everywhere)", choices=SHORTCUTS)
    # optimisation (the paper's values)
    batch_size: int = _f(128, "images per iteration")
    iterations: int = _f(64_000, "training iterations")
    lr: float = _f(0.1, "initial learning rate")
    milestones: tuple[int, ...] = _f((32_000, 48_000), "iterations at which the lr is divided by lr_decay")
    lr_decay: float = _f(10.0, "divisor of the lr at each milestone")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(1e-4, "L2 weight decay (applied to all parameters, as in the paper)")
    warmup: bool | None = _f(None, "lr warm-up as for ResNet-110; default (None): on for depth >= 110")
    warmup_lr: float = _f(0.01, "lr during the warm-up")
    warmup_until_error: float = _f(80.0, "the warm-up ends once the training error (%) falls below this")
    warmup_max_iterations: int = _f(400, "the warm-up ends here at the latest (iterations)")
    warmup_check_every: int = _f(20, "iterations between warm-up checks (each check is one host sync)")
    seed: int = _f(0, "seed of initialisation, batch order and augmentation")
    # data
    data: str = _f("official", "'official' (torchvision's CIFAR-10 download) or a path to an image tree/archive")
    train_subset: int = _f(0, "use only this many training images, class-balanced (0 = all 50,000)")
    test_subset: int = _f(0, "use only this many test images, class-balanced (0 = all 10,000)")
    val_size: int = _f(0, "hold out this many training images as a validation set (5000 = the paper's 45k/5k split; 0 = none)")
    # bookkeeping
    eval_every: int = _f(391, "iterations between evaluations / CSV rows (391 = one epoch of 50k)")
    checkpoint_every: int = _f(3_910, "iterations between checkpoints; a multiple of eval_every")
    # execution
    device: str = _f("auto", "'auto' (CUDA when available), 'cuda', 'cpu'")
    precision: str = _f("fp32", "'fp32' or 'bf16' (autocast; CUDA)", choices=PRECISIONS)

    def __post_init__(self):
        if self.net not in NETS:
            raise ValueError(f"net must be one of {NETS}, got {self.net!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {self.depth}")
        for name in ("batch_size", "iterations", "eval_every", "checkpoint_every", "warmup_check_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of eval_every ({self.eval_every})")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    @property
    def blocks_per_stage(self) -> int:
        """n in depth = 6n + 2."""
        return (self.depth - 2) // 6

    @property
    def uses_warmup(self) -> bool:
        return self.depth >= 110 if self.warmup is None else self.warmup

    @property
    def name(self) -> str:
        """Run name, e.g. 'resnet56-seed0', 'resnet20B-seed1', 'plain20-val5000-seed0'."""
        shortcut = self.shortcut if self.net == "resnet" and self.shortcut != "A" else ""
        val = f"-val{self.val_size}" if self.val_size else ""
        return f"{self.net}{self.depth}{shortcut}{val}-seed{self.seed}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)



def config_to_args(cfg: TrainConfig) -> list[str]:
    """Command-line flags (for ``python -m resnet train``) that rebuild ``cfg``; defaults are left out."""
    args = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, tuple):
            args += [flag, *map(str, value)]
        elif f.name == "warmup":
            args += [flag, "on" if value else "off"]
        else:
            args += [flag, str(value)]
    return args
