"""Runs across processes and devices: a killed parallel sweep, a checkpoint resumed on another device."""
import fcntl
import json
import os
import subprocess
import sys
import time

import torch

from resnet import train
from resnet.checkpoint import read_state, write_state
from resnet.results import read_csv

from .conftest import ROOT, tiny_config


def _held(lock) -> bool:
    """Whether some process holds the run's lock (the file exists and cannot be locked here)."""
    if not lock.exists():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _wait(condition, seconds: float, what: str):
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"not within {seconds} s: {what}"
        time.sleep(0.2)


def test_a_parallel_sweep_killed_with_sigkill_takes_its_runs_with_it(tmp_path):
    configs = [tiny_config(net=net, iterations=100_000, milestones=(), eval_every=50, checkpoint_every=50)
               for net in ("plain", "resnet")]
    script = ("import json, sys\nfrom resnet import TrainConfig, sweep\n"
              "configs = [TrainConfig.from_dict(c) for c in json.loads(sys.argv[1])]\n"
              "sweep(configs, sys.argv[2], parallel=2, progress=False)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, json.dumps([c.to_dict() for c in configs]), str(tmp_path)],
                              cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    locks = [c.run_dir(tmp_path) / "train.lock" for c in configs]
    try:
        _wait(lambda: all(_held(lock) for lock in locks), 180, "both runs training")
    finally:
        parent.kill()  # SIGKILL: the sweep gets no chance to stop its runs itself
        parent.wait()
    _wait(lambda: not any(_held(lock) for lock in locks), 20, "the runs ending with their sweep")


def test_a_checkpoint_of_another_devices_generator_resumes_reseeded_and_recorded(tmp_path, small_data):
    # A CUDA run's generator state (Philox, 16 bytes) cannot be set on a CPU generator: the run resumes with its
    # generator re-seeded from its seed and iteration, deterministically, and says so in run.json.
    cfg = tiny_config()
    runs = []
    for name in ("a", "b"):
        results = tmp_path / name
        train(cfg, results, data=small_data, stop_at=20, progress=False)
        path = cfg.run_dir(results) / "checkpoint.pt"
        state = read_state(path)
        state["generator_device"] = "cuda"
        state["sampler"]["generator"] = torch.zeros(16, dtype=torch.uint8)
        write_state(state, path)
        runs.append(train(cfg, results, data=small_data, progress=False))
    a, b = runs
    assert a["status"] == "finished" and a["reseeded"] == [{"iteration": 20, "from": "cuda", "to": "cpu"}]
    assert a["weights_sha256"] == b["weights_sha256"]  # re-seeded the same way every time
    uninterrupted = train(cfg, tmp_path / "c", data=small_data, progress=False)
    logs = [read_csv(cfg.run_dir(tmp_path / r) / "log.csv").drop(columns=["elapsed_s", "images_per_s"]) for r in "ac"]
    assert logs[0].iloc[:2].equals(logs[1].iloc[:2])  # identical up to the resume
    assert "reseeded" not in uninterrupted
