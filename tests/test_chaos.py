"""Chaos: a small run killed (SIGKILL) at random moments, checkpoint and file writes included, always resumes to
the bit-identical result of an uninterrupted run, and never leaves a half-written file behind."""
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from resnet import train
from resnet.config import config_to_args
from resnet.results import CSV_FILE, META_FILE, read_csv, read_meta
from resnet.checkpoint import read_state

from .conftest import ROOT, tiny_config

TRIALS = 20
KILLED_WHILE = []  # what each kill interrupted: 'start-up', 'training' or 'finished'


def _whole(run_dir):
    """Every file the trainer left is complete and valid (a .tmp file is the only thing a kill may leave)."""
    for path in run_dir.iterdir():
        if path.name == META_FILE:
            read_meta(path)
        elif path.name == CSV_FILE:
            read_csv(path)
        elif path.name == "checkpoint.pt":
            read_state(path)
        elif path.name == "weights.pt":
            torch.load(path, weights_only=True)
        else:
            assert path.suffix == ".tmp" or path.name == "train.lock", path


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_run_killed_anywhere_resumes_bit_identical(trial, tmp_path_factory, small_data, reference):
    cfg, want_weights, want_log, start_s, run_s = reference
    results = tmp_path_factory.mktemp(f"chaos{trial}")
    cmd = [sys.executable, "-m", "resnet", "train", "--results", str(results), "--quiet", *config_to_args(cfg)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(trial).uniform(start_s, start_s + run_s))  # mostly while it trains and saves
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = cfg.run_dir(results)
    if run_dir.exists():
        _whole(run_dir)
    status = read_meta(run_dir / META_FILE)["status"] if (run_dir / META_FILE).exists() else None
    KILLED_WHILE.append({None: "start-up", "running": "training", "finished": "finished"}[status])
    meta = train(cfg, results, data=small_data, progress=False)
    assert meta["status"] == "finished"
    got = torch.load(run_dir / "weights.pt", weights_only=True)
    assert all(torch.equal(got[k], want_weights[k]) for k in want_weights)
    timing = ["elapsed_s", "images_per_s"]
    assert read_csv(run_dir / CSV_FILE).drop(columns=timing).equals(want_log.drop(columns=timing))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_data):
    """The uninterrupted run, and how long a process takes to start and to train it (to aim the kills)."""
    cfg = tiny_config(iterations=120, milestones=(60, 90), checkpoint_every=10)
    results = tmp_path_factory.mktemp("reference")
    begin = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "resnet", "train", "--results", str(results), "--quiet",
                           *config_to_args(cfg)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    total = time.perf_counter() - begin
    meta = read_meta(cfg.run_dir(results) / META_FILE)
    run_s = meta["wall_s"]
    weights = torch.load(cfg.run_dir(results) / "weights.pt", weights_only=True)
    return cfg, weights, read_csv(cfg.run_dir(results) / CSV_FILE), max(total - run_s, 0.1), run_s


def test_most_kills_landed_while_the_run_trained():
    # the trials above prove little if they mostly killed a process still importing torch, or a finished run
    assert len(KILLED_WHILE) == TRIALS and KILLED_WHILE.count("training") >= TRIALS // 2, KILLED_WHILE
