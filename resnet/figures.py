"""Figure 6 (training curves) and Figure 7 (std of layer responses), drawn as in the paper."""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .models import CifarNet, capture_responses
from .config import TrainConfig, comparable, network_label, study_label
from .files import write_atomic
from .compare import in_trend, one_per_network
from .results import META_FILE, Run, by_study, load_run, read_meta

# One colour per network, the same in Figures 6 and 7 (the ResNets' as in the paper's Figure 6)
NETWORK_COLORS = {("resnet", 20): "tab:olive", ("resnet", 32): "tab:cyan", ("resnet", 44): "tab:green",
                  ("resnet", 56): "tab:red", ("resnet", 110): "black", ("resnet", 1202): "tab:purple",
                  ("plain", 20): "tab:orange", ("plain", 32): "tab:pink", ("plain", 44): "tab:brown",
                  ("plain", 56): "tab:blue", ("plain", 110): "tab:gray"}


def network_color(net: str, depth: int, fallback: str = "C0") -> str:
    return NETWORK_COLORS.get((net, depth), fallback)


def _label_color(label: str, fallback: str) -> str:
    """The colour of a network named as the figures label it ('plain-20', 'ResNet-56')."""
    import re

    m = re.fullmatch(r"(plain|ResNet)-(\d+)", label)
    return network_color(m.group(1).lower(), int(m.group(2)), fallback) if m else fallback


def _curve_runs(runs: list[Run]) -> dict[tuple[str, int], Run]:
    """One run per (net, depth) for the curves: comparable with the paper's (option A, ...), lowest seed."""
    return one_per_network([r for r in runs if comparable(r.config)])


def _ylim(runs: list[Run]) -> tuple[float, float]:
    """The paper's 0-20% at its full schedule; at a shorter one (whose errors sit higher), a range that shows the
    ResNets' curves: the worst final ResNet error x 1.6, in steps of 5 (of all runs drawn where no ResNet is),
    never above 100%. Curves that end above the range are named on the chart (``_name_off_chart``)."""
    from fractions import Fraction

    if runs and all(Fraction(r.config["schedule"]) == 1 for r in runs):
        return (0, 20)
    resnets = [r for r in runs if r.config["net"] == "resnet"] or runs
    worst = max((r.meta["final_test_error"] or 0 for r in resnets), default=0)
    return (0, 20) if worst <= 12.5 else (0, min(100, 5 * math.ceil(1.6 * worst / 5)))


def _name_off_chart(ax, runs: list[Run], top: float):
    """Name the networks whose final test error is above the chart, with that error, as the paper leaves out
    what lies above its range."""
    off = [f"{network_label(r.config)} {r.meta['final_test_error']:.2f}%" for r in runs
           if (r.meta["final_test_error"] or 0) > top]
    if off:
        ax.text(0.02, 0.97, "final test error above the chart: " + ", ".join(off), transform=ax.transAxes,
                fontsize=7, va="top")


def plot_figure6(runs: list[Run], path: str | Path | None = None, note: str = "", ylim=None):
    """Figure 6 of one study: plain nets left, ResNets middle, ResNet-110 vs 1202 right (when a 1202 run exists).

    x: iterations (1e4); y: error (%), 0-20 as in the paper at its schedule, at a shorter one a range that shows
    the ResNets (see ``_ylim``; ``ylim`` fixes it), networks ending above it named on the chart; dashed: training
    error, bold: test error; one colour per network (``NETWORK_COLORS``, as in Figure 7). The title names the
    study (data, schedule, precision).
    """
    studies = by_study(runs)
    if len(studies) > 1:
        raise ValueError(f"runs of {len(studies)} studies ({', '.join(studies)}): one Figure 6 per study "
                         "(plot_studies draws each)")
    curves = _curve_runs(runs)
    panels = [(net, [d for n, d in curves if n == net and in_trend(n, d)]) for net in ("plain", "resnet")]
    if ("resnet", 1202) in curves:
        panels.append(("resnet", [d for d in (110, 1202) if ("resnet", d) in curves]))
    # from the curves drawn: plain-110, left out as in the paper, sits at chance (90%) at short schedules
    ylim = ylim or _ylim([curves[(net, d)] for net, depths in panels for d in depths])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), sharex=True, sharey=True, squeeze=False)
    for ax, (net, depths) in zip(axes[0], panels):
        drawn = [curves[(net, d)] for d in sorted(depths)]
        _draw_curves(ax, [(r, network_color(net, r.config["depth"], f"C{i}")) for i, r in enumerate(drawn)],
                     ylim, empty=f"no finished {net} runs")
        _name_off_chart(ax, drawn, ylim[1])
    axes[0][0].set_ylabel("error (%)")
    _finish(fig, [r for r in curves.values()], "CIFAR-10 (He et al. 2016, Fig. 6): dashed training error, bold test error",
            note, path)
    return fig


def plot_studies(runs: list[Run], folder: str | Path | None = "assets") -> dict[str, plt.Figure]:
    """Figure 6 for every study among ``runs``; each saved as ``<folder>/figure6-<study>.png`` unless folder is None."""
    return {study: plot_figure6(study_runs, None if folder is None else Path(folder) / f"figure6-{study}.png")
            for study, study_runs in by_study(runs).items()}


FIGURE7_NETWORKS = (("plain", 20), ("plain", 56), ("resnet", 20), ("resnet", 56), ("resnet", 110))  # as in the paper


def figure7_runs(runs: list[Run]) -> tuple[str | None, list[Path]]:
    """Figure 7's networks (plain-20/56, ResNet-20/56/110, option A, lowest seed) from the study with the longest
    schedule among ``runs``: (that study, its run folders)."""

    studies = by_study([r for r in runs if (r.config["net"], r.config["depth"]) in FIGURE7_NETWORKS])
    if not studies:
        return None, []
    study = max(studies, key=lambda s: (TrainConfig.from_dict(studies[s][0].config).total_iterations, s))
    curves = _curve_runs(studies[study])
    return study, [curves[k].path for k in FIGURE7_NETWORKS if k in curves]


def plot_shortcuts(runs: list[Run], depth: int, path: str | Path | None = None, note: str = "", ylim=None):
    """Shortcut options A, B, C (and the plain net) at one depth, lowest seed each, drawn like Figure 6."""
    chosen = one_per_network([r for r in runs if r.config["depth"] == depth and not r.config.get("val_size")],
                             key=lambda c: "plain" if c["net"] == "plain" else c["shortcut"])
    fig, ax = plt.subplots(figsize=(5, 4))
    _draw_curves(ax, [(chosen[k], f"C{i}") for i, k in enumerate(("plain", "A", "B", "C")) if k in chosen],
                 ylim or _ylim(list(chosen.values())),
                 empty=f"no finished depth-{depth} runs", with_params=True)
    ax.set_ylabel("error (%)")
    _finish(fig, list(chosen.values()), f"Shortcut options at depth {depth}: dashed training, bold test error", note, path)
    return fig


def _draw_curves(ax, runs_and_colors: list[tuple[Run, str]], ylim, empty: str, with_params: bool = False):
    for run, color in runs_and_colors:
        x = run.log["iteration"] / 1e4
        ax.plot(x, run.log["train_error"], "--", color=color, linewidth=1)
        ax.plot(x, run.log["test_error"], "-", color=color, linewidth=2,
                label=network_label(run.config) + (f" ({run.meta['parameters']:,} params)" if with_params else ""))
    ax.set_ylim(*ylim)
    ax.set_xlabel("iter. (1e4)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(7, steps=[1, 2, 2.5, 5, 10]))  # the paper's 0, 1, ..., 6 at its schedule
    ax.grid(alpha=0.3)
    if runs_and_colors:
        ax.legend(loc="upper right", fontsize=7)
    else:
        ax.text(0.5, 0.5, empty, ha="center", transform=ax.transAxes)


def _finish(fig, runs: list[Run], title: str, note: str, path):
    studies = sorted({study_label(r.config) for r in runs})
    fig.suptitle(title + "".join(f"\n{s}" for s in studies) + (f"\n{note}" if note else ""), fontsize=9)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)


def save_figure(fig, path) -> bool:
    """Save ``fig`` (format from the suffix) whole, through ``write_atomic``: a kill or a full disk leaves the old
    figure, never a cut-off one. A file that already holds these very bytes is left as it is (False)."""
    import io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format=path.suffix.lstrip(".") or "png")
    if path.exists() and path.read_bytes() == buf.getvalue():
        return False
    write_atomic(buf.getvalue(), path)
    return True


@torch.inference_mode()
def layer_response_std(model: CifarNet, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Std of each 3x3 layer's response (after BN, before addition/ReLU), over all images, channels and positions.

    Accumulated in float64 over batches, in eval mode (BN with its running statistics).
    """
    model.eval()
    sums = None
    with capture_responses(model) as captured:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
            layers = captured.pop()
            stats = torch.tensor([[r.sum(), r.square().sum(), r.numel()] for r in map(torch.Tensor.double, layers)])
            sums = stats if sums is None else sums + stats
    total, total_sq, count = sums.T
    return (total_sq / count - (total / count) ** 2).clamp_min(0).sqrt().numpy()


def plot_figure7(stds: dict[str, np.ndarray], path: str | Path | None = None, note: str = ""):
    """Top: std per layer in network order; bottom: sorted in descending magnitude."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6))
    for i, (label, s) in enumerate(stds.items()):
        color = _label_color(label, f"C{i}")
        top.plot(np.arange(1, len(s) + 1), s, label=label, linewidth=1, color=color)
        bottom.plot(np.arange(1, len(s) + 1), np.sort(s)[::-1], label=label, linewidth=1, color=color)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # layers are counted, never fractional
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Std of 3x3 layer responses (after BN, before addition/ReLU; He et al. 2016, Fig. 7)"
                 + (f"\n{note}" if note else ""), fontsize=9)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def figure7_data(run_dirs: list[str | Path], data: str | None = None, device: str = "auto") -> dict:
    """Figure 7's numbers for saved runs, with what they come from (JSON-ready): for each network its run folder
    (``<study>/<name>``), the sha256 of its weights and the std per layer; and the test images used."""

    networks, used = [], set()
    for run_dir in map(Path, run_dirs):
        run = load_run(run_dir, device)
        dd, config = run.data(data), run.meta["config"]
        networks.append({"network": network_label(config), "net": config["net"], "depth": config["depth"],
                         "run": f"{run_dir.parent.name}/{run_dir.name}", "weights_sha256": run.meta.get("weights_sha256"),
                         "std": layer_response_std(run.model, dd.test_x).tolist()})
        used.add(f"{study_label(config)}; {len(dd.test_x)} test images of {dd.source}")
    return {"images": "; ".join(sorted(used)), "networks": networks}


FIGURE7_NETWORK_FIELDS = {"network": str, "net": str, "depth": int, "run": str, "weights_sha256": (str, type(None)),
                          "std": list}  # one entry of figure7_data's "networks"


def read_figure7_numbers(path: str | Path) -> dict:
    """Figure 7's numbers as ``draw_figure7`` saved them, validated: a damaged or hand-edited file is named."""
    path = Path(path)
    try:
        numbers = json.loads(path.read_text())
        problems = [] if isinstance(numbers.get("images"), str) else ["'images' is not a text"]
        networks = numbers["networks"]
        for i, n in enumerate(networks):
            problems += [f"network {i}: '{k}' missing or not {getattr(t, '__name__', 'text or null')}"
                         for k, t in FIGURE7_NETWORK_FIELDS.items() if not isinstance(n.get(k), t)]
            if isinstance(n.get("std"), list) and not (n["std"] and all(isinstance(v, float) for v in n["std"])):
                problems.append(f"network {i}: 'std' is not a list of numbers")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        problems = [f"{type(e).__name__}: {e}"]
    if problems:
        raise ValueError(f"{path}: malformed Figure 7 numbers ({'; '.join(problems)}); run `python -m resnet plot` "
                         "to redraw it")
    return numbers


def draw_figure7(run_dirs: list[str | Path], path: str | Path | None = None, data: str | None = None,
                 device: str = "auto", save: bool = True) -> tuple[plt.Figure, dict]:
    """Figure 7 of saved runs, and its numbers (``figure7_data``). Its numbers are kept beside ``path`` (the same
    name, ``.json``), from which the README's report checks the paper's findings: where they are of these very
    weights (each run's sha256) on the runs' own data, they are drawn again as they are, without evaluating anything
    (or needing the data); otherwise they are computed, and with ``save`` the figure and its numbers are written."""
    numbers = saved_figure7_numbers(run_dirs, path) if data is None else None
    fresh = numbers is None
    if fresh:
        numbers = figure7_data(run_dirs, data, device)
        for n in numbers["networks"]:  # 7 digits: float32's, and the same bytes whatever summation order ran
            n["std"] = [float(f"{v:.7g}") for v in n["std"]]
    keep = save and path is not None  # drawn again from the same numbers, an unchanged figure is not rewritten
    fig = plot_figure7({n["network"]: np.array(n["std"]) for n in numbers["networks"]}, path if keep else None,
                       numbers["images"])
    if keep and fresh:
        write_atomic(json.dumps(numbers, indent=1) + "\n", Path(path).with_suffix(".json"))
    return fig, numbers


def saved_figure7_numbers(run_dirs: list[str | Path], path: str | Path | None) -> dict | None:
    """The numbers saved beside ``path`` if they are of exactly these runs' weights, else None."""

    if path is None or not Path(path).with_suffix(".json").exists():
        return None
    numbers = read_figure7_numbers(Path(path).with_suffix(".json"))
    want = []
    for run_dir in map(Path, run_dirs):
        sha = read_meta(run_dir / META_FILE).get("weights_sha256")
        if sha is None:
            return None
        want.append((f"{run_dir.parent.name}/{run_dir.name}", sha))
    return numbers if [(n["run"], n["weights_sha256"]) for n in numbers["networks"]] == want else None
