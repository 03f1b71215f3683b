"""Chaos: a small run killed (SIGKILL) at moments drawn from its progress, checkpoint and file writes included,
always resumes to the bit-identical result of an uninterrupted run, and never leaves a half-written file behind."""
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
from resnet.trainer import read_checkpoint

from .conftest import ROOT, tiny_config

TRIALS = 20


def _whole(run_dir):
    """Every file the trainer left is complete and valid (a .tmp file is the only thing a kill may leave)."""
    for path in run_dir.iterdir():
        if path.name == META_FILE:
            read_meta(path)
        elif path.name == CSV_FILE:
            read_csv(path)
        elif path.name == "checkpoint.pt":
            read_checkpoint(path)
        elif path.name == "weights.pt":
            torch.load(path, weights_only=True)
        else:
            assert path.suffix == ".tmp" or path.name == "train.lock", path


def _rows(run_dir) -> int:
    """Evaluations the run has logged so far (0 before its first)."""
    try:
        return len((run_dir / CSV_FILE).read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_run_killed_anywhere_resumes_bit_identical(trial, tmp_path_factory, reference):
    # The kill is aimed by what the run has done, not by the clock: once it has logged its k-th evaluation (k drawn
    # per trial), it is killed after a few more milliseconds, drawn too, so the kills land in updates, evaluations
    # and file writes alike, however fast or busy the machine is. Whatever it interrupts, everything must hold.
    cfg, want_weights, want_log = reference
    draw = random.Random(trial)
    rows, delay_s = draw.randint(0, cfg.total_iterations // cfg.eval_every - 1), draw.uniform(0, 0.05)
    results = tmp_path_factory.mktemp(f"chaos{trial}")
    run_dir = cfg.run_dir(results)
    cmd = [sys.executable, "-m", "resnet", "train", "--results", str(results), "--quiet", *config_to_args(cfg)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and (_rows(run_dir) < rows or not (run_dir / META_FILE).exists()):
        time.sleep(0.002)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if run_dir.exists():
        _whole(run_dir)
    meta = train(cfg, results, progress=False)  # its own data: 100 of the small source's test images
    assert meta["status"] == "finished"
    got = torch.load(run_dir / "weights.pt", weights_only=True)
    assert all(torch.equal(got[k], want_weights[k]) for k in want_weights)
    timing = ["elapsed_s", "images_per_s"]
    assert read_csv(run_dir / CSV_FILE).drop(columns=timing).equals(want_log.drop(columns=timing))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    # batch 8 and 100 test images: each update and evaluation is short, so more of the run's time (and of the kills)
    # falls in its file writes
    cfg = tiny_config(iterations=120, milestones=(60, 90), checkpoint_every=10, batch_size=8, test_subset=100)
    results = tmp_path_factory.mktemp("reference")
    done = subprocess.run([sys.executable, "-m", "resnet", "train", "--results", str(results), "--quiet",
                           *config_to_args(cfg)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    weights = torch.load(cfg.run_dir(results) / "weights.pt", weights_only=True)
    return cfg, weights, read_csv(cfg.run_dir(results) / CSV_FILE)
