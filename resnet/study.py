"""The notebook's study, from the environment: which runs to sweep, where they land, what is drawn.

``main.ipynb`` holds no logic of its own: it calls ``study_from_environment()`` and passes what it returns to the
library, so every cell runs the same code in the full study, in the report (``RESNET_TRAIN=0``: train nothing, draw
what is committed; the notebook's stored outputs, which nbval checks) and in the quick mode (tiny runs, tested by
pytest), and this is where they differ (and where they are tested).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .config import TrainConfig
from .sweeps import parse_runs_at_once

# Figure 6's ten, a depth's pair at a time: a study cut short still compares plain and residual at each depth it has
NETWORKS = tuple((net, depth) for depth in (20, 32, 44, 56, 110) for net in ("plain", "resnet"))


@dataclass(frozen=True)
class Study:
    configs: tuple[TrainConfig, ...]  # the runs to sweep, in order
    results: str  # where the sweep trains
    shown: str  # every study below it is drawn: the committed ones and yours
    quick: bool  # tiny real runs on a data subset, on the CPU, into a scratch folder (emptied by each quick study)
    parallel: int | str = "auto"  # runs at once (on CUDA in one process, on the CPU a process each); auto: measured on CUDA, 1 without
    train: bool = True  # False: the report, which trains nothing and draws the studies in ``shown``

    @property
    def to_train(self) -> tuple[TrainConfig, ...]:
        """The runs the sweep is to train (or finish): none in the report."""
        return self.configs if self.train else ()

    @property
    def data(self) -> str:
        return self.configs[0].data

    @property
    def device(self) -> str:
        return self.configs[0].device

    @property
    def assets(self) -> str | None:
        """Where figures are saved: assets/, except in quick mode and the report (which draw the committed results
        and must not rewrite their figures)."""
        return "assets" if self.train and not self.quick else None

    def figure7_path(self, study: str | None) -> str | None:
        """Where Figure 7 of ``study`` and its numbers are kept (read in every mode, written where ``assets`` is)."""
        return None if study is None else f"assets/figure7-{study}.png"

    def describe(self) -> str:
        if not self.train:
            return f"the report (RESNET_TRAIN=0): nothing is trained; every study in {self.shown}/ is drawn"
        c = self.configs[0]
        where = f"into {self.results}/, emptied first (quick mode)" if self.quick else f"into {self.results}/{c.study}/"
        return f"{len(self.configs)} runs of {c.total_iterations} iterations, batch {c.batch_size}, {c.precision}, {where}"


def study_from_environment(environ=None) -> Study:
    """The study the environment asks for: RESNET_DATA ('' = official CIFAR-10, downloaded), RESNET_SCHEDULE
    ('1': the paper's 64k iterations; '1/8': 8k, milestones scaled alike), RESNET_PRECISION ('fp32' or 'bf16'),
    RESNET_RESULTS (default 'results'), RESNET_PARALLEL ('auto' or a number), RESNET_QUICK=1 (tiny runs),
    RESNET_TRAIN=0 (the report: train nothing). The ten networks of Figure 6, seed 0, the paper's protocol
    otherwise."""
    env = os.environ if environ is None else environ
    base = TrainConfig(data=env.get("RESNET_DATA") or "official", schedule=env.get("RESNET_SCHEDULE", "1"),
                       precision=env.get("RESNET_PRECISION", "fp32"), device="auto")
    shown = env.get("RESNET_RESULTS", "results")
    quick = env.get("RESNET_QUICK") == "1"
    if env.get("RESNET_TRAIN", "1") not in ("0", "1"):
        raise ValueError(f"RESNET_TRAIN must be 0 (the report: train nothing) or 1, not {env['RESNET_TRAIN']!r}")
    train = env.get("RESNET_TRAIN", "1") == "1"
    networks, results = NETWORKS, shown
    if quick and train:  # two depth-8 networks, 30 iterations on 1,000 images, on the CPU, never into results/
        networks, results = (("plain", 8), ("resnet", 8)), _fresh_quick_folder()
        base = dataclasses.replace(base, batch_size=32, iterations=30, milestones=(15, 25), eval_every=10,
                                   checkpoint_every=10, train_subset=1000, test_subset=500, device="cpu")
    configs = tuple(dataclasses.replace(base, net=n, depth=d) for n, d in networks)
    return Study(configs, str(Path(results)), shown, quick and train,
                 parse_runs_at_once(env.get("RESNET_PARALLEL", "auto")), train)


def _fresh_quick_folder() -> str:
    """The quick mode's results: one scratch folder in the cache, emptied by each quick study, so none piles up."""
    import shutil

    from .data import cache_dir

    folder = cache_dir() / "quick-results"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return str(folder)
