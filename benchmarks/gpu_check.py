"""One command that proves the CUDA path and measures it, before a GPU trains the study.

    python -m benchmarks.gpu_check --data PATH           # on a GPU: minutes; no network, no pip, no pytest needed
    python -m benchmarks.gpu_check --smoke --data PATH   # seconds on a CPU: the same checks, tiny, no timing claims

1. Checks (each also a `cuda`-marked test in tests/test_cuda.py): the graphed step equals the eager step with
   deterministic algorithms; a run stopped and resumed equals an uninterrupted one; runs trained together in one
   process equal each trained alone; device generators are seeded and restored; bf16 predicts as fp32 does; a
   parallel sweep on a cold data cache trains every run.
2. Speed, per network: the eager fp32 step and the graphed step (each timed in its steady state, with any wait of
   the host for the device an error), the evaluation, and the projected time of each network at the paper's
   schedule; then the networks at the paper's schedule one at a time against all at once in one process (as
   `sweep` trains them on a GPU), in minutes and as a ratio; then (without --quick) all networks at once, one
   process each, and, for the smallest and the largest ResNet, 1, 4 and 8 copies at once beside what
   `sweep --parallel auto` chooses.
3. The device, driver, torch, CUDA and cuDNN versions, and whether MPS is running.
Writes <out>/gpu_check.md and <out>/gpu_check.json.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import traceback
from pathlib import Path

import torch

from resnet import TrainConfig, sweep, train
from resnet.sweeps import measure_runs_per_gpu, most_runs_per_gpu, time_network
from resnet.files import write_atomic
from resnet.data import Batches, device_data
from resnet.results import read_csv
from resnet.steps import LAYOUT, LAYOUTS, evaluate, make_step, resolve_device
from resnet.trainer import build, learning_rate, train_together

from .common import environment, markdown_table

PAPER = TrainConfig()
EVALUATIONS = -(-PAPER.total_iterations // PAPER.eval_every)  # 164 at the paper's schedule


def tiny(cfg: TrainConfig, **kw) -> TrainConfig:
    """A seconds-long variant of ``cfg``: 1,000 training and 500 test images, 40 iterations of batch 32."""
    return dataclasses.replace(cfg, **{"train_subset": 1000, "test_subset": 500, "iterations": 40, "batch_size": 32,
                                       "milestones": (20, 30), "eval_every": 10, "checkpoint_every": 10, **kw})


@contextlib.contextmanager
def deterministic():
    """Deterministic algorithms (cuDNN's included) within the block: bit-for-bit comparisons."""
    before = torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=True)


# --- checks: each returns a line saying what it found, or raises AssertionError -------------------------------

def losses(cfg: TrainConfig, data, iterations: int, graphed: bool) -> list[float]:
    """The training loss of each of ``iterations`` updates of ``cfg`` (with its lr rule), as the trainer steps,
    with the graphed step or the eager one (on the CPU ``GraphedStep``'s code runs without a graph)."""
    device = data.train_x.device
    model, optimizer = build(cfg, device)
    batches = Batches(data, cfg.batch_size, cfg.seed, LAYOUTS[LAYOUT])
    window = torch.zeros(2, dtype=torch.float64, device=device)
    update, seen = make_step(cfg, model, optimizer, window, graphed=graphed), []
    for it in range(iterations):
        update(*next(batches), learning_rate(it, cfg))
        seen.append(window[0].clone())  # the loss sum so far: read once, at the end
    sums = torch.stack(seen).tolist()
    return [(b - a) / cfg.batch_size for a, b in zip([0.0] + sums, sums)]


def check_graph_equals_eager(cfg: TrainConfig, data, iterations: int = 60) -> str:
    """The graphed step's losses against the eager step's, with deterministic algorithms: the same kernels, so
    equal up to the summation order of the graph's memory (allowed: 1e-5 relative)."""
    with deterministic():
        eager = losses(cfg, data, iterations, graphed=False)
        graphed = losses(cfg, data, iterations, graphed=True)
    worst = max(abs(g - e) / max(abs(e), 1e-12) for g, e in zip(graphed, eager))
    assert worst <= 1e-5, f"{cfg.net}-{cfg.depth}: graphed losses differ from eager by up to {worst:.2e} (relative)"
    return f"{cfg.net}-{cfg.depth} {cfg.precision}: {iterations} graphed updates equal eager ones (worst {worst:.1e})"


def check_resume(cfg: TrainConfig, data) -> str:
    """A run stopped at a checkpoint and resumed ends bit for bit where an uninterrupted one does."""
    with deterministic(), tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        whole = train(cfg, a, data=data, progress=False)
        train(cfg, b, data=data, stop_at=cfg.total_iterations // 2, progress=False)
        resumed = train(cfg, b, data=data, progress=False)
    assert resumed["weights_sha256"] == whole["weights_sha256"], "a resumed run differs from an uninterrupted one"
    return f"resume at iteration {cfg.total_iterations // 2} of {cfg.total_iterations}: bit-identical weights"


def check_together(cfg: TrainConfig, data) -> str:
    """Two runs trained together in one process (each on its own stream) end bit for bit where each ends alone."""
    pair = [dataclasses.replace(cfg, net="plain", seed=1), cfg]
    with deterministic(), tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        alone = [train(c, a, data=data, progress=False)["weights_sha256"] for c in pair]
        together = [m["weights_sha256"] for m in train_together(pair, b, data=data, progress=False)]
    assert together == alone, "runs trained together differ from the same runs trained alone"
    return f"{len(pair)} runs in one process, stepped in turn: bit-identical to each alone"


def check_generators(device: torch.device) -> str:
    """Seeded device generators repeat themselves, and a saved state restores the sequence."""
    draw = lambda g: torch.randint(0, 9, (1000,), device=device, generator=g)  # noqa: E731
    g1, g2 = torch.Generator(device=device).manual_seed(7), torch.Generator(device=device).manual_seed(7)
    assert torch.equal(draw(g1), draw(g2)), "two generators seeded alike differ"
    state = g1.get_state()
    first = draw(g1)
    g1.set_state(state)
    assert torch.equal(draw(g1), first), "a restored generator state does not repeat its draws"
    return f"{device.type} generators: seeded alike repeat, a saved state restores"


def check_bf16(cfg: TrainConfig, data, iterations: int = 100) -> str:
    """After ``iterations`` fp32 updates, the network's bf16 predictions agree with its fp32 ones (>= 95%)."""
    cfg = dataclasses.replace(cfg, precision="fp32")
    with tempfile.TemporaryDirectory() as d:
        train(dataclasses.replace(cfg, iterations=iterations, milestones=(), eval_every=iterations,
                                  checkpoint_every=iterations), d, data=data, progress=False)
        from resnet import load_run

        model = load_run(next(Path(d).glob("*/*")), data.test_x.device).model
    with torch.inference_mode():
        fp32 = model(data.test_x).argmax(1)
        with torch.autocast(data.test_x.device.type, dtype=torch.bfloat16):
            bf16 = model(data.test_x).argmax(1)
    agree = (fp32 == bf16).double().mean().item()
    _, err32 = evaluate(model, data.test_x, data.test_y, "fp32")
    _, err16 = evaluate(model, data.test_x, data.test_y, "bf16")
    assert agree >= 0.95, f"bf16 and fp32 predictions agree on only {agree:.1%} of the test images"
    return f"bf16 vs fp32: {agree:.1%} of predictions agree; test error {err16:.2f}% vs {err32:.2f}%"


def image_tree(folder: Path, per_class: int = 10) -> Path:
    """A small CIFAR-shaped image tree of random pictures ({train,test}/<class>/<i>.png)."""
    import numpy as np
    from PIL import Image

    from resnet.data import CLASSES

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CLASSES:
            (folder / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / split / name / f"{i}.png")
    return folder


def check_cold_cache_sweep(cfg: TrainConfig, parallel: int = 3) -> str:
    """``parallel`` runs started at once on an empty data cache all finish (a small image tree: the race is in
    the cache, whatever the data's size)."""
    with tempfile.TemporaryDirectory() as d:
        data = str(image_tree(Path(d) / "tree"))
        configs = [tiny(cfg, data=data, depth=8, seed=s, train_subset=100, test_subset=100) for s in range(parallel)]
        before = os.environ.get("RESNET_CACHE")
        os.environ["RESNET_CACHE"] = str(Path(d) / "cache")
        try:
            metas = sweep(configs, Path(d) / "results", parallel=parallel, progress=False)
        finally:
            os.environ.pop("RESNET_CACHE") if before is None else os.environ.update(RESNET_CACHE=before)
    assert [m["status"] for m in metas] == ["finished"] * parallel, [m["status"] for m in metas]
    return f"{parallel} runs at once on a cold cache: all finished"


def run_checks(base: TrainConfig, data, device: torch.device, smoke: bool = False) -> list[dict]:
    """Every check, each reported as passed or failed (with its error), none stopping the others (``smoke``: on
    batches of 8, the same checks in a quarter of the arithmetic)."""
    small = tiny(base, depth=8, batch_size=8 if smoke else 32)
    checks = [("graphed step = eager (fp32)", lambda: check_graph_equals_eager(dataclasses.replace(small, precision="fp32"), data)),
              ("graphed step = eager (bf16)", lambda: check_graph_equals_eager(dataclasses.replace(small, precision="bf16"), data)),
              ("resume", lambda: check_resume(small, data)),
              ("runs together = alone", lambda: check_together(small, data)),
              ("generators", lambda: check_generators(device)),
              ("bf16 vs fp32", lambda: check_bf16(small, data)),
              ("parallel sweep, cold cache", lambda: check_cold_cache_sweep(base))]
    rows = []
    for name, check in checks:
        try:
            rows.append({"check": name, "result": "passed", "detail": check()})
        except Exception as e:  # noqa: BLE001 - every failure is reported, with what it was
            traceback.print_exc()
            rows.append({"check": name, "result": "FAILED", "detail": f"{type(e).__name__}: {e}".replace("\n", " ")})
        print(rows[-1], flush=True)
    return rows


# --- speed ------------------------------------------------------------------------------------------------

def speed(base: TrainConfig, data, networks: list[tuple[str, int]], iterations: int):
    """Per network, yielded as measured: steady-state seconds per eager and graphed step, per evaluation, and the
    projected hours of a paper-schedule run with each step."""
    for net, depth in networks:
        cfg = dataclasses.replace(base, net=net, depth=depth, warmup=False)
        eager, per_eval, eager_sync = _timed(dataclasses.replace(cfg, cuda_graph=False), data, iterations)
        graphed, _, graphed_sync = _timed(dataclasses.replace(cfg, cuda_graph=True), data, iterations)
        project = lambda per_step: (PAPER.total_iterations * per_step + EVALUATIONS * per_eval) / 60  # noqa: E731
        row = {"network": f"{net}-{depth}", "precision": cfg.precision, "eager ms/step": f"{1e3 * eager:.2f}",
                     "graphed ms/step": f"{1e3 * graphed:.2f}", "speed-up": f"{eager / graphed:.2f}x",
                     "s / evaluation": f"{per_eval:.2f}", "paper schedule, eager (min)": f"{project(eager):.1f}",
                     "paper schedule, graphed (min)": f"{project(graphed):.1f}",
                     "host waits for the device": eager_sync or graphed_sync or "never"}
        print(row, flush=True)
        yield row


def _timed(cfg: TrainConfig, data, iterations: int) -> tuple[float, float, str]:
    """time_network with host-device synchronisation an error; where one happens, it is named and the step is
    timed again without the check."""
    try:
        return (*time_network(cfg, data, iterations, sync_check=True), "")
    except RuntimeError as e:
        return (*time_network(cfg, data, iterations), f"{'graphed' if cfg.cuda_graph else 'eager'}: {e}".replace("\n", " "))


def concurrent(base: TrainConfig, networks: list[tuple[str, int]], iterations: int, cuda_graph: bool) -> dict:
    """All ``networks`` at once, one process each: each one's steady-state seconds per step, and the projected
    wall time of the set at the paper's schedule were they to keep that pace (the slowest decides; once the
    others finish it speeds up, so this is an upper bound)."""
    configs = [dataclasses.replace(base, net=n, depth=d, cuda_graph=cuda_graph) for n, d in networks]
    per_step = {f"{c.net}-{c.depth}": s for c, s in zip(configs, _side_by_side(configs, iterations))}
    slowest = max(per_step.values())
    return {"cuda_graph": cuda_graph, "runs at once": len(configs), "s / step each": per_step,
            "projected minutes (upper bound, evaluations not included)": PAPER.total_iterations * slowest / 60}


def _side_by_side(configs: list[TrainConfig], iterations: int) -> list[float]:
    """Each config's steady-state seconds per step when all run at once, one process each (from its log, past
    its first evaluation, so process start and data loading are left out)."""
    every = max(1, iterations // 4)
    configs = [dataclasses.replace(c, iterations=iterations, milestones=(), warmup=False, eval_every=every,
                                   checkpoint_every=every * 1000) for c in configs]
    with tempfile.TemporaryDirectory() as d:
        sweep(configs, d, parallel=len(configs), together=False, progress=False)
        return [_steady_step(c.run_dir(d)) for c in configs]


def in_one_process(base: TrainConfig, networks: list[tuple[str, int]], data, rows: list[dict], iterations: int) -> dict:
    """The networks trained at once in one process (``train_together``, as ``sweep`` trains them on a GPU, each
    with the default step), against one at a time, both projected to the paper's schedule.

    Each run trains 2 x ``iterations`` updates, evaluated after each half on 500 test images (nearly free), so
    the second half, read from its log, is the steady state of the updates in turn: one round of every
    network's update per iteration. At the paper's schedule every run makes the same number of updates, so the
    set ends after that many rounds; the evaluations are added as measured per network (``rows``), one after
    another. One at a time: each network's own projection with the same step (``rows``), summed."""
    eval_cost = sum(float(r["s / evaluation"]) for r in rows)
    graphed = base.cuda_graph and data.train_x.device.type == "cuda"
    configs = [dataclasses.replace(base, net=n, depth=d, iterations=2 * iterations, milestones=(), warmup=False,
                                   eval_every=iterations, checkpoint_every=2 * iterations, test_subset=500)
               for n, d in networks]
    few = dataclasses.replace(data, test_x=data.test_x[:500], test_y=data.test_y[:500])
    with tempfile.TemporaryDirectory() as d:
        train_together(configs, d, data=few, progress=False)
        per_round = max(_steady_step(c.run_dir(d)) for c in configs)  # each run's second half spans the same rounds
    together_min = (PAPER.total_iterations * per_round + EVALUATIONS * eval_cost) / 60
    one_at_a_time = sum(float(r["paper schedule, graphed (min)" if graphed else "paper schedule, eager (min)"])
                        for r in rows)
    return {"networks": len(configs), "step": "graphed" if graphed else "eager", "s / round of updates": per_round,
            "one at a time (min)": one_at_a_time, "all at once, one process (min)": together_min,
            "speed-up": one_at_a_time / together_min}


def _steady_step(run_dir: Path) -> float:
    """Seconds per update between a run's first and last log rows."""
    log = read_csv(run_dir / "log.csv")
    first, last = log.iloc[0], log.iloc[-1]
    return (last["elapsed_s"] - first["elapsed_s"]) / (last["iteration"] - first["iteration"])


def runs_at_once(base: TrainConfig, networks: list[tuple[str, int]], iterations: int, counts=(1, 2, 4, 8)) -> list[dict]:
    """Per network: what ``sweep --parallel auto`` chooses (from steps at larger batches, in this process), beside
    the throughput measured with ``counts`` copies of it training at once in separate processes, relative to
    the first count: the check of the rule's proxy."""
    device = str(base.device)
    chosen = measure_runs_per_gpu([dataclasses.replace(base, net=n, depth=d) for n, d in networks],
                                  most_runs_per_gpu(1), device="cuda" if device.startswith("cuda") else device)
    rows = []
    for net, depth in networks:
        row = {"network": f"{net}-{depth}", "auto chooses": chosen[(net, depth)]}
        alone = None
        for k in counts:
            copies = [dataclasses.replace(base, net=net, depth=depth, seed=s) for s in range(k)]
            throughput = k / max(_side_by_side(copies, iterations))
            alone = alone or throughput
            row[f"{k} at once"] = f"{throughput / alone:.2f}x"  # throughput relative to counts[0] at once
        rows.append(row)
        print(row, flush=True)
    return rows


def gpu_facts(device: torch.device) -> dict:
    pipe = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))  # the MPS daemon's pipe folder
    facts = {"mps": f"running ({pipe} exists)" if pipe.exists() else f"not running (no {pipe})"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts["memory_gib"] = round(props.total_memory / 2**30, 1)
        if shutil.which("nvidia-smi"):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True)
            facts["driver"] = out.stdout.strip() or out.stderr.strip()
    return facts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny networks and data, seconds on a CPU: no timing claims")
    p.add_argument("--data", default=os.environ.get("RESNET_DATA", ""), help="data source (default: RESNET_DATA)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="of the speed measurements")
    p.add_argument("--iterations", type=int, default=200, help="timed steps per network and step kind")
    p.add_argument("--quick", action="store_true", help=(
        "the checks and the per-network speed only, 100 timed steps each (a minute or two); without it the "
        "runs-at-once sections follow"))
    p.add_argument("--out", default="benchmarks")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    base = TrainConfig(data=args.data, device=str(device), precision=args.precision)
    networks = [(n, d) for d in (20, 32, 44, 56, 110) for n in ("plain", "resnet")]
    if args.smoke:
        networks, args.iterations = [("plain", 8), ("resnet", 8)], 3
        base = tiny(base)
    elif args.quick:
        args.iterations = min(args.iterations, 100)
    tiny_data = device_data(tiny(base), device)
    data = tiny_data if args.smoke else device_data(base, device)

    env = {**environment(str(device)), **gpu_facts(device)}
    print(env, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checks, rows, together, proxy = run_checks(base, tiny_data, device, args.smoke), [], [], []
    one_process: dict = {}
    # rewritten after each step, so that a command stopped at its time limit still returns what was measured
    write = lambda: write_report(out, args, env, base, device, checks, rows, one_process, together, proxy)  # noqa: E731
    write()
    for row in speed(base, data, networks, args.iterations):
        rows.append(row)
        write()
    one_process.update(in_one_process(base, networks, data, rows, args.iterations))
    print(one_process, flush=True)
    write()
    if not args.quick:
        together += [concurrent(base, networks, 4 if args.smoke else args.iterations, g) for g in (False, True)]
        write()
        proxy += runs_at_once(base, networks[:1] if args.smoke else [("resnet", 20), ("resnet", 110)],
                              4 if args.smoke else args.iterations // 2, (1, 2) if args.smoke else (1, 4, 8))
        write()
    failed = [c["check"] for c in checks if c["result"] != "passed"]
    print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


def write_report(out: Path, args, env: dict, base: TrainConfig, device, checks, rows, one_process, together,
                 proxy) -> None:
    """gpu_check.json and gpu_check.md in ``out``, from what has been measured so far."""
    summary = {"environment": env, "smoke": args.smoke, "quick": args.quick, "checks": checks, "speed": rows,
               "in one process": one_process, "concurrent": together, "runs at once": proxy}
    write_atomic(json.dumps(summary, indent=1) + "\n", out / "gpu_check.json")
    failed = [c["check"] for c in checks if c["result"] != "passed"]
    pending = "(not measured: --quick)" if args.quick else "(not measured yet)"
    lines = [f"# CUDA check{' — SMOKE MODE: tiny networks on ' + device.type + ', no meaningful timings' if args.smoke else ''}",
             "", ", ".join(f"{k} {v}" for k, v in env.items()), "",
             f"## Checks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}", "", markdown_table(checks), "",
             f"## Speed ({args.precision}, batch {base.batch_size}, {args.iterations} timed steps each after the untimed "
             f"first ones; projection: {PAPER.total_iterations:,} steps and {EVALUATIONS} evaluations, one run at a time)",
             "", markdown_table(rows) if rows else "(not measured yet)", "",
             f"One run at a time, the {len(rows)} networks measured take "
             f"{sum(float(r['paper schedule, eager (min)']) for r in rows):.0f} min eager and "
             f"{sum(float(r['paper schedule, graphed (min)']) for r in rows):.0f} min graphed.", "",
             f"## The {len(rows) or ''} networks at the paper's schedule: one at a time, and all at once in one process",
             "", _one_process_line(one_process), "",
             "## All at once (one process each)", ""]
    if not together:
        lines.append(pending)
    for t in together:
        lines.append(f"- {'graphed' if t['cuda_graph'] else 'eager'}: {t['runs at once']} runs, projected at most "
                     f"{t['projected minutes (upper bound, evaluations not included)']:.0f} min "
                     f"(slowest step {1e3 * max(t['s / step each'].values()):.1f} ms)")
    lines += ["", "## Runs at once: `sweep --parallel auto`'s choice, and throughput measured with copies side by side",
              "", "Throughput of k copies of a network, one process each, relative to one alone ("
              f"{'graphed' if base.cuda_graph and device.type == 'cuda' else 'eager'}, {base.precision}); auto takes the fewest runs that reach 90% of the best throughput of one run at "
              "batches of 128 x k, a proxy that this table checks.", "", markdown_table(proxy) if proxy else pending]
    write_atomic("\n".join(lines) + "\n", out / "gpu_check.md")


def _one_process_line(m: dict) -> str:
    if not m:
        return "(not measured yet)"
    return (f"{m['step']} steps: one at a time {m['one at a time (min)']:.1f} min; all {m['networks']} at once in one "
            f"process {m['all at once, one process (min)']:.1f} min ({m['speed-up']:.2f}x), a round of their "
            f"{m['networks']} updates taking {1e3 * m['s / round of updates']:.1f} ms; evaluations as measured per "
            "network, one after another.")


if __name__ == "__main__":
    raise SystemExit(main())
