"""Memory layout on the CPU: the training step and the evaluation with the images and weights channels-last (how
runs train, on every device) against the default contiguous (NCHW) layout, in which CPU runs begun before the layout
was recorded go on training.

    python -m benchmarks.cpu_layout --data PATH [--out benchmarks]
    python -m benchmarks.cpu_layout --smoke --data PATH      # seconds: the same code, tiny, no timing claims

Measured, per network (ResNet-20, 56 by default), precision (bf16, fp32) and torch CPU thread count (1, as each of
two runs at once trains in a CPU sweep; 2): seconds per training step (batch 128) and per evaluation of 1,000 test
images, each layout's model built from the same seed; the two layouts' timed steps alternate (so that a machine's
drift weighs on both alike), after 2 untimed steps each. Beside it, what the layout changes in the numbers: from
the same weights, one update in each layout (the largest weight difference, relative to the largest weight) and
the test predictions of the same weights in each layout (how many of the images differ). A layout changes only the
order of the float sums, so both are expected at rounding level.

Writes <out>/cpu_layout.md and <out>/cpu_layout.json.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from resnet import TrainConfig
from resnet.data import Batches, device_data
from resnet.files import write_atomic
from resnet.steps import predictions, step
from resnet.trainer import build

from .common import environment, markdown_table

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _in_layout(model, optimizer, layout):
    """A copy of ``model`` (and a fresh SGD of the same settings, given its state) laid out in ``layout``."""
    twin = copy.deepcopy(model).to(memory_format=LAYOUTS[layout])
    opt = type(optimizer)(twin.parameters(), **optimizer.defaults)
    opt.load_state_dict(optimizer.state_dict())
    return twin, opt


def _timed(fn, rounds: int, per_round: int) -> dict[str, float]:
    """Seconds per call of each of ``fn``'s layouts, their calls alternating round by round (2 untimed first)."""
    seconds = dict.fromkeys(LAYOUTS, 0.0)
    for layout in LAYOUTS:
        for _ in range(2):
            fn(layout)
    for _ in range(rounds):
        for layout in LAYOUTS:
            start = time.perf_counter()
            for _ in range(per_round):
                fn(layout)
            seconds[layout] += time.perf_counter() - start
    return {layout: s / (rounds * per_round) for layout, s in seconds.items()}


def measure(cfg: TrainConfig, data, threads: int, rounds: int, per_round: int) -> dict:
    torch.set_num_threads(threads)
    model, optimizer = build(cfg, torch.device("cpu"))
    runs = {layout: _in_layout(model, optimizer, layout) for layout in LAYOUTS}
    batches = {layout: Batches(data, cfg.batch_size, cfg.seed, LAYOUTS[layout]) for layout in LAYOUTS}

    def train_step(layout):
        step(*runs[layout], *next(batches[layout]), cfg.precision)

    def evaluation(layout):
        predictions(runs[layout][0], data.test_x.contiguous(memory_format=LAYOUTS[layout]), cfg.precision)

    train = _timed(train_step, rounds, per_round)
    evaluate = _timed(evaluation, max(1, rounds // 2), 1)
    return {"network": f"{cfg.net}-{cfg.depth}", "precision": cfg.precision, "threads": threads,
            "s/step, contiguous": round(train["contiguous"], 4),
            "s/step, channels_last": round(train["channels_last"], 4),
            "step gain": round(train["contiguous"] / train["channels_last"], 3),
            "s/evaluation, contiguous": round(evaluate["contiguous"], 3),
            "s/evaluation, channels_last": round(evaluate["channels_last"], 3),
            "evaluation gain": round(evaluate["contiguous"] / evaluate["channels_last"], 3)}


def difference(cfg: TrainConfig, data) -> dict:
    """From the same weights and batch: one update in each layout, and the test predictions in each layout."""
    model, optimizer = build(cfg, torch.device("cpu"))
    x, y = next(Batches(data, cfg.batch_size, cfg.seed))
    weights = {}
    for layout in LAYOUTS:
        twin, opt = _in_layout(model, optimizer, layout)
        step(twin, opt, x.contiguous(memory_format=LAYOUTS[layout]), y, cfg.precision)
        weights[layout] = torch.cat([p.detach().flatten() for p in twin.parameters()])
        predicted = predictions(twin, data.test_x.contiguous(memory_format=LAYOUTS[layout]), cfg.precision)
        weights[layout + " predictions"] = predicted
    largest = weights["contiguous"].abs().max().item()
    gap = (weights["contiguous"] - weights["channels_last"]).abs().max().item()
    differ = (weights["contiguous predictions"] != weights["channels_last predictions"]).sum().item()
    return {"network": f"{cfg.net}-{cfg.depth}", "precision": cfg.precision,
            "one update: largest weight difference / largest weight": f"{gap / largest:.1e}",
            "test predictions that differ": f"{differ} of {len(data.test_y)}"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="data source: batches from its training images, 1,000 test images")
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=("bf16", "fp32"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=4, help="rounds of alternating timed steps")
    p.add_argument("--per-round", type=int, default=3, help="timed steps per layout and round")
    p.add_argument("--smoke", action="store_true", help="depth 8, batch 16, 1 step a round: the code, no timing claims")
    p.add_argument("--out", default="benchmarks")
    args = p.parse_args(argv)
    base = TrainConfig(data=args.data, device="cpu", train_subset=1000 if args.smoke else 0)
    depths = args.depths
    if args.smoke:
        depths, args.rounds, args.per_round, args.threads = [8], 2, 1, args.threads[:1]
        base = dataclasses.replace(base, batch_size=16)
    data = device_data(dataclasses.replace(base, test_subset=100 if args.smoke else 1000), torch.device("cpu"))
    threads_before = torch.get_num_threads()
    rows, diffs = [], []
    try:
        for precision in args.precisions:
            for depth in depths:
                cfg = dataclasses.replace(base, depth=depth, precision=precision)
                diffs.append(difference(cfg, data))
                print(diffs[-1], flush=True)
                for threads in args.threads:
                    rows.append(measure(cfg, data, threads, args.rounds, args.per_round))
                    print(rows[-1], flush=True)
    finally:
        torch.set_num_threads(threads_before)
    gains = [r["step gain"] for r in rows]
    verdict = "smoke mode: no figures" if args.smoke else (
        f"channels-last trains {min(gains):.2f}x to {max(gains):.2f}x as fast as the contiguous layout per step")
    env = environment("cpu")
    summary = {"environment": env, "smoke": args.smoke, "speed": rows, "difference": diffs, "verdict": verdict}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(json.dumps(summary, indent=1) + "\n", out / "cpu_layout.json")
    lines = [f"# Memory layout on the CPU{' — SMOKE MODE: no meaningful timings' if args.smoke else ''}", "",
             " ".join(__doc__.split("\n\n")[0].split()), "", " ".join(__doc__.split("\n\n")[2].split()), "",
             f"## Speed (batch {base.batch_size}; {args.rounds} rounds of {args.per_round} timed steps per layout, "
             "alternating)", "", markdown_table(rows), "",
             "*gain*: the contiguous layout's seconds over channels-last's (above 1: channels-last is faster).", "",
             f"**{verdict}.**", "", "## What the layout changes in the numbers", "", markdown_table(diffs), "",
             f"Measured {env['date']} on {env['device']}, torch {env['torch']}, commit {env['git_commit'][:10]}; "
             f"batches from {Path(args.data).name}'s training images, a class-balanced {len(data.test_y)} of its test "
             "images."]
    write_atomic("\n".join(lines) + "\n", out / "cpu_layout.md")
    print(f"wrote {out / 'cpu_layout.md'}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
