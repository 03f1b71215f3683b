"""How far a committed run's test error moves when its weights are evaluated again on another CPU setup: 1 and 2
threads, fp32 and bf16, and oneDNN held to several instruction sets (ONEDNN_MAX_CPU_ISA). The spread justifies the
tolerance of the committed-results re-check (tests/test_committed.py).

    python -m benchmarks.reeval_spread --data PATH [--runs STUDY/NAME ...] [--out benchmarks/reeval_spread.md]

Each instruction set gets its own process (oneDNN reads ONEDNN_MAX_CPU_ISA when it starts); every evaluation is
of all the run's test images.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from resnet.files import write_atomic
from pathlib import Path

from .common import environment, markdown_table

ROOT = Path(__file__).resolve().parent.parent
RUNS = ["cifar10-jpeg-1of8-bf16/plain20-seed0", "cifar10-jpeg-1of8-bf16/resnet110-seed0",
        "cifar10-jpeg-full-bf16/resnet56-seed0", "cifar10-jpeg-full-bf16/plain56-seed0"]
ISAS = ["AVX2", "AVX512_CORE", "DEFAULT"]  # DEFAULT: the best this CPU has (bf16 instructions where present)
# bf16 is evaluated only where the CPU has bf16 instructions: without them oneDNN's bf16 convolutions fall back to
# a path so slow that re-checking the committed runs in bf16 would take hours (one evaluation of a plain-20 under
# AVX2 had not ended after 4.5 minutes here, where fp32 takes seconds).
BF16_ISAS = {"DEFAULT"}


def evaluate_all(run_dirs: list[str], data: str, precisions: list[str]) -> list[dict]:
    """Each run's wrong test images in this process, in each of ``precisions`` with 1 and 2 threads."""
    import torch

    from resnet.results import load_run
    from resnet.steps import evaluate

    found = []
    for run_dir in run_dirs:
        run = load_run(run_dir, "cpu")
        dd = run.data(data)
        for precision, threads in itertools.product(precisions, (1, 2)):
            torch.set_num_threads(threads)
            _, error = evaluate(run.model, dd.test_x, dd.test_y, precision)
            found.append({"run": run_dir, "precision": precision, "threads": threads,
                          "wrong": round(error * len(dd.test_x) / 100), "images": len(dd.test_x)})
            print(os.environ.get("ONEDNN_MAX_CPU_ISA"), found[-1], file=sys.stderr, flush=True)  # progress
    return found


def measure(run_dirs: list[str], data: str, isa: str) -> list[dict]:
    """``evaluate_all`` in a process whose oneDNN is held to ``isa`` (bf16 too where the CPU has its instructions)."""
    precisions = ["fp32"] + (["bf16"] if isa in BF16_ISAS else [])
    out = subprocess.run([sys.executable, "-m", "benchmarks.reeval_spread", "--child", "--runs", *run_dirs,
                          "--precisions", *precisions, "--data", data], cwd=ROOT, env={**os.environ, "ONEDNN_MAX_CPU_ISA": isa},
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the data the runs were trained on")
    p.add_argument("--runs", nargs="+", default=RUNS, help="STUDY/NAME under --results")
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "reeval_spread.md"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # evaluate --runs (folders), print JSON
    p.add_argument("--precisions", nargs="+", default=["fp32"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(evaluate_all(args.runs, args.data, args.precisions)))
        return 0

    from resnet.results import read_meta

    run_dirs = [str(Path(args.results) / run) for run in args.runs]
    measured = {isa: measure(run_dirs, args.data, isa) for isa in ISAS}
    rows, summary = [], []
    for run, run_dir in zip(args.runs, run_dirs):
        meta = read_meta(Path(run_dir) / "run.json")
        recorded = round(meta["final_test_error"] * meta["n_test"] / 100)
        wrong = {}
        for isa, found in measured.items():
            for m in (m for m in found if m["run"] == run_dir):
                wrong[m["precision"], m["threads"], isa] = m["wrong"]
                rows.append({"run": run, "precision": m["precision"], "threads": m["threads"],
                             "ONEDNN_MAX_CPU_ISA": isa, "wrong images": m["wrong"],
                             "test error %": f"{100 * m['wrong'] / m['images']:.2f}",
                             "minus recorded (images)": m["wrong"] - recorded})
        for precision in ("bf16", "fp32"):
            got = [w for (p_, _, _), w in wrong.items() if p_ == precision]
            if not got:
                continue
            summary.append({"run": run, "trained in": meta["config"]["precision"], "recorded wrong": recorded,
                            "re-evaluated in": precision, "spread among setups (images)": max(got) - min(got),
                            "largest gap to recorded (images)": max(abs(w - recorded) for w in got)})
    env = environment("cpu")
    worst = {p_: max(s["largest gap to recorded (images)"] for s in summary if s["re-evaluated in"] == p_)
             for p_ in ("bf16", "fp32") if any(s["re-evaluated in"] == p_ for s in summary)}
    text = (f"# Re-evaluating committed weights on other CPU setups\n\n"
            f"Each run's weights evaluated on all {meta['n_test']} test images of its own data "
            f"({Path(args.data).name}), with 1 and 2 threads, with oneDNN held to {', '.join(ISAS)} "
            f"(`ONEDNN_MAX_CPU_ISA`; DEFAULT is the best the CPU has), in fp32, and in bf16 autocast where the CPU "
            f"has bf16 instructions ({', '.join(sorted(BF16_ISAS))}; without them bf16 is too slow to be a re-check). "
            f"'recorded' is the final test error in run.json, evaluated during training (bf16, one thread).\n\n"
            f"## Summary\n\n{markdown_table(summary)}\n\n"
            f"Largest gap to the recorded error: **"
            + ", ".join(f"{n} images in {p_}" for p_, n in worst.items()) + f"** (of {meta['n_test']}).\n\n"
            f"## Every evaluation\n\n{markdown_table(rows)}\n\n"
            f"Measured by `python -m benchmarks.reeval_spread` on {env['device']}, torch {env['torch']}, "
            f"{env['date']}, commit {env['git_commit']}.\n")
    write_atomic(text, Path(args.out))
    write_atomic(json.dumps({"environment": env, "summary": summary, "rows": rows, "largest_gap_images": worst},
                            indent=1) + "\n", Path(args.out).with_suffix(".json"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
