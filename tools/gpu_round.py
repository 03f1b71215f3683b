"""One round of a GPU session: bring the study in, train what it lacks within a time limit, send it all back.

    python3 tools/gpu_round.py --data .gpu/data/cifar10-jpeg.tar.gz --out $OUT [--minutes 8.5] [--parallel 10] [--cuda-graph]

For the lent GPU machine (no network, no pip, 10 minutes a command, files back only through $OUT, gone after
30 s idle), where every command must leave nothing behind but what $OUT returns. A round:
  1. imports the study's archive from --carry (<study>.tar or its parts: the CPU campaign's finished runs, exported
     there before the first round, then what each round returned) into --results;
  2. sweeps the study's missing runs (JPEG stand-in, paper's schedule, bf16, on CUDA), in this order: the ten
     networks (plain-110 last: the paper leaves it out of Figure 6, and it costs a fifth of the study), then
     ResNet-110 seeds 1-4; each run stops at a checkpoint before --minutes;
  3. exports the study, unfinished runs' checkpoints included, into $OUT in parts of at most 15 MB.
Between rounds: a machine kept warm (the next command within 30 s) keeps .gpu/results and the data cache, so carry
only .gpu/data (the JPEG archive, 19 MB) and never .gpu as a whole (a carried path replaces the one there). Here,
replace .gpu/carry with each round's returned parts (`rm -rf .gpu/carry; mkdir .gpu/carry; cp <files_at>/* .gpu/carry/`);
name .gpu/carry in carry in the first command (the CPU campaign's finished runs) and after the machine was lost
(the tree travels up to 64 MiB in all). At the end of the
session bring the study home: `python -m resnet import .gpu/carry/<study>.tar --results results`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnet import TrainConfig, sweep  # noqa: E402
from resnet.placement import parse_runs_at_once  # noqa: E402
from resnet.transfer import export_study, import_study  # noqa: E402


def study_runs(data: str, cuda_graph: bool = False) -> list[TrainConfig]:
    """The GPU session's runs, in the order they train."""
    base = TrainConfig(data=data, precision="bf16", device="cuda", seed=0, cuda_graph=cuda_graph)
    ten = [dataclasses.replace(base, net=n, depth=d) for d in (20, 32, 44, 56, 110) for n in ("resnet", "plain")]
    ten = sorted(ten, key=lambda c: (c.net, c.depth) == ("plain", 110))  # plain-110 last, the rest as listed
    return ten + [dataclasses.replace(base, depth=110, seed=s) for s in (1, 2, 3, 4)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the JPEG archive, carried into an ignored folder")
    p.add_argument("--out", required=True, help="the folder whose files come back ($OUT)")
    p.add_argument("--results", default=".gpu/results", help="where the study lives on the GPU machine")
    p.add_argument("--carry", default=".gpu/carry", help="archives returned by earlier rounds, carried in again")
    p.add_argument("--minutes", type=float, default=8.5, help="training time of this round (the command's limit is 10)")
    p.add_argument("--parallel", type=parse_runs_at_once, default=10, help=(
        "runs at once (default: 10, the whole study side by side within the round; 'auto': sweep's measured choice)"))
    p.add_argument("--cuda-graph", action="store_true", help="the graphed step (once gpu_check has passed)")
    p.add_argument("--part-mb", type=float, default=15.0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    configs = study_runs(args.data, args.cuda_graph)
    study = configs[0].study  # its archives only: others (graph_accuracy's) may be carried beside them
    for archive in [p for p in (Path(args.carry) / f"{study}.tar", Path(args.carry) / f"{study}.tar.part000") if p.exists()]:
        for run, what in import_study(archive, args.results).items():
            print(f"import {archive.name}: {run}: {what}", flush=True)
    budget = args.minutes * 60 - (time.perf_counter() - start)
    metas = sweep(configs, args.results, parallel=args.parallel, time_limit=budget, progress=False)
    for meta in metas:
        print(f"{meta['name']}: {meta['status']} at iteration {meta['iterations_done']}, "
              f"test error {meta['final_test_error']}, {meta['wall_s'] / 60:.1f} min trained", flush=True)
    for part in export_study(Path(args.results) / study, Path(args.out) / f"{study}.tar", unfinished=True,
                             part_mb=args.part_mb):
        print(f"exported {part} ({part.stat().st_size / 1e6:.1f} MB)")
    print(f"round done in {(time.perf_counter() - start) / 60:.1f} min; "
          f"{sum(m['status'] == 'finished' for m in metas)} of {len(configs)} runs finished")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
