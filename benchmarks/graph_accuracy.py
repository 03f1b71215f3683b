"""The graphed step's accuracy against the eager step's at the paper's schedule: ResNet-20, same seed, same
precision, trained twice side by side. `--cuda-graph` may become the default on CUDA only once this is measured.

    python -m benchmarks.graph_accuracy --data PATH --out DIR --minutes 60   # on a GPU; again to go on
    python -m benchmarks.graph_accuracy --smoke --data PATH --out DIR   # seconds on a CPU: the same code, tiny runs

Each command trains both runs at once, one process each, for at most --minutes, then exports each run (its
checkpoint included) into --out as graph-accuracy-<eager|graphed>.tar, so the measurement can be done in pieces on
machines with a wall clock. Archives of an earlier command passed as --carry (on another machine, say) resume the
unfinished pair where it stopped; on the same machine, --work keeps them. Once both have finished it writes
<out>/graph_accuracy.md and .json: each run's final and best test error, the largest gap between the two
test-error curves, and each run's wall time and pace. Without deterministic algorithms the two runs need not be
equal (cuDNN's algorithm choice); on the CPU, where no graph is recorded, they are identical.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from resnet.files import write_atomic
from resnet import TrainConfig
from resnet.config import config_to_args
from resnet.results import META_FILE, read_csv, read_meta
from resnet.transfer import export_study, import_study

from .common import environment, markdown_table
from .gpu_check import tiny

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"eager": False, "graphed": True}


def pair(data: str, precision: str, smoke: bool) -> dict[str, TrainConfig]:
    """The two runs: ResNet-20, seed 0, the paper's schedule (a tiny one in smoke mode), eager and graphed."""
    base = TrainConfig(net="resnet", depth=20, seed=0, data=data, precision=precision, device="cuda")
    if smoke:
        base = tiny(base, depth=8, device="cpu")
    return {variant: dataclasses.replace(base, cuda_graph=graphed) for variant, graphed in VARIANTS.items()}


def train_side_by_side(configs: dict[str, TrainConfig], work: Path, seconds: float, stop_at: int | None) -> None:
    """Both runs at once, one `python -m resnet train` process each, in their own results folders (the two share
    a name: the graph is no part of a run's identity)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs = {}
    for variant, cfg in configs.items():
        limit = ["--stop-at", str(stop_at)] if stop_at is not None else ["--time-limit", str(seconds)]
        procs[variant] = subprocess.Popen([sys.executable, "-m", "resnet", "train", "--results", str(work / variant),
                                           "--quiet", *limit, *config_to_args(cfg)], env=env, cwd=ROOT)
    failed = [variant for variant, p in procs.items() if p.wait() != 0]
    if failed:
        raise RuntimeError(f"the {' and '.join(failed)} run failed (its output is above)")


def compare(configs: dict[str, TrainConfig], work: Path) -> dict:
    """What the two finished runs show, side by side."""
    metas = {v: read_meta(c.run_dir(work / v) / META_FILE) for v, c in configs.items()}
    logs = {v: read_csv(c.run_dir(work / v) / "log.csv").set_index("iteration") for v, c in configs.items()}
    gap = (logs["graphed"]["test_error"] - logs["eager"]["test_error"]).abs()
    rows = [{"step": v, "final test error %": m["final_test_error"], "best test error %": m["best_test_error"],
             "final train error %": round(m["final_train_error"], 2), "wall (min)": round(m["wall_s"] / 60, 1),
             "images/s (median)": round(float(logs[v]["images_per_s"].median()))} for v, m in metas.items()]
    return {"runs": rows, "final difference (graphed - eager, points)":
            round(metas["graphed"]["final_test_error"] - metas["eager"]["final_test_error"], 2),
            "largest gap between the test-error curves (points)": round(float(gap.max()), 2),
            "at iteration": int(gap.idxmax()), "evaluations compared": int(gap.notna().sum())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("RESNET_DATA", ""), help="data source (default: RESNET_DATA)")
    p.add_argument("--out", required=True, help="where the runs' archives and the report go")
    p.add_argument("--work", default=".cache/graph-accuracy", help="where the two runs train (default: .cache/graph-accuracy)")
    p.add_argument("--carry", default="", help="a folder of archives an earlier command wrote, to resume from")
    p.add_argument("--part-mb", type=float, help="split each archive into parts of at most this many MB")
    p.add_argument("--minutes", type=float, default=60.0, help="training time of this command (default: 60)")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"), help="of both runs (default: the study's)")
    p.add_argument("--stop-at", type=int, help="stop both at this iteration instead (tests)")
    p.add_argument("--smoke", action="store_true", help="tiny runs on the CPU: seconds, no claims")
    args = p.parse_args(argv)
    start = time.perf_counter()
    configs, work, out = pair(args.data, args.precision, args.smoke), Path(args.work), Path(args.out)
    for variant, cfg in configs.items():
        if not (cfg.run_dir(work / variant) / META_FILE).exists():
            for archive in sorted(Path(args.carry).glob(f"graph-accuracy-{variant}.tar*")) if args.carry else []:
                if archive.name.endswith((".tar", ".part000")):
                    print(f"{variant}: {import_study(archive, work / variant)}", flush=True)
    train_side_by_side(configs, work, args.minutes * 60 - (time.perf_counter() - start), args.stop_at)
    out.mkdir(parents=True, exist_ok=True)
    for variant, cfg in configs.items():
        export_study(work / variant / cfg.study, out / f"graph-accuracy-{variant}.tar", unfinished=True,
                     part_mb=args.part_mb)
    metas = {v: read_meta(c.run_dir(work / v) / META_FILE) for v, c in configs.items()}
    if any(m["status"] != "finished" for m in metas.values()):
        print("not finished yet: " + ", ".join(f"{v} at iteration {m['iterations_done']}" for v, m in metas.items())
              + f"; run the same command again (on another machine: with --carry {out})")
        return 0
    summary = {"environment": environment(configs["eager"].device), "smoke": args.smoke,
               "config": configs["eager"].to_dict(), **compare(configs, work)}
    write_atomic(json.dumps(summary, indent=1) + "\n", out / "graph_accuracy.json")
    cfg = configs["eager"]
    lines = [f"# The graphed step against the eager step{' — SMOKE MODE: tiny runs on the CPU' if args.smoke else ''}",
             "", ", ".join(f"{k} {v}" for k, v in summary["environment"].items()), "",
             f"{cfg.net}-{cfg.depth}, seed {cfg.seed}, {cfg.total_iterations:,} iterations, {cfg.precision}, data "
             f"{Path(cfg.data).name or cfg.data}; both runs at once, one process each.", "",
             markdown_table(summary["runs"]), "",
             f"Final test error, graphed minus eager: {summary['final difference (graphed - eager, points)']:+.2f} "
             f"points; the largest gap between the two test-error curves: "
             f"{summary['largest gap between the test-error curves (points)']:.2f} points (iteration "
             f"{summary['at iteration']:,}, over {summary['evaluations compared']} evaluations)."]
    write_atomic("\n".join(lines) + "\n", out / "graph_accuracy.md")
    print(f"wrote {out / 'graph_accuracy.md'} and {out / 'graph_accuracy.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
