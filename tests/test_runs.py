"""Runs across processes and devices: a killed parallel sweep, a checkpoint resumed on another device."""
import fcntl
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from resnet import train
from resnet.trainer import device_name, read_checkpoint, write_checkpoint
from resnet.results import read_csv, read_meta, write_meta

from .conftest import ROOT, tiny_config

cpu = torch.device("cpu")


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
        state = read_checkpoint(path)
        state["generator_device"] = "cuda"
        state["sampler"]["generator"] = torch.zeros(16, dtype=torch.uint8)
        state["layout"] = "contiguous"  # moved, no exact resume: it goes on in the layout this device trains fastest in
        state["devices"] = [{"iteration": 0, "device": "NVIDIA H200"}]
        write_checkpoint(state, path)
        runs.append(train(cfg, results, data=small_data, progress=False))
    a, b = runs
    assert a["status"] == "finished" and a["reseeded"] == [{"iteration": 20, "from": "cuda", "to": "cpu"}]
    assert a["layout"] == "channels_last"
    assert a["devices"] == [{"iteration": 0, "device": "NVIDIA H200"}, {"iteration": 20, "device": device_name(cpu)}]
    assert a["weights_sha256"] == b["weights_sha256"]  # re-seeded the same way every time
    uninterrupted = train(cfg, tmp_path / "c", data=small_data, progress=False)
    logs = [read_csv(cfg.run_dir(tmp_path / r) / "log.csv").drop(columns=["elapsed_s", "images_per_s"]) for r in "ac"]
    assert logs[0].iloc[:2].equals(logs[1].iloc[:2])  # identical up to the resume
    assert "reseeded" not in uninterrupted and uninterrupted["devices"] == [{"iteration": 0, "device": device_name(cpu)}]


@pytest.mark.parametrize("reseeded, from_cuda, devices", [
    ([], False, [{"iteration": 0, "device": "NVIDIA H200"}, {"iteration": 20, "device": "HERE"}]),
    ([], True, [{"iteration": 0, "device": "NVIDIA H200"}, {"iteration": 20, "device": "HERE"}]),  # re-seeded here
    ([{"iteration": 10, "from": "cpu", "to": "cuda"}], True,
     [{"iteration": 0, "device": "cpu"}, {"iteration": 10, "device": "NVIDIA H200"}, {"iteration": 20, "device": "HERE"}]),
])
def test_a_checkpoint_older_than_its_device_record_is_taken_to_have_trained_where_its_run_json_says(
        tmp_path, small_data, reseeded, from_cuda, devices):
    # before run.json kept every device, it named the last session's alone: the earlier sessions are taken to have
    # trained there, or, where the run moved, on the device types its 'reseeded' history names
    cfg = tiny_config(seed=5)
    train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    path, meta_path = cfg.run_dir(tmp_path) / "checkpoint.pt", cfg.run_dir(tmp_path) / "run.json"
    state = read_checkpoint(path)
    del state["devices"]
    state["reseeded"] = reseeded
    if from_cuda:  # a CUDA run's checkpoint: resumed here, its generator is re-seeded, a move 'reseeded' records
        state["generator_device"], state["sampler"]["generator"] = "cuda", torch.zeros(16, dtype=torch.uint8)
    write_checkpoint(state, path)
    meta = read_meta(meta_path)
    meta["device_name"] = "NVIDIA H200"
    meta.pop("devices")
    write_meta(meta, meta_path)
    here = device_name(cpu)
    assert train(cfg, tmp_path, data=small_data, progress=False)["devices"] == [
        d | {"device": here} if d["device"] == "HERE" else d for d in devices]


def test_a_resume_under_another_cpu_thread_count_says_so_and_run_json_keeps_every_change(tmp_path, small_data, capfd):
    # Float sums are split by the thread count, so such a resume trains other weights than the uninterrupted run:
    # the count is kept in the checkpoint, a change is said on resume and appended to run.json (as device moves are)
    cfg, before = tiny_config(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
        assert read_checkpoint(cfg.run_dir(tmp_path) / "checkpoint.pt")["cpu_threads"] == 1
        torch.set_num_threads(2)
        train(cfg, tmp_path, data=small_data, stop_at=30, progress=False)
        said = capfd.readouterr().err
        assert "resumed at iteration 20 with 2 CPU threads, trained so far with 1" in said, said
        torch.set_num_threads(1)  # the checkpoint says 2 now: back to 1 is a second change
        meta = train(cfg, tmp_path, data=small_data, progress=False)
    finally:
        torch.set_num_threads(before)
    assert meta["status"] == "finished" and meta["cpu_threads"] == 1
    assert meta["threads_changed"] == [{"iteration": 20, "from": 1, "to": 2}, {"iteration": 30, "from": 2, "to": 1}]
    assert json.loads((cfg.run_dir(tmp_path) / "run.json").read_text())["threads_changed"] == meta["threads_changed"]


@pytest.mark.parametrize("recorded", ["this machine's", 7])
def test_a_checkpoint_older_than_the_thread_count_takes_run_json_s(tmp_path, small_data, capfd, recorded):
    cfg = tiny_config()
    train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    path, meta_path = cfg.run_dir(tmp_path) / "checkpoint.pt", cfg.run_dir(tmp_path) / "run.json"
    state = read_checkpoint(path)
    del state["cpu_threads"], state["threads_changed"]  # as checkpoints were written before the count was kept
    write_checkpoint(state, path)
    if recorded == 7:
        meta_path.write_text(json.dumps(json.loads(meta_path.read_text()) | {"cpu_threads": 7}))
    meta = train(cfg, tmp_path, data=small_data, progress=False)
    said = capfd.readouterr().err
    assert meta["status"] == "finished"
    if recorded == 7:
        assert meta["threads_changed"] == [{"iteration": 20, "from": 7, "to": torch.get_num_threads()}]
        assert "trained so far with 7" in said
    else:  # unchanged: nothing recorded, nothing said
        assert "threads_changed" not in meta and "CPU threads" not in said


def _conv_weight(state: dict) -> torch.Tensor:
    return next(t for t in state["model"].values() if t.ndim == 4 and t.shape[1] > 1)


def _as_older_checkpoint(path):
    """The checkpoint as it was written before layouts were recorded, by a run trained contiguous."""
    state = read_checkpoint(path)
    del state["layout"]
    state["model"] = {k: v.contiguous() for k, v in state["model"].items()}
    for entry in state["optimizer"]["state"].values():
        entry["momentum_buffer"] = entry["momentum_buffer"].contiguous()
    write_checkpoint(state, path)


def test_a_run_trains_channels_last_and_a_run_begun_contiguous_goes_on_contiguous_exactly(tmp_path, small_data):
    cfg = tiny_config()
    new = train(cfg, tmp_path / "new", data=small_data, stop_at=10, progress=False)
    state = read_checkpoint(cfg.run_dir(tmp_path / "new") / "checkpoint.pt")
    assert new["layout"] == state["layout"] == "channels_last"
    weight = _conv_weight(state)
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    new = train(cfg, tmp_path / "new", data=small_data, progress=False)
    assert new["status"] == "finished" and new["layout"] == "channels_last"

    finished = []
    for name, stops in (("once", [None]), ("twice", [20, None])):  # resumed from an older checkpoint at 10
        results = tmp_path / name
        train(cfg, results, data=small_data, stop_at=10, progress=False)
        _as_older_checkpoint(cfg.run_dir(results) / "checkpoint.pt")
        for stop in stops:
            meta = train(cfg, results, data=small_data, stop_at=stop, progress=False)
            if stop:
                state = read_checkpoint(cfg.run_dir(results) / "checkpoint.pt")
                assert state["layout"] == "contiguous" and _conv_weight(state).is_contiguous()
        finished.append(meta)
    once, twice = finished
    assert once["layout"] == twice["layout"] == "contiguous"
    assert once["weights_sha256"] == twice["weights_sha256"]  # a contiguous run's resumes are exact too
    assert once["weights_sha256"] != new["weights_sha256"]  # and the layout did change the sums
