"""Command line: ``python -m resnet {train,sweep,evaluate,plot,report,export,import,figure7} --help``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

from .config import TrainConfig
from .sweeps import parse_runs_at_once

SWEPT = ("net", "depth", "seed")  # given as lists to `sweep`


def _add_config_flags(parser: argparse.ArgumentParser, skip=()):
    group = parser.add_argument_group("run settings (defaults: the paper's)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata["help"].replace("%", "%%") + f" (default: {f.default})"
        if f.name == "warmup":
            group.add_argument(flag, choices=("auto", "on", "off"), default="auto", help=help_)
        elif isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        elif isinstance(f.default, tuple):
            group.add_argument(flag, type=int, nargs="*", default=f.default, help=help_)
        else:
            group.add_argument(flag, type=type(f.default), default=f.default, choices=f.metadata.get("choices"), help=help_)


def _config(args, **override) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    values["warmup"] = {"auto": None, "on": True, "off": False}[values["warmup"]]
    values["milestones"] = tuple(values["milestones"])
    return TrainConfig(**{**values, **override})


def _runs_at_once(text: str) -> int | str:
    try:
        return parse_runs_at_once(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_limit_flags(parser: argparse.ArgumentParser, each: str = ""):
    parser.add_argument("--stop-at", type=int, help=f"{each}stop at the first checkpoint at or past this iteration (resumable)")
    parser.add_argument("--time-limit", type=float, help=(
        "seconds: stop at a checkpoint before this limit, at an evaluation point where the next interval would "
        "not fit, or else at the first update past it (resumable, exactly)"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnet", description=(
        "Reproduce He et al. 2016, section 4.2 (CIFAR-10): train, sweep, evaluate, plot."))
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one network (resumes, or skips it if finished)")
    _add_config_flags(p)
    p.add_argument("--results", default="results", help="results folder (default: results)")
    _add_limit_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("sweep", help="train every missing run of depths x nets x seeds")
    _add_config_flags(p, skip=SWEPT)
    p.add_argument("--depths", type=int, nargs="+", help=(
        "the runs go depth by depth and, within a depth, net by net, each with its seeds, in the orders given: "
        "a sweep cut short still compares plain and residual at each depth it has (default: 20 32 44 56 110)"))
    p.add_argument("--nets", nargs="+", choices=("resnet", "plain"), help="default: plain resnet")
    p.add_argument("--seeds", type=int, nargs="+", help="default: 0")
    p.add_argument("--runs", nargs="+", metavar="RUN", help=(
        "these runs alone, by name, in the order given (e.g. resnet44-seed0 resnet110-seed1), in place of depths x "
        "nets x seeds; the other settings apply to each"))
    p.add_argument("--parallel", type=_runs_at_once, default="auto", help=(
        "runs at once; with several GPUs visible, per GPU; on the CPU, each in its own process with its share "
        "of the threads (default: auto: one at a time without CUDA; on CUDA, per network as many as a few timed "
        "steps at larger batches say the GPU has room for)"))
    p.add_argument("--together", action=argparse.BooleanOptionalAction, default=None, help=(
        "the runs at once on a device train in one process, one update of each in turn, each the run it would be "
        "alone (default: on CUDA, where processes would take turns on the GPU; --no-together: a process each)"))
    p.add_argument("--results", default="results", help="results folder (default: results)")
    _add_limit_flags(p, "each run ")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    jobs = p.add_argument_group("as jobs, through submitit (one job per run; requeued runs resume from their checkpoints)")
    jobs.add_argument("--launcher", choices=("local", "slurm"), help="submit each run as a job: Slurm, or local processes")
    jobs.add_argument("--partition", help="Slurm partition")
    jobs.add_argument("--account", help="Slurm account")
    jobs.add_argument("--gpus-per-job", type=int, default=1, help="(default: 1)")
    jobs.add_argument("--cpus-per-job", type=int, default=4, help="(default: 4)")
    jobs.add_argument("--timeout-min", type=int, default=240, help="a job's wall time; it is requeued past it (default: 240)")
    jobs.add_argument("--max-running", type=int, help="jobs running at once (a Slurm array's parallelism)")
    jobs.add_argument("--jobs-folder", help="job logs (default: <results>/jobs)")
    jobs.add_argument("--no-wait", action="store_true", help="submit and return (Slurm); run the sweep again to see what is done")

    p = sub.add_parser("evaluate", help="test error of saved weights")
    p.add_argument("runs", nargs="+", help="run folders, e.g. results/resnet20-seed0")
    p.add_argument("--data", help="data source (default: the one the run was trained on)")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("plot", help="redraw Figure 6 of every study and print the error table from saved results")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--assets", default="assets", help="where to save the figures, figure6-<study>.png (default: assets)")
    p.add_argument("--peers", action="store_true", help="add the peers' reported errors to the table")
    p.add_argument("--shortcuts", type=int, metavar="DEPTH",
                   help="also draw shortcut options A/B/C (and plain) at this depth to assets/shortcuts-DEPTH.png")
    p.add_argument("--no-figure7", action="store_true", help=(
        "skip Figure 7 (std of layer responses of the paper's five networks, from the study with the longest "
        "schedule, to assets/figure7-<study>.png and its numbers to assets/figure7-<study>.json: a pass over each "
        "network's test images)"))

    p = sub.add_parser("report", help=("rewrite the generated sections of README.md (the headline study, the findings, "
                                       "the peer table) and docs/results.md (every study) from the files"))
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--assets", default="assets", help="where the figures are (default: assets)")
    p.add_argument("--root", default=".", help="the folder holding README.md and docs/ (default: .)")

    sub.add_parser("check-study", help=(
        "what `make study` will train, from the RESNET_* settings the notebook reads, and its data loaded now "
        "(downloaded if need be), so that a missing or unreachable source is said in one line before anything starts"))

    p = sub.add_parser("export", help="pack a study's runs into one archive, to move them to another machine")
    p.add_argument("study", help="a study folder, e.g. results/cifar10-jpeg-full-bf16")
    p.add_argument("out", help="the archive to write, e.g. study.tar (parts: study.tar.part000, ...)")
    p.add_argument("--unfinished", action="store_true", help="also pack unfinished runs (their checkpoints)")
    p.add_argument("--part-mb", type=float, help="split into parts of at most this many MB")
    p.add_argument("--runs", nargs="+", metavar="RUN", help="only these runs, e.g. resnet110-seed1 (default: all)")

    p = sub.add_parser("import", help="unpack a study archive into the results folder, checked as training checks")
    p.add_argument("archive", help="the archive, or its first part (study.tar.part000)")
    p.add_argument("--results", default="results", help="results folder (default: results)")

    p = sub.add_parser("figure7", help="std of layer responses on the test set for saved runs (Figure 7)")
    p.add_argument("runs", nargs="+", help="run folders, e.g. results/plain20-seed0 results/resnet20-seed0")
    p.add_argument("--data", help="data source (default: each run's own)")
    p.add_argument("--figure", default="assets/figure7.png", help="where to save Figure 7 (its numbers: the same name, .json)")
    p.add_argument("--device", default="auto")

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, RuntimeError, OSError) as e:  # bad settings, data, results files, conflicts, locks
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: a training run checkpoints first (trainer.Stopped)
        if args.debug:
            raise
        print(f"stopped: {e}" if str(e) else "stopped", file=sys.stderr)
        return 130


def _run(args) -> int:
    return COMMANDS[args.command](args) or 0


def _train(args) -> int | None:
    """Train or resume one run."""
    from .trainer import train

    meta = train(_config(args), args.results, stop_at=args.stop_at, time_limit=args.time_limit, progress=not args.quiet)
    print(f"{meta['name']}: {meta['status']} at iteration {meta['iterations_done']}"
          + (f", final test error {meta['final_test_error']:.2f}%" if meta["final_test_error"] is not None else ""))


def _sweep(args) -> int | None:
    """Train the runs of the nets, depths and seeds asked for: in turn, in parallel, or as jobs."""
    from .sweeps import result_line, sweep

    configs = _sweep_configs(args)
    if args.launcher:
        from .launch import submit, wait

        jobs = submit(configs, args.results, launcher=args.launcher, folder=args.jobs_folder,
                      timeout_min=args.timeout_min, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
                      partition=args.partition, account=args.account, max_running=args.max_running)
        print(f"{len(jobs)} jobs submitted ({args.launcher}): {' '.join(str(j.job_id) for j in jobs)}; logs in "
              f"{args.jobs_folder or Path(args.results) / 'jobs'}")
        if args.no_wait:
            return 0
        metas = wait(jobs)
    else:
        metas = sweep(configs, args.results, parallel=args.parallel,
                      together="auto" if args.together is None else args.together, stop_at=args.stop_at,
                      time_limit=args.time_limit, progress=not args.quiet)
    if args.quiet or args.launcher:  # otherwise the sweep said each as it ended
        for meta in metas:
            print(result_line(meta))
    if len(metas) < len(configs):
        print(f"time limit reached: {len(configs) - len(metas)} runs not started (run the same command to go on)")


SWEEP_DEFAULTS = {"depths": [20, 32, 44, 56, 110], "nets": ["plain", "resnet"], "seeds": [0]}
RUN_NAME = re.compile(r"(resnet|plain)(\d+)\D*?-seed(\d+)")


def _sweep_configs(args) -> list[TrainConfig]:
    """The sweep's runs: those named by --runs, else depth by depth, net by net, seed by seed."""
    if args.runs is None:
        depths, nets, seeds = (getattr(args, k) or v for k, v in SWEEP_DEFAULTS.items())
        return [_config(args, net=n, depth=d, seed=s) for d in depths for n in nets for s in seeds]
    given = [f"--{k}" for k in SWEEP_DEFAULTS if getattr(args, k) is not None]
    if given:
        raise ValueError(f"--runs names the runs itself: leave out {', '.join(given)}")
    configs = []
    for name in args.runs:
        match = RUN_NAME.fullmatch(name)
        cfg = match and _config(args, net=match[1], depth=int(match[2]), seed=int(match[3]))
        if not cfg or cfg.name != name:
            raise ValueError(f"--runs: {name!r} is not a run of these settings (names are like resnet110-seed1"
                             + (f"; these settings make {cfg.name!r})" if cfg else ")"))
        configs.append(cfg)
    return configs


def _evaluate(args) -> int | None:
    """Re-evaluate saved runs on their test images, one JSON line each."""
    from .results import evaluate_run

    for run in args.runs:
        print(json.dumps(evaluate_run(run, args.data, args.device)))


def _plot(args) -> int | None:
    """Figures 6 and 7 and the error table of a results folder."""
    from .figures import draw_figure7, figure7_runs, plot_shortcuts, plot_studies
    from .compare import error_table, format_table
    from .results import load_runs

    runs = load_runs(args.results)
    if not runs:
        print(f"error: no finished runs in {args.results}/ (nothing drawn)", file=sys.stderr)
        return 2
    for study in plot_studies(runs, args.assets):
        print(f"Figure 6 of {study} saved to {Path(args.assets) / f'figure6-{study}.png'}")
    if args.shortcuts:
        path = Path(args.assets) / f"shortcuts-{args.shortcuts}.png"
        plot_shortcuts(runs, args.shortcuts, path)
        print(f"shortcut comparison saved to {path}")
    study, paths = figure7_runs(runs)
    if paths and not args.no_figure7:
        path = Path(args.assets) / f"figure7-{study}.png"
        try:
            _, numbers = draw_figure7(paths, path)
        except (OSError, ValueError) as e:  # the runs' data is not on this machine
            print(f"Figure 7 not drawn: {e}", file=sys.stderr)
        else:
            print(f"Figure 7 of {study} saved to {path}, its numbers to {path.with_suffix('.json')} "
                  f"({', '.join(n['network'] for n in numbers['networks'])})")
    print(format_table(error_table(runs, peers=args.peers)))


def _report(args) -> int | None:
    """Rewrite the generated sections of README.md and docs/results.md."""
    from .report import update_reports

    changed = update_reports(args.root, args.results, args.assets)
    print(f"generated sections rewritten in {', '.join(map(str, changed))}" if changed
          else "README.md and docs/results.md: generated sections already up to date")


def _check_study(args) -> int | None:
    """Whether the notebook's study can train: its data loaded (or downloaded) now."""
    from .data import load_cifar10
    from .results import finished_meta
    from .study import study_from_environment

    study = study_from_environment()
    todo = [c for c in study.to_train if finished_meta(c, study.results) is None]
    if not todo:
        print(f"{study.describe()}: nothing left to train")
        return 0
    data = load_cifar10(study.data)
    print(f"{len(todo)} of {len(study.configs)} runs left to train ({study.describe()}); data {data.source}: "
          f"{len(data.train_y):,} training and {len(data.test_y):,} test images")


def _export(args) -> int | None:
    """Pack a study into an archive (in parts if asked)."""
    from .transfer import export_study

    for path in export_study(args.study, args.out, unfinished=args.unfinished, part_mb=args.part_mb, names=args.runs):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _import(args) -> int | None:
    """Unpack a study archive, checked before anything is written."""
    from .transfer import import_study

    for run, what in import_study(args.archive, args.results).items():
        print(f"{run}: {what}")


def _figure7(args) -> int | None:
    """Figure 7 of the run folders given."""
    from .compare import response_findings
    from .figures import draw_figure7

    _, numbers = draw_figure7(args.runs, args.figure, args.data, args.device)
    for n in numbers["networks"]:
        print(f"{n['network']}: mean std {sum(n['std']) / len(n['std']):.3f} over {len(n['std'])} layers")
    print("\n".join(response_findings(numbers["networks"])))
    print(f"Figure 7 saved to {args.figure}, its numbers to {Path(args.figure).with_suffix('.json')}")


# each returns its exit status (None: 0)
COMMANDS = {"train": _train, "sweep": _sweep, "evaluate": _evaluate, "plot": _plot, "report": _report,
            "check-study": _check_study, "export": _export, "import": _import, "figure7": _figure7}


if __name__ == "__main__":
    sys.exit(main())
