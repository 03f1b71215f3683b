"""Training speed of the real trainer, per network and precision, and of concurrent sweeps.

For each network it runs ``resnet.train`` for a short stretch of the paper's recipe (batch 128, the same
augmentation and optimiser) and reads the throughput after a warm-up stretch (cuDNN autotuning, allocator),
then projects the 64k-iteration time. 'fp32' is the plain eager path, 'bf16' the autocast path. The sweep
figure runs several networks at once (``sweep(parallel=k)``, separate processes) and reports their total wall time.

    python -m benchmarks.speed                 # on a GPU: all ten networks, fp32 and bf16, and a 4-way sweep
    python -m benchmarks.speed --smoke         # seconds on a CPU: checks the script end to end, no timing claims
Writes <out>/speed.csv and <out>/speed.md with the device, versions and settings.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from resnet import TrainConfig, sweep, train
from resnet.data import device_data
from resnet.trainer import resolve_device

from .common import environment, markdown_table

PAPER_ITERATIONS = 64_000


def measure(cfg: TrainConfig, data, warmup: int, iterations: int) -> float:
    """Iterations per second of train(cfg) after ``warmup`` iterations (measured between two evaluation rows)."""
    # rows every `warmup` iterations (evaluations are part of the protocol's cost); no checkpoint before the end
    cfg = dataclasses.replace(cfg, iterations=warmup + iterations, eval_every=warmup, milestones=(),
                              checkpoint_every=warmup * 10**6)
    with tempfile.TemporaryDirectory() as d:
        meta = train(cfg, d, data=data, progress=False)
        rows = list(csv.DictReader(open(cfg.run_dir(d) / "log.csv")))
    first, last = rows[0], rows[-1]
    seconds = float(last["elapsed_s"]) - float(first["elapsed_s"])
    assert meta["status"] == "finished"
    return (int(last["iteration"]) - int(first["iteration"])) / seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny networks, few iterations, a data subset: seconds on a CPU")
    p.add_argument("--data", default=os.environ.get("RESNET_DATA", ""), help="data source (default: RESNET_DATA or official)")
    p.add_argument("--depths", type=int, nargs="+", default=[20, 32, 44, 56, 110])
    p.add_argument("--nets", nargs="+", default=["plain", "resnet"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--warmup", type=int, default=200, help="iterations before the measurement")
    p.add_argument("--iterations", type=int, default=600, help="measured iterations")
    p.add_argument("--parallel", type=int, default=4, help="runs at once in the sweep measurement")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="benchmarks")
    args = p.parse_args(argv)
    base = TrainConfig(data=args.data, device=args.device)
    if args.smoke:
        args.depths, args.precisions, args.warmup, args.iterations, args.parallel = [8], ["fp32"], 4, 4, 2
        base = dataclasses.replace(base, batch_size=32, train_subset=500, test_subset=100)
    device = resolve_device(args.device)
    data = device_data(base, device)

    rows = []
    for net in args.nets:
        for depth in args.depths:
            for precision in args.precisions:
                cfg = dataclasses.replace(base, net=net, depth=depth, precision=precision, warmup=False)
                its = measure(cfg, data, args.warmup, args.iterations)
                rows.append({"network": f"{net}-{depth}", "precision": precision, "iterations/s": f"{its:.1f}",
                             "projected 64k s": f"{PAPER_ITERATIONS / its:.0f}"})
                print(rows[-1], flush=True)
    base_rows = {(r["network"]): float(r["iterations/s"]) for r in rows if r["precision"] == "fp32"}
    for r in rows:
        if r["precision"] != "fp32" and r["network"] in base_rows:
            r["speed-up vs fp32"] = f"{float(r['iterations/s']) / base_rows[r['network']]:.2f}x"
    for r in rows:
        r.setdefault("speed-up vs fp32", "1.00x" if r["precision"] == "fp32" else "")

    # The sweep: all networks at once, k processes, a fixed number of iterations each.
    n_its = args.warmup + args.iterations
    configs = [dataclasses.replace(base, net=n, depth=d, iterations=n_its, eval_every=n_its, checkpoint_every=n_its,
                                   milestones=(), warmup=False) for n in args.nets for d in args.depths]
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        sweep(configs, d, parallel=args.parallel, progress=False)
        wall = time.perf_counter() - start
    sequential = sum(n_its / base_rows[f"{c.net}-{c.depth}"] for c in configs)
    sweep_line = (f"{len(configs)} networks x {n_its} iterations, {args.parallel} at once (fp32, process start and "
                  f"data loading included): {wall:.1f} s wall, against {sequential:.1f} s of measured sequential "
                  f"training time; projected for 64k iterations each: {wall * PAPER_ITERATIONS / n_its / 60:.1f} min")
    print(sweep_line)

    env = environment(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "speed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) + list(env))
        w.writeheader()
        for r in rows:
            w.writerow({**r, **env})
    settings = (f"batch {base.batch_size}, {args.warmup} warm-up + {args.iterations} measured iterations per network, "
                f"data {data.source} ({len(data.train_x)} training images on the device)"
                + (" — SMOKE MODE: tiny networks, no meaningful timings" if args.smoke else ""))
    (out / "speed.md").write_text(
        f"# Training speed\n\n{env['device']}, torch {env['torch']}, {env['date']}, commit {env['git_commit']}\n\n"
        f"Settings: {settings}.\n\n{markdown_table(rows)}\n\nSweep: {sweep_line}.\n")
    print(f"wrote {out / 'speed.csv'} and {out / 'speed.md'}")


if __name__ == "__main__":
    main()
