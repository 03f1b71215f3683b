"""What the ten-network study costs on this machine, at the paper's schedule and at 1/8 of it: the notebook's cost
estimate (resnet.sweeps: a few timed training iterations and a timed evaluation per network), for a study from scratch.

    python -m benchmarks.study_cost [--precision bf16] [--device auto] [--data PATH] [--out benchmarks/study_cost_<cpu|cuda>_<precision>.md]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from resnet.files import write_atomic
from resnet import TrainConfig
from resnet.sweeps import estimate_cost

from .common import environment, markdown_table

SCHEDULES = ("1", "1/8")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"
                                         / "cifar10-jpeg.tar.gz"))
    p.add_argument("--iterations", type=int, default=3, help="timed iterations per network (after one untimed)")
    p.add_argument("--depths", type=int, nargs="+", default=[20, 32, 44, 56, 110])
    p.add_argument("--note", default="", help="a line on the conditions (e.g. what else ran on the machine)")
    p.add_argument("--out", help="default: benchmarks/study_cost_<cpu|cuda>_<precision>.md")
    args = p.parse_args(argv)
    base = TrainConfig(data=args.data, precision=args.precision, device=args.device)
    configs = [dataclasses.replace(base, net=n, depth=d) for d in args.depths for n in ("resnet", "plain")]
    with tempfile.TemporaryDirectory() as empty:  # a study from scratch: nothing finished
        timed = estimate_cost(configs, empty, iterations=args.iterations)
    rows, totals = [], {s: 0.0 for s in SCHEDULES}
    for cfg, t in zip(configs, timed):
        row = {"network": f"{cfg.net}-{cfg.depth}", "s / iteration": f"{t['s / iteration']:.3f}",
               "s / evaluation (10k test images)": f"{t['s / evaluation']:.1f}"}
        for schedule in SCHEDULES:
            scaled = dataclasses.replace(cfg, schedule=schedule)
            evaluations = -(-scaled.total_iterations // scaled.eval_every)
            hours = (scaled.total_iterations * t["s / iteration"] + evaluations * t["s / evaluation"]) / 3600
            totals[schedule] += hours
            row[f"hours, {'paper' if schedule == '1' else schedule} schedule"] = f"{hours:.2f}"
        rows.append(row)
    env = environment(args.device)
    kind = "cpu" if env["device"].startswith("cpu") else "cuda"
    out = Path(args.out or f"benchmarks/study_cost_{kind}_{args.precision}.md")
    text = f"""# What the study costs: {env['device']}, {args.precision}

{__doc__.splitlines()[0]}
{__doc__.splitlines()[1]}

{markdown_table(rows)}

The {len(configs)} networks, one at a time: **{totals['1']:.1f} hours at the paper's schedule (64k iterations), {totals['1/8']:.1f}
hours at 1/8 (8k)**, batch 128, {args.precision}, checkpoints and process start left out. Each network's step was
timed over {args.iterations} iterations after an untimed one, and its evaluation on a tenth of the test set, times
ten.

Measured {env['date']} on {env['device']}, torch {env['torch']}, python {env['python']}, commit
{env['git_commit'][:10]}; data: {Path(args.data).name}.{(' ' + args.note) if args.note else ''}
"""
    write_atomic(text, out)
    # the totals, machine-readable, for the README's cost table (resnet.report)
    summary = {"device": env["device"], "precision": args.precision, "networks": len(configs),
               "hours_paper_schedule": totals["1"], "hours_1of8_schedule": totals["1/8"],
               "date": env["date"], "torch": env["torch"], "details": out.name}
    write_atomic(json.dumps(summary, indent=1) + "\n", out.with_suffix(".json"))
    print(text)


if __name__ == "__main__":
    main()
