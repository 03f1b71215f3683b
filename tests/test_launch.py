"""Scaling out: where a parallel sweep puts its runs on several GPUs, and sweeps as submitit jobs (its local
executor here: real processes, the same code path as Slurm's but for the scheduler)."""
import time

import pytest

from resnet import train
from resnet.launch import submit, wait
from resnet.sweeps import gpu_slots

from .conftest import tiny_config


@pytest.mark.parametrize("gpus, per_gpu, slots", [
    (0, 1, [None]), (0, 3, [None] * 3), (1, 4, [None] * 4),  # one device: nothing to assign
    (2, 1, [0, 1]), (2, 3, [0, 1, 0, 1, 0, 1]), (8, 2, [*range(8), *range(8)]),  # across the GPUs first
])
def test_a_parallel_sweep_fills_every_gpu_before_doubling_up(gpus, per_gpu, slots):
    assert gpu_slots(gpus, per_gpu) == slots


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
        resnet.sweeps._parallel(configs, tmp_path, gpu_slots(2, 1), None, None)
    assert [c.gpu for c in started] == ["0", "1", "0", "1", "0"]
    cpu_only = [tiny_config(seed=s, device="cpu") for s in range(2)]
    started.clear()
    resnet.sweeps._parallel(cpu_only, tmp_path, gpu_slots(2, 1), None, None)
    assert [c.gpu for c in started] == [None, None]  # a run asked for the CPU is given no GPU


def test_a_sweep_as_local_jobs_trains_every_run_as_in_process(tmp_path, small_data):
    configs = [tiny_config(net=net) for net in ("plain", "resnet")]
    jobs = submit(configs, tmp_path / "jobs-results", launcher="local", timeout_min=5)
    metas = wait(jobs)
    assert [m["status"] for m in metas] == ["finished", "finished"]
    assert submit(configs, tmp_path / "jobs-results", launcher="local") == []  # nothing left to submit
    here = train(configs[1], tmp_path / "here", data=small_data, progress=False)
    assert metas[1]["weights_sha256"] == here["weights_sha256"]


def test_a_job_stopped_part_way_resumes_on_resubmission_to_the_uninterrupted_result(tmp_path, small_data):
    cfg = tiny_config(iterations=400, milestones=(200, 300), eval_every=20, checkpoint_every=20)
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
    uninterrupted = train(cfg, tmp_path / "whole", data=small_data, progress=False)
    assert resumed["status"] == "finished" and resumed["weights_sha256"] == uninterrupted["weights_sha256"]
