"""The CPU campaign: the study's first real results, trained on a 2-core CPU a few hours at a time.

    python tools/cpu_campaign.py --until 18:25 [--data ../shared/data/cifar10-jpeg.tar.gz] [--results results]

One sweep, in this order (JPEG stand-in, seed 0, bf16 autocast, which benchmarks/bf16_cpu.md checks against fp32):
  1. ResNet-20 and plain-20 at the paper's schedule;
  2. all ten networks (plain and ResNet, depths 20, 32, 44, 56, 110) at the 1/8 schedule;
  3. ResNet-56 and plain-56 at the paper's schedule;
  4. then any other paper-schedule run of the study that a GPU session left unfinished here (its checkpoint in the
     run folder), in the GPU session's order (the ten, plain-110 last, then ResNet-110 seeds 1-4), so that such a run
     goes on training while it waits for the next GPU rather than waiting idle.
Finished runs are skipped, an unfinished one resumes from its checkpoint, and the runs in progress stop at a
checkpoint before --until (the next call goes on from there). Start it in the background, its output in an ignored
log: nohup .venv/bin/python tools/cpu_campaign.py --until HH:MM > .campaign/campaign.log 2>&1 &
At the end of the session, tools/campaign_end.sh waits for it to stop, regenerates the figures, notebook and README,
and stages them with results/, the checkpoints of the runs in progress included: committed, a run survives the loss
of the machine (a checkpoint lost anyway restarts its run from the beginning, recorded in run.json's `restarted`).

Two runs train at once, one thread each (--parallel 2): on this project's 2-core CPU that finishes the campaign about
8-15% sooner than one run at a time on both cores (benchmarks/cpu_parallel.md). Each run's output is in its
folder's train.log. A run in progress that last trained with another thread count first finishes alone with that
count, so that a run never changes its arithmetic part-way (a resume is bit-for-bit only with as many threads, and
run.json records one count).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from resnet import TrainConfig, sweep  # noqa: E402
from resnet.placement import cpu_threads_per_run  # noqa: E402
from resnet.results import META_FILE, read_meta  # noqa: E402
from resnet.trainer import CHECKPOINT_FILE  # noqa: E402


def campaign(data: str, results: str | Path | None = None) -> list[TrainConfig]:
    """The campaign's runs, in the order they train: steps 1-3, then (step 4) the other paper-schedule runs of the
    study that ``results`` holds unfinished with a checkpoint."""
    base = TrainConfig(data=data, precision="bf16", device="cpu", seed=0)
    nets = ("resnet", "plain")
    step1 = [dataclasses.replace(base, net=n, depth=20) for n in nets]
    step2 = [dataclasses.replace(base, net=n, depth=d, schedule="1/8") for d in (20, 32, 44, 56, 110) for n in nets]
    step3 = [dataclasses.replace(base, net=n, depth=56) for n in nets]
    steps = step1 + step2 + step3
    ten = [dataclasses.replace(base, net=n, depth=d) for d in (20, 32, 44, 56, 110) for n in nets]
    ten = sorted(ten, key=lambda c: (c.net, c.depth) == ("plain", 110))  # plain-110 last, as a GPU session has it
    seeds = [dataclasses.replace(base, depth=110, seed=s) for s in (1, 2, 3, 4)]
    step4 = [c for c in ten + seeds if c not in steps and results is not None and started_elsewhere(c, results)]
    return steps + step4


def started_elsewhere(cfg: TrainConfig, results: str | Path) -> bool:
    """Whether ``results`` holds an unfinished run of ``cfg`` with its checkpoint (one a GPU session began)."""
    run_dir = cfg.run_dir(results)
    return ((run_dir / META_FILE).exists() and (run_dir / CHECKPOINT_FILE).exists()
            and read_meta(run_dir / META_FILE)["status"] == "running")


def seconds_until(clock_time: str, now: dt.datetime | None = None) -> float:
    """Seconds from now to the next HH:MM (today, or tomorrow if it has passed)."""
    now = now or dt.datetime.now()
    hour, minute = map(int, clock_time.split(":"))
    end = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if end <= now:
        end += dt.timedelta(days=1)
    return (end - now).total_seconds()


def threads_in_progress(cfg: TrainConfig, results: str | Path) -> int | None:
    """The CPU threads an unfinished run of ``cfg`` last trained with (None: finished, or nothing trained yet, as
    when a process was stopped before the run's first checkpoint)."""
    path = cfg.run_dir(results) / META_FILE
    if not path.exists():
        return None
    meta = read_meta(path)
    return None if meta["status"] == "finished" or meta["iterations_done"] == 0 else meta.get("cpu_threads")


def _report(metas: list[dict]):
    for meta in metas:
        print(f"{dt.datetime.now():%H:%M:%S} {meta['config']['schedule']:>4} {meta['name']}: {meta['status']} at "
              f"iteration {meta['iterations_done']}, final test error {meta['final_test_error']}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--until", required=True, help="HH:MM (this machine's clock): stop at a checkpoint before then")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--parallel", type=int, default=2, help="runs at once, sharing the CPU's threads (default 2)")
    args = p.parse_args(argv)
    limit = seconds_until(args.until)
    end = time.monotonic() + limit
    threads = cpu_threads_per_run(args.parallel)
    print(f"{dt.datetime.now():%H:%M:%S} campaign until {args.until} ({limit / 3600:.2f} h), {args.parallel} at once, "
          f"{threads} thread(s) each", flush=True)
    configs = campaign(args.data, args.results)
    own = torch.get_num_threads()
    for cfg in configs:
        started_with = threads_in_progress(cfg, args.results)
        if started_with is not None and started_with != threads and time.monotonic() < end:
            print(f"{dt.datetime.now():%H:%M:%S} {cfg.name} ({cfg.schedule}) resumes alone with the "
                  f"{started_with} thread(s) it started with", flush=True)
            torch.set_num_threads(started_with)
            _report(sweep([cfg], args.results, parallel=1, time_limit=end - time.monotonic(), progress=False))
    torch.set_num_threads(own)
    if time.monotonic() < end:
        _report(sweep(configs, args.results, parallel=args.parallel, time_limit=end - time.monotonic(),
                      progress=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
