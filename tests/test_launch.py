"""Scaling out: where a parallel sweep puts its runs on several GPUs, and sweeps as submitit jobs (its local
executor here: real processes, the same code path as Slurm's but for the scheduler)."""
import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

from resnet import train
from resnet.launch import submit, wait
from resnet.sweeps import parse_runs_at_once, place, runs_per_gpu

from .conftest import ROOT, tiny_config


def order_placed(gpus: int, shares: list[float]) -> list[int | None]:
    """Where runs of these shares start, in order, none ending meanwhile (None: no room left)."""
    loads, where = [0.0] * max(1, gpus), []
    for share in shares:
        where.append(place(loads, share))
        if where[-1] is not None:
            loads[where[-1]] += share
    return where


@pytest.mark.parametrize("gpus, shares, where", [
    (0, [1 / 3] * 4, [0, 0, 0, None]), (1, [1 / 4] * 4, [0] * 4),  # one device
    (2, [1.0] * 3, [0, 1, None]), (2, [1 / 3] * 6, [0, 1, 0, 1, 0, 1]), (8, [1 / 2] * 16, [*range(8), *range(8)]),
    (1, [1 / 8, 1 / 8, 1 / 2, 1 / 2], [0, 0, 0, None]),  # small networks several at once, a large one with fewer
    (2, [1 / 2, 1.0, 1 / 2], [0, 1, 0]),  # across the GPUs first: the least loaded with room
])
def test_a_parallel_sweep_fills_every_gpu_before_doubling_up(gpus, shares, where):
    assert order_placed(gpus, shares) == where


@pytest.mark.parametrize("seconds, most, runs", [
    ({1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0}, 8, 8),  # launch-bound: eight batches cost what one does
    ({1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0}, 3, 2),  # ... but only as many runs as there are cores (measured: 1, 2)
    ({1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0}, 8, 1),  # compute-bound: a second run only halves the first's speed
    ({1: 1.0, 2: 1.1, 4: 1.5, 8: 2.9}, 8, 4),  # 4 reach 2.67 of 2.76 per second (97%): 8 would slow each run
    ({1: 1.0, 2: 1.2, 4: 2.4}, 8, 2),  # the batch of 8 did not fit in memory
    ({1: 1.0}, 1, 1),
    ({}, 8, 1),  # not even one batch fitted in memory: the run reports it when it starts
])
def test_runs_per_gpu_are_the_fewest_that_reach_nine_tenths_of_the_best_throughput(seconds, most, runs):
    assert runs_per_gpu(seconds, most) == runs


@pytest.mark.parametrize("text, value", [("auto", "auto"), ("1", 1), ("4", 4)])
def test_runs_at_once_are_auto_or_a_whole_number(text, value):
    assert parse_runs_at_once(text) == value


@pytest.mark.parametrize("text", ["0", "-2", "2.5", "all", ""])
def test_other_runs_at_once_are_refused_by_name(text):
    with pytest.raises(ValueError, match="runs at once: expected 'auto' or a whole number"):
        parse_runs_at_once(text)


def test_auto_measures_each_network_once_and_sweeps_small_networks_side_by_side(tmp_path, monkeypatch):
    import resnet.sweeps

    measured, placed = [], {}
    monkeypatch.setattr(resnet.sweeps, "visible_gpus", lambda: 1)
    monkeypatch.setattr(resnet.sweeps, "measure_runs_per_gpu",
                        lambda configs, most: measured.append([c.name for c in configs]) or {("plain", 8): 4, ("resnet", 8): 2})
    monkeypatch.setattr(resnet.sweeps, "train_together", lambda pending, results, shares, **kw: placed.update(
        zip([c.name for c in pending], shares)) or [])
    monkeypatch.setattr(resnet.sweeps, "_parallel", lambda *a: pytest.fail("a process per run on one GPU"))
    configs = [tiny_config(net=n, seed=s, device="auto") for n in ("plain", "resnet") for s in (0, 1)]
    resnet.sweeps.sweep(configs, tmp_path, progress=False)
    assert measured == [[c.name for c in configs]]
    assert placed == {"plain8-seed0": 1 / 4, "plain8-seed1": 1 / 4, "resnet8-seed0": 1 / 2, "resnet8-seed1": 1 / 2}
    # asked for a process per run, it places them as before, each with its share
    monkeypatch.setattr(resnet.sweeps, "_parallel", lambda jobs, *a: placed.update(
        {g[0].name: (len(g), share) for g, _, share in jobs}) or [])
    placed.clear()
    resnet.sweeps.sweep(configs, tmp_path, together=False, progress=False)
    assert placed == {"plain8-seed0": (1, 1 / 4), "plain8-seed1": (1, 1 / 4), "resnet8-seed0": (1, 1 / 2),
                      "resnet8-seed1": (1, 1 / 2)}


def test_on_several_gpus_runs_together_train_in_one_process_per_gpu(tmp_path, monkeypatch):
    import json

    import resnet.sweeps

    started = []

    class FakeChild:  # a process that ends at once, keeping the job it was given
        def __init__(self, cmd, stdin, stdout, stderr, env, text):
            self.gpu, self.returncode, self.stdin = env.get("CUDA_VISIBLE_DEVICES"), None, self
            started.append(self)

        def write(self, text):
            self.job = json.loads(text)

        def close(self):
            pass

        def poll(self):
            self.returncode = 0
            return 0

    monkeypatch.setattr(resnet.sweeps.subprocess, "Popen", FakeChild)
    monkeypatch.setattr(resnet.sweeps, "visible_gpus", lambda: 2)
    monkeypatch.setattr(resnet.sweeps, "load_cifar10", lambda source: None)
    configs = [tiny_config(seed=s, device="auto") for s in range(5)]
    resnet.sweeps.sweep(configs, tmp_path, parallel=4, progress=False)
    assert [c.gpu for c in started] == ["0", "1"]
    assert [[c["seed"] for c in child.job["configs"]] for child in started] == [[0, 2, 4], [1, 3]]
    assert all(child.job["shares"] == [1 / 4] * len(child.job["configs"]) for child in started)


def test_auto_without_cuda_trains_one_run_at_a_time_as_before(tmp_path, monkeypatch):
    import resnet.sweeps

    monkeypatch.setattr(resnet.sweeps, "visible_gpus", lambda: 0)
    monkeypatch.setattr(resnet.sweeps, "measure_runs_per_gpu", lambda *a: pytest.fail("measured without a GPU"))
    monkeypatch.setattr(resnet.sweeps, "_parallel", lambda *a: pytest.fail("processes without a GPU"))
    serial = []
    monkeypatch.setattr(resnet.sweeps, "_serial", lambda configs, pending, *a: serial.append(len(pending)) or [])
    resnet.sweeps.sweep([tiny_config(seed=s, device="auto") for s in (0, 1)], tmp_path, progress=False)
    assert serial == [2]


def test_the_measurement_times_every_batch_multiple_on_the_cpu(small_data, monkeypatch):
    import resnet.sweeps

    timed = []
    real = resnet.sweeps.time_network
    monkeypatch.setattr(resnet.sweeps, "time_network", lambda cfg, data, it: timed.append((cfg.net, cfg.batch_size)) or real(cfg, data, it))
    cfg = tiny_config(batch_size=8)
    choice = resnet.sweeps.measure_runs_per_gpu([cfg, dataclasses.replace(cfg, seed=1), dataclasses.replace(cfg, net="plain")],
                                                   most=4, iterations=2, device="cpu")
    assert set(choice) == {("resnet", 8), ("plain", 8)} and all(1 <= k <= 4 for k in choice.values())
    assert timed == [(net, b) for net in ("resnet", "plain") for b in (8, 16, 32)]
    timed.clear()  # batches larger than the training images are not timed: 800 of 1,000 is the largest here
    assert resnet.sweeps.measure_runs_per_gpu([tiny_config(batch_size=200)], most=8, iterations=1, device="cpu")
    assert timed == [("resnet", 200), ("resnet", 400), ("resnet", 800)]


def test_each_run_of_a_parallel_sweep_sees_its_own_gpu_and_a_failure_names_its_log(tmp_path, monkeypatch):
    import resnet.sweeps

    started = []

    class FakeChild:  # a process that ends at once: run i fails when i == 2
        def __init__(self, cmd, stdin, stdout, stderr, env, text):
            self.gpu, self.stdin, self.returncode = env.get("CUDA_VISIBLE_DEVICES"), open(tmp_path / "job", "w"), None
            started.append(self)

        def poll(self):
            self.returncode = 1 if started.index(self) == 2 else 0
            return self.returncode

    monkeypatch.setattr(resnet.sweeps.subprocess, "Popen", FakeChild)
    configs = [tiny_config(seed=s, device="auto") for s in range(5)]
    with pytest.raises(RuntimeError, match=r"runs failed: resnet8-seed2 \(see .*resnet8-seed2/train.log\); the others ran"):
        resnet.sweeps._parallel([([c], [1.0], 1.0) for c in configs], tmp_path, 2, None, None)
    assert [c.gpu for c in started] == ["0", "1", "0", "1", "0"]
    cpu_only = [tiny_config(seed=s, device="cpu") for s in range(2)]
    started.clear()
    resnet.sweeps._parallel([([c], [1.0], 1.0) for c in cpu_only], tmp_path, 2, None, None)
    assert [c.gpu for c in started] == [None, None]  # a run asked for the CPU is given no GPU


def test_runs_sharing_the_cpu_split_its_threads(tmp_path, monkeypatch, small_data):
    import torch

    from resnet import sweep
    from resnet.sweeps import cpu_threads_per_run
    from resnet.results import read_meta

    assert [cpu_threads_per_run(k, threads=4) for k in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    # A process left to itself takes a thread per core; two runs sharing this process's two take one each, and
    # run.json records what each trained with.
    alone = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, check=True,
                           env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    if int(alone.stdout) < 2:
        pytest.skip("one core: a run alone would take one thread too")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        configs = [tiny_config(net=net, iterations=10, milestones=(5, 8)) for net in ("plain", "resnet")]
        metas = sweep(configs, tmp_path, parallel=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [m["status"] for m in metas] == ["finished", "finished"]
    assert [read_meta(c.run_dir(tmp_path) / "run.json")["cpu_threads"] for c in configs] == [1, 1]


def test_run_json_counts_the_runs_that_shared_the_device_not_the_sweep_s_slots(tmp_path, small_data):
    from resnet import sweep
    from resnet.results import read_meta

    configs = [tiny_config(seed=seed, iterations=4, milestones=(2, 3)) for seed in (0, 1)]
    sweep(configs, tmp_path, parallel=4, progress=False)  # two runs in four slots: two shared the CPU
    assert [read_meta(c.run_dir(tmp_path) / "run.json")["concurrent_runs"] for c in configs] == [2, 2]


def test_a_sweep_as_local_jobs_trains_every_run_as_in_process(tmp_path, small_data):
    configs = [tiny_config(net=net) for net in ("plain", "resnet")]
    jobs = submit(configs, tmp_path / "jobs-results", launcher="local", timeout_min=5)
    metas = wait(jobs)
    assert [m["status"] for m in metas] == ["finished", "finished"]
    assert submit(configs, tmp_path / "jobs-results", launcher="local") == []  # nothing left to submit
    here = train(configs[1], tmp_path / "here", data=small_data, progress=False)
    assert metas[1]["weights_sha256"] == here["weights_sha256"]


def test_a_job_stopped_part_way_resumes_on_resubmission_to_the_uninterrupted_result(tmp_path, small_data):
    # submitit's local cancel is a SIGINT: where this process ignores it (started in the background by a shell),
    # the jobs would inherit that and never stop; a handler here is reset to the default in each job it starts
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _stop_part_way_and_resume(tmp_path, small_data)
    finally:
        signal.signal(signal.SIGINT, before)


def _stop_part_way_and_resume(tmp_path, small_data):
    cfg = tiny_config(iterations=400, milestones=(200, 300), eval_every=20, checkpoint_every=20, batch_size=8,
                      test_subset=100)
    results = tmp_path / "results"
    [job] = submit([cfg], results, launcher="local", timeout_min=5)
    checkpoint = cfg.run_dir(results) / "checkpoint.pt"
    end = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < end:
        time.sleep(0.2)
    job.cancel()  # as a cluster cancels or preempts it
    with pytest.raises(Exception):
        job.result()
    meta_now = (cfg.run_dir(results) / "run.json").read_text()
    assert '"status": "running"' in meta_now
    [again] = submit([cfg], results, launcher="local", timeout_min=5)
    resumed = wait([again])[0]
    uninterrupted = train(cfg, tmp_path / "whole", progress=False)  # its own data: 100 test images
    assert resumed["status"] == "finished" and resumed["weights_sha256"] == uninterrupted["weights_sha256"]


def test_a_bad_parallel_is_refused_by_the_command_line_and_the_library(tmp_path, capsys):
    from resnet import sweep
    from resnet.cli import main

    with pytest.raises(SystemExit):
        main(["sweep", "--parallel", "0", "--results", str(tmp_path)])
    assert "--parallel: runs at once: expected 'auto' or a whole number, 1 or more, not '0'" in capsys.readouterr().err
    for bad in (0, 2.0, True, "4"):
        with pytest.raises(ValueError, match="parallel must be 'auto' or a whole number"):
            sweep([tiny_config()], tmp_path, parallel=bad)
    assert not any(tmp_path.iterdir())


# --- Slurm, without a cluster: sbatch, srun and scontrol stand-ins on PATH, and each task started as Slurm
# starts it (submitit's own entry point, in Slurm's environment). What is left untested is Slurm itself.

FAKE_SLURM = {
    "sbatch": 'cp "$1" "$(dirname "$0")/submitted.sh"; echo "Submitted batch job 4242"',
    "srun": "exit 0",
    "scontrol": 'echo "$@" >> "$(dirname "$0")/scontrol.calls"',
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def slurm_task(job, task: int | None = None) -> subprocess.Popen:
    """Job ``job`` (task ``task`` of its array) started as Slurm starts it on a node."""
    array = {} if task is None else {"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": str(task)}
    env = {**os.environ, **array, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": str(4242 + (task or 0)),
           "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_NODEID": "0", "SLURM_LOCALID": "0",
           "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "localhost", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-u", "-m", "submitit.core._submit", str(job.paths.folder)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_slurm_sweep_is_one_array_with_the_flags_given_and_its_tasks_train_the_runs(tmp_path, fake_slurm, small_data):
    configs = [tiny_config(net=net, iterations=20, milestones=(10, 15)) for net in ("plain", "resnet")]
    jobs = submit(configs, tmp_path / "results", launcher="slurm", partition="gpu", account="lab", timeout_min=90,
                  gpus_per_job=1, cpus_per_job=6, max_running=1)
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1"]
    script = (fake_slurm / "submitted.sh").read_text()
    for line in ("--array=0-1%1", "--partition=gpu", "--account=lab", "--time=90", "--gpus-per-node=1",
                 "--cpus-per-task=6", "--signal=USR2@", f"--output={tmp_path / 'results' / 'jobs'}/"):
        assert f"#SBATCH {line}" in script, line
    for task, job in enumerate(jobs):
        out = slurm_task(job, task).communicate()[0]
        assert f"job_id=4242_{task}" in out, out
    metas = wait(jobs)
    assert [m["status"] for m in metas] == ["finished", "finished"]
    here = train(configs[1], tmp_path / "here", data=small_data, progress=False)
    assert metas[1]["weights_sha256"] == here["weights_sha256"]


def test_a_slurm_job_at_its_wall_time_requeues_itself_and_resumes_to_the_uninterrupted_result(tmp_path, fake_slurm,
                                                                                           small_data):
    cfg = tiny_config(iterations=400, milestones=(200, 300), eval_every=20, checkpoint_every=20, batch_size=8,
                      test_subset=100)
    results = tmp_path / "results"
    # a 1-minute wall time: submitit counts any signal as the wall time's (a preemption needs no checkpointing)
    [job] = submit([cfg], results, launcher="slurm", timeout_min=1)
    task = slurm_task(job)
    checkpoint, end = cfg.run_dir(results) / "checkpoint.pt", time.monotonic() + 120
    while not checkpoint.exists() and task.poll() is None and time.monotonic() < end:
        time.sleep(0.1)
    task.send_signal(signal.SIGUSR2)  # what Slurm sends shortly before a job's wall time (and a preemption)
    out = task.communicate()[0]
    assert "this job is timed-out" in out and "Requeued job 4242" in out, out
    assert (fake_slurm / "scontrol.calls").read_text().split() == ["requeue", "4242"]
    assert '"status": "running"' in (cfg.run_dir(results) / "run.json").read_text()
    assert slurm_task(job).wait() == 0  # the requeued job starts again, as the same job
    resumed = wait([job])[0]
    uninterrupted = train(cfg, tmp_path / "whole", progress=False)  # its own data: 100 test images
    assert resumed["status"] == "finished" and resumed["weights_sha256"] == uninterrupted["weights_sha256"]
