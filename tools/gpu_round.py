"""The training of a GPU session: bring the unfinished runs in, train what the studies lack, send it all back.

    python3 tools/gpu_round.py --data .gpu/data/cifar10-jpeg.tar.gz --out $OUT --minutes 6 [--cuda-graph]

For the lent GPU machine: 15 minutes of device time a session (its start included), 10 minutes a command, no
network, files back only through $OUT (8 files of at most 16 MiB, 64 MiB in all), and a tree of at most 64 MiB
carried in. `tools/gpu_session.py device` runs it after the CUDA check, in the session's one command;
`gpu_session.py prepare` makes what it carries in, and `finish` brings home what it returns. A round:
  1. imports the unfinished runs carried in (--carry: <study>.tar, made by `prepare`) into --results;
  2. trains, --parallel at once, the runs not finished at home (--home, the tree's results/, whose run.json files
     say which; their weights need not travel), in this order (JPEG stand-in, bf16, seed 0, on CUDA): the ten
     networks at the 1/8 schedule (the CPU campaign's step 2: an eighth of the paper's schedule), then the paper's
     schedule: the ten (plain-110 last: the paper leaves it out of Figure 6, and it costs a fifth of the study),
     then ResNet-110 seeds 1-4;
  3. exports each study's runs (unfinished ones with their checkpoints) into $OUT in parts of 16 MB.
What travels decides what trains: an unfinished run returns, and is carried in again next time, as its
checkpoint (about 10 bytes a parameter: 17 MB for a 110-layer network), a finished one as its weights (about 4).
So the runs carried in always train on; a new paper-schedule run starts only while the checkpoints stay within
--carry-mb and everything returned within --return-mb (1/8 runs counted at their weights: they finish in a round).
Should the round return more than that after all, unfinished runs are left out from the end of the order, each
named (a loss of minutes, never of a finished run).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from fractions import Fraction
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnet import TrainConfig, build_model, sweep  # noqa: E402
from resnet.models import count_parameters  # noqa: E402
from resnet.placement import parse_runs_at_once  # noqa: E402
from resnet.results import META_FILE, read_meta  # noqa: E402
from resnet.runfolder import finished_meta  # noqa: E402
from resnet.transfer import export_study, import_study  # noqa: E402

# Bytes a parameter, measured on ResNet-20 (269,722 parameters): a checkpoint of 2,643,049 bytes (weights, SGD
# momentum, BN statistics, generator states), final weights of 1,118,423; plus the log and run.json.
CHECKPOINT_BYTES, WEIGHTS_BYTES, RUN_FILES_BYTES = 10.0, 4.2, 40_000
PART_MB = 16.0  # $OUT takes files of up to 16 MiB (16.8 MB)


def study_runs(data: str, cuda_graph: bool = False) -> list[TrainConfig]:
    """A GPU session's runs, in the order they train: the ten at 1/8, then the paper's ten and four more seeds."""
    base = TrainConfig(data=data, precision="bf16", device="cuda", seed=0, cuda_graph=cuda_graph)
    ten = [dataclasses.replace(base, net=n, depth=d) for d in (20, 32, 44, 56, 110) for n in ("resnet", "plain")]
    ten = sorted(ten, key=lambda c: (c.net, c.depth) == ("plain", 110))  # plain-110 last, the rest as listed
    short = [dataclasses.replace(c, schedule="1/8") for c in ten]
    return short + ten + [dataclasses.replace(base, depth=110, seed=s) for s in (1, 2, 3, 4)]


def returned_mb(cfg: TrainConfig, finished: bool) -> float:
    """Roughly what a run of ``cfg`` adds to the files a round returns (MB): its weights, or its checkpoint."""
    params = count_parameters(build_model(cfg))
    return (params * (WEIGHTS_BYTES if finished else CHECKPOINT_BYTES) + RUN_FILES_BYTES) / 1e6


def plan(configs: list[TrainConfig], home: Path, carried: set[tuple[str, str]], carry_mb: float,
         return_mb: float) -> list[TrainConfig]:
    """The runs this round trains, in the order given: those not finished at ``home``; of them, those carried in
    (whose checkpoints return anyway), then the others in order, each while it keeps the returned files within
    ``return_mb`` and the checkpoints (carried in again next time) within ``carry_mb``. A 1/8 run counts at its
    weights' size: it finishes within a round."""
    todo = [c for c in configs if finished_meta(c, home) is None]
    first = [c for c in todo if (c.study, c.name) in carried] + [c for c in todo if (c.study, c.name) not in carried]
    chosen, back, checkpoints = set(), 0.0, 0.0
    for c in first:
        finishes = Fraction(c.schedule) < 1  # a short schedule ends within the round
        mb = returned_mb(c, finished=finishes)
        if (c.study, c.name) in carried or (back + mb <= return_mb and (finishes or checkpoints + mb <= carry_mb)):
            chosen.add((c.study, c.name))
            back, checkpoints = back + mb, checkpoints + (0 if finishes else mb)
    return [c for c in todo if (c.study, c.name) in chosen]


def runs_to_return(order: list[TrainConfig], results: Path, return_mb: float, files: int) -> dict[str, list[str]]:
    """Per study, the runs of ``results`` to export: finished ones first, then unfinished ones in ``order``, while
    the parts (of PART_MB) stay within ``return_mb`` and ``files``. Those left out are named on stdout."""
    found = []
    for c in order:
        run_dir = c.run_dir(results)
        if (run_dir / META_FILE).exists():
            status = read_meta(run_dir / META_FILE)["status"]
            if status in ("finished", "running"):
                size = sum(f.stat().st_size for f in run_dir.iterdir() if f.name in ("weights.pt", "checkpoint.pt",
                                                                                      "log.csv", META_FILE))
                found.append((status != "finished", c, size / 1e6))
    kept: dict[str, list[str]] = {}
    for unfinished, c, mb in sorted(found, key=lambda f: f[0]):  # stable: finished first, each in order
        trial = {**kept, c.study: kept.get(c.study, []) + [c.name]}
        sizes = {s: sum(m for _, cc, m in found if cc.study == s and cc.name in names) for s, names in trial.items()}
        if sum(sizes.values()) <= return_mb and sum(-(-mb_ // PART_MB) for mb_ in sizes.values()) <= files:
            kept = trial
        else:
            print(f"LEFT BEHIND (the returned files would exceed {return_mb} MB or {files} files): {c.study}/{c.name}, "
                  f"{'unfinished' if unfinished else 'FINISHED'}, {mb:.1f} MB", flush=True)
    return kept


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the JPEG archive, carried into an ignored folder")
    p.add_argument("--out", required=True, help="the folder whose files come back ($OUT)")
    p.add_argument("--results", default=".gpu/results", help="where the studies live on the GPU machine")
    p.add_argument("--home", default="results", help="the tree's results: runs finished there are not trained")
    p.add_argument("--carry", default=".gpu/carry", help="the unfinished runs carried in (<study>.tar)")
    p.add_argument("--minutes", type=float, default=6.0, help="training time of this round")
    p.add_argument("--parallel", type=parse_runs_at_once, default=10, help=(
        "runs at once (default: 10; 'auto': the sweep's measured choice)"))
    p.add_argument("--cuda-graph", action="store_true", help="the graphed step (once gpu_check has passed)")
    p.add_argument("--carry-mb", type=float, default=30.0, help="checkpoints that may travel back in (MB)")
    p.add_argument("--return-mb", type=float, default=60.0, help="what may come back through $OUT (MB)")
    p.add_argument("--files", type=int, default=5, help="archive parts that may come back ($OUT takes 8 files)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    configs = study_runs(args.data, args.cuda_graph)
    carried = set()
    for study in dict.fromkeys(c.study for c in configs):  # only these studies' archives: others may lie beside
        for archive in [a for a in (Path(args.carry) / f"{study}.tar", Path(args.carry) / f"{study}.tar.part000") if a.exists()]:
            for run, what in import_study(archive, args.results).items():
                print(f"import {archive.name}: {run}: {what}", flush=True)
                carried.add((study, run))
    todo = plan(configs, Path(args.home), carried, args.carry_mb, args.return_mb)
    print(f"this round: {', '.join(f'{c.study}/{c.name}' for c in todo) or 'nothing left to train'}", flush=True)
    budget = args.minutes * 60 - (time.perf_counter() - start)
    metas, failed = [], False
    try:  # whatever happens, what was trained goes back
        metas = sweep(todo, args.results, parallel=args.parallel, time_limit=budget, progress=False) if todo else []
        for meta in metas:
            print(f"{meta['config']['schedule']:>4} {meta['name']}: {meta['status']} at iteration "
                  f"{meta['iterations_done']}, test error {meta['final_test_error']}, {meta['wall_s'] / 60:.1f} min "
                  "trained", flush=True)
    except Exception:  # noqa: BLE001 - reported, then the export below still runs
        traceback.print_exc()
        failed = True
    for study, names in runs_to_return(todo, Path(args.results), args.return_mb, args.files).items():
        for part in export_study(Path(args.results) / study, Path(args.out) / f"{study}.tar", unfinished=True,
                                 part_mb=PART_MB, names=names):
            print(f"exported {part} ({part.stat().st_size / 1e6:.1f} MB)", flush=True)
    print(f"round done in {(time.perf_counter() - start) / 60:.1f} min; "
          f"{sum(m['status'] == 'finished' for m in metas)} of {len(todo)} runs finished", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
