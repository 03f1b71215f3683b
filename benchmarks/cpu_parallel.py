"""Runs side by side on the CPU: one run with every thread, against N runs at once with 1/N of the threads each
(what ``sweep --parallel N`` does on a CPU), per network: the training step and the evaluation, timed as the
notebook's cost estimate times them (resnet.sweeps), all N processes at once.

    python -m benchmarks.cpu_parallel [--runs 2] [--precision bf16] [--depths 20 56 110] [--data PATH] [--out benchmarks/cpu_parallel.md]

Nothing else should run on the machine meanwhile: the figures are the CPU's, shared by the processes timed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from resnet.files import write_atomic
from resnet import TrainConfig
from resnet.sweeps import cpu_threads_per_run

from .common import environment, markdown_table

ROOT = Path(__file__).resolve().parent.parent


def time_alone(cfg: TrainConfig, threads: int, iterations: int) -> dict:
    """Seconds per iteration and per evaluation of ``cfg`` in this process, with ``threads`` threads."""
    import torch

    from resnet.data import device_data
    from resnet.sweeps import time_network

    torch.set_num_threads(threads)
    per_it, per_eval = time_network(cfg, device_data(cfg, torch.device("cpu")), iterations)
    return {"s / iteration": per_it, "s / evaluation": per_eval}


def time_at_once(cfg: TrainConfig, runs: int, threads: int, iterations: int) -> list[dict]:
    """``time_alone`` in ``runs`` processes started together (each times its own steps, all on the CPU at once)."""
    job = json.dumps({"config": cfg.to_dict(), "threads": threads, "iterations": iterations})
    worker = [sys.executable, "-m", "benchmarks.cpu_parallel", "--worker", job]
    procs = [subprocess.Popen(worker, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(runs)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a timing process failed: {[p.returncode for p in procs]}")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def measure(cfg: TrainConfig, runs: int, iterations: int) -> dict:
    """One network: alone with every thread, and ``runs`` at once with their share; throughputs as images/s of all
    the runs together, and what a 1/8-schedule run costs per run either way (steps and evaluations)."""
    import torch

    threads = torch.get_num_threads()
    alone = time_at_once(cfg, 1, threads, iterations)[0]
    shared = time_at_once(cfg, runs, cpu_threads_per_run(runs, threads), iterations)
    each_it = sum(t["s / iteration"] for t in shared) / runs
    each_eval = sum(t["s / evaluation"] for t in shared) / runs
    scaled = dataclasses.replace(cfg, schedule="1/8")
    evaluations = -(-scaled.total_iterations // scaled.eval_every)

    def hours_per_run(per_it, per_eval, at_once):
        return (scaled.total_iterations * per_it + evaluations * per_eval) / 3600 / at_once

    one, many = hours_per_run(alone["s / iteration"], alone["s / evaluation"], 1), hours_per_run(each_it, each_eval, runs)
    return {"network": f"{cfg.net}-{cfg.depth}", "threads alone": threads,
            f"threads each, {runs} at once": cpu_threads_per_run(runs, threads),
            "images/s, alone": round(cfg.batch_size / alone["s / iteration"]),
            f"images/s, {runs} at once (together)": round(runs * cfg.batch_size / each_it),
            "s / evaluation, alone": round(alone["s / evaluation"], 1),
            f"s / evaluation, {runs} at once (each)": round(each_eval, 1),
            "hours per 1/8 run, alone": round(one, 3), f"hours per 1/8 run, {runs} at once": round(many, 3),
            "gain": round(one / many, 3)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2, help="runs at once (default 2)")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    p.add_argument("--iterations", type=int, default=20, help="timed iterations per process (after one untimed)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    p.add_argument("--note", default="", help="a line on the conditions")
    p.add_argument("--out", default="benchmarks/cpu_parallel.md")
    p.add_argument("--smoke", action="store_true", help="depth 8 on 1,000 images, one iteration: seconds (CI)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # a timing process: its job as JSON
    args = p.parse_args(argv)
    if args.smoke:
        args.depths, args.iterations = [8], 1
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(time_alone(TrainConfig.from_dict(job["config"]), job["threads"], job["iterations"])))
        return
    base = TrainConfig(data=args.data, precision=args.precision, device="cpu",
                       **(dict(train_subset=1000, test_subset=500) if args.smoke else {}))
    rows = [measure(dataclasses.replace(base, depth=d), args.runs, args.iterations) for d in args.depths]
    env = environment("cpu")
    out = Path(args.out)
    text = f"""# Runs side by side on the CPU: {env['device']}, {args.precision}{' (SMOKE MODE: not a measurement)' if args.smoke else ''}

{__doc__.split(chr(10) + chr(10))[0]}

{markdown_table(rows)}

"gain": how much sooner {args.runs} runs at once finish a set of runs than one run at a time with every thread
(per-run hours at the 1/8 schedule, steps and evaluations, process start and checkpoints left out). Each process
timed {args.iterations} training iterations after an untimed one and an evaluation on a tenth of the test set, times
ten; "together" is the sum of the {args.runs} processes' throughputs.

Measured {env['date']} on {env['device']}, torch {env['torch']}, python {env['python']}, commit
{env['git_commit'][:10]}; data: {Path(args.data).name}.{(' ' + args.note) if args.note else ''}
"""
    write_atomic(text, out)
    write_atomic(json.dumps({"runs": args.runs, "precision": args.precision, "rows": rows,
                                                    "smoke": args.smoke,
                                                    "date": env["date"], "device": env["device"],
                                                    "torch": env["torch"]}, indent=1) + "\n", out.with_suffix(".json"))
    print(text)


if __name__ == "__main__":
    main()
