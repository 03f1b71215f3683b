"""Settings of one training run: a frozen dataclass whose defaults are the paper's.

He et al. 2016, section 4.2: SGD with momentum 0.9, weight decay 1e-4, batch
128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k. Variants are
made with ``dataclasses.replace``; every field is documented once, in its
``help`` metadata, and the command line is generated from it.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

NETS = ("resnet", "plain")
SHORTCUTS = ("A", "B", "C")
PRECISIONS = ("fp32", "bf16")


def _f(default, help: str, identity: bool = True, **kw):
    """A setting with its help text; ``identity=False`` marks one that says how to run, not what is trained
    (a run resumed or recognised under another value is the same run)."""
    return field(default=default, metadata={"help": help, "identity": identity, **kw})


def identity_fields() -> list[str]:
    """The settings that make a run what it is: any difference is another run."""
    return [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["identity"]]


@dataclass(frozen=True)
class TrainConfig:
    # network
    net: str = _f("resnet", "network kind: 'resnet' (with shortcuts) or 'plain' (none)", choices=NETS)
    depth: int = _f(20, "total depth 6n+2: 20, 32, 44, 56, 110, 1202, ...")
    shortcut: str = _f("A", "residual shortcut: A (zero-pad, no parameters), B (projection where the shape changes), C (projection everywhere)", choices=SHORTCUTS)
    # optimisation (the paper's values)
    batch_size: int = _f(128, "images per iteration")
    iterations: int = _f(64_000, "training iterations at the full schedule (scaled by schedule)")
    lr: float = _f(0.1, "initial learning rate")
    milestones: tuple[int, ...] = _f((32_000, 48_000), "iterations at which the lr is divided by lr_decay (scaled by schedule)")
    schedule: str = _f("1", "fraction of the schedule: iterations and milestones are scaled by it, all else is the paper's "
                            "('1/8': 8k iterations, lr divided at 4k and 6k)")
    lr_decay: float = _f(10.0, "divisor of the lr at each milestone")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(1e-4, "L2 weight decay, on every parameter, BN's included (the paper does not say which; the Torch and Caffe defaults of its time did this, and so do the peers)")
    warmup: bool | None = _f(None, "lr warm-up as for ResNet-110; default (None): on for depth >= 110")
    warmup_lr: float = _f(0.01, "lr during the warm-up")
    warmup_until_error: float = _f(80.0, "the warm-up ends once the training error (%) falls below this")
    warmup_max_iterations: int = _f(400, "the warm-up ends here at the latest (iterations)")
    warmup_check_every: int = _f(20, "iterations between warm-up checks (each check is one host sync)")
    seed: int = _f(0, "seed of initialisation, batch order and augmentation")
    # data
    data: str = _f("", "'official' (torchvision's CIFAR-10 download) or a path to an image tree/archive; "
                       "'' (the default): $RESNET_DATA if set, else 'official'")
    train_subset: int = _f(0, "use only this many training images, class-balanced (0 = all 50,000)")
    test_subset: int = _f(0, "use only this many test images, class-balanced (0 = all 10,000)")
    val_size: int = _f(0, "hold out this many training images as a validation set (5000 = the paper's 45k/5k split; 0 = none)")
    # bookkeeping
    eval_every: int = _f(391, "iterations between evaluations / CSV rows (391 = one epoch of 50k)", identity=False)
    checkpoint_every: int = _f(3_910, "iterations between checkpoints; a multiple of eval_every", identity=False)
    # execution
    device: str = _f("auto", "'auto' (CUDA when available), 'cuda', 'cpu'", identity=False)
    precision: str = _f("fp32", "'fp32' or 'bf16' (autocast; CUDA)", choices=PRECISIONS)
    cuda_graph: bool = _f(True, "on CUDA, replay each training step from a CUDA graph: the same updates, far fewer "
                                "kernel launches (off: eager steps); the CPU has no graphs and always steps "
                                "eagerly", identity=False)

    def __post_init__(self):
        self._check_types()
        if self.net not in NETS:
            raise ValueError(f"net must be one of {NETS}, got {self.net!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        check_depth(self.depth)
        for name in ("batch_size", "iterations", "eval_every", "checkpoint_every", "warmup_check_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of eval_every ({self.eval_every})")
        for name in ("train_subset", "test_subset", "val_size", "weight_decay", "warmup_max_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("lr", "warmup_lr", "lr_decay"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.warmup_until_error <= 100:
            raise ValueError(f"warmup_until_error is a percentage in [0, 100], got {self.warmup_until_error}")
        if any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be positive iterations, got {self.milestones}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        object.__setattr__(self, "schedule", str(parse_schedule(self.schedule)))
        if self.total_iterations < 1:
            raise ValueError(f"schedule {self.schedule} of {self.iterations} iterations leaves no iteration to train")

    def _check_types(self):
        """Every setting of its field's type (an int where a float is asked is fine), floats finite: a '"depth":
        "8"' in a run.json, or '--lr inf', is refused here, naming the setting."""
        import math

        for f in dataclasses.fields(self):
            value, default = getattr(self, f.name), f.default
            if f.name == "warmup":
                ok = value is None or isinstance(value, bool)
            elif isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, tuple):
                ok = isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                              for v in value)
            else:
                ok = isinstance(value, type(default))
            if not ok:
                kind = "a finite number" if isinstance(default, float) and not isinstance(default, bool) else (
                    "true, false or null" if f.name == "warmup" else "whole numbers" if isinstance(default, tuple)
                    else type(default).__name__)
                raise ValueError(f"setting {f.name} must be {kind}, got {value!r}")

    @property
    def total_iterations(self) -> int:
        """Iterations actually trained: ``iterations`` scaled by the schedule."""
        return round(self.iterations * Fraction(self.schedule))

    @property
    def lr_milestones(self) -> tuple[int, ...]:
        """The lr milestones actually used: ``milestones`` scaled by the schedule."""
        return tuple(round(m * Fraction(self.schedule)) for m in self.milestones)

    def run_dir(self, results_dir: str | Path) -> Path:
        """Where this run lives: ``<results_dir>/<study>/<name>``."""
        return Path(results_dir) / self.study / self.name

    @property
    def study(self) -> str:
        """The study this run belongs to, a folder name: data source, schedule, precision ('cifar10-jpeg-1of8-bf16').

        Runs of different studies never share a folder, so a study on other data or at another schedule never
        collides with the committed ones."""
        return f"{data_label(self.data)}-{schedule_label(self.schedule, sep='of')}-{self.precision}"

    @property
    def blocks_per_stage(self) -> int:
        """n in depth = 6n + 2."""
        return (self.depth - 2) // 6

    @property
    def uses_warmup(self) -> bool:
        return self.depth >= 110 if self.warmup is None else self.warmup

    @property
    def network(self) -> str:
        """The run's name without its seed: the seeds of one network share it ('resnet56', 'plain20-val5000')."""
        return network_name(self.net, self.depth, self.shortcut, self.val_size)

    @property
    def name(self) -> str:
        """Run name, e.g. 'resnet56-seed0', 'resnet20B-seed1', 'plain20-val5000-seed0'."""
        return f"{self.network}-seed{self.seed}"

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



def check_depth(depth: int) -> int:
    """``depth`` if it is 6n+2 with n >= 1 (the paper's CIFAR networks), else a ValueError naming it."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
    return depth


def network_name(net: str, depth: int, shortcut: str = "A", val_size: int = 0) -> str:
    """'resnet56', 'resnet20B' (options B and C are named, A is the default), 'plain20', 'resnet20-val5000'."""
    option = shortcut if net == "resnet" and shortcut != "A" else ""
    return f"{net}{depth}{option}" + (f"-val{val_size}" if val_size else "")


def network_label(config: dict) -> str:
    """A network in words, as the paper writes it: 'ResNet-56', 'ResNet-20 (B)', 'plain-20', 'ResNet-20 [val 5000]'."""
    if config["net"] == "plain":
        label = f"plain-{config['depth']}"
    else:
        label = f"ResNet-{config['depth']}" + ("" if config["shortcut"] == "A" else f" ({config['shortcut']})")
    return label + (f" [val {config['val_size']}]" if config.get("val_size") else "")


def parse_schedule(text) -> Fraction:
    """'1', '1/8', '0.125' -> a Fraction in (0, 1]; anything else is a ValueError naming the value."""
    try:
        value = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"schedule must be a fraction such as 1, 1/2 or 1/8, got {text!r}") from None
    if not 0 < value <= 1:
        raise ValueError(f"schedule must be in (0, 1] (a fraction of the paper's schedule), got {text!r}")
    return value


def schedule_label(schedule: str, sep: str = "/") -> str:
    """'full' for the paper's schedule, else the fraction ('1/8', or '1of8' with sep='of' for folder names)."""
    value = parse_schedule(schedule)
    return "full" if value == 1 else f"{value.numerator}{sep}{value.denominator}"


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def resolve_source(data: str) -> str:
    """The data source meant by ``data``: itself, else the environment variable RESNET_DATA, else 'official';
    a path is made absolute, so that a run's record finds its data from any folder."""
    data = data or os.environ.get("RESNET_DATA", "") or "official"
    return data if data == "official" else str(Path(data).expanduser().resolve())


def source_name(data: str) -> str:
    """The data source's name, recorded with every result: 'official' or the file/folder name."""
    data = resolve_source(data)
    return "official" if data == "official" else Path(data).name


def data_label(data: str) -> str:
    """The source's name without an archive suffix ('cifar10-jpeg'): the data's part of a study's name."""
    name = source_name(data)
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def study_label(config: dict) -> str:
    """A study in words, for figure titles and tables: 'data cifar10-jpeg, 1/8 schedule (8,000 iterations), bf16'
    ('own schedule' where iterations or milestones are not the paper's)."""
    cfg, paper = TrainConfig.from_dict(config), TrainConfig()
    if (cfg.iterations, cfg.milestones) != (paper.iterations, paper.milestones):
        sched = "own schedule"
    else:
        sched = "paper's schedule" if Fraction(cfg.schedule) == 1 else f"{schedule_label(cfg.schedule)} schedule"
    return f"data {data_label(cfg.data)}, {sched} ({cfg.total_iterations:,} iterations), {cfg.precision}"


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
        elif isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        else:
            args += [flag, str(value)]
    return args


# The settings that make a run the paper's protocol (section 4.2) when they keep their defaults.
PROTOCOL_FIELDS = ("batch_size", "iterations", "lr", "milestones", "lr_decay", "momentum", "weight_decay", "warmup",
                   "warmup_lr", "warmup_until_error", "warmup_max_iterations", "schedule", "train_subset",
                   "test_subset", "val_size")


def paper_protocol(config: dict) -> bool:
    """A run comparable with the paper's Figure 6 / Table 6: plain or option A, the paper's full schedule and
    optimiser, trained on all training images and tested on all test images (the data source is labelled
    beside, not judged, here)."""
    cfg, paper = TrainConfig.from_dict(config), TrainConfig()
    return (cfg.net == "plain" or cfg.shortcut == "A") and all(
        getattr(cfg, f) == getattr(paper, f) for f in PROTOCOL_FIELDS)


def comparable(config: dict) -> bool:
    """A run whose curves and claims can be set beside the paper's within its study: plain or option A, no
    validation split, all training and test images (any schedule, data or precision)."""
    return (config["net"] == "plain" or config["shortcut"] == "A") and not config.get("val_size") and not (
        config.get("train_subset") or config.get("test_subset"))
