"""A stop that loses nothing: SIGINT (Ctrl-C) or SIGTERM (a scheduler, kill) ends a run after its current update
with a checkpoint that resumes to the bit-identical result, and stops a parallel sweep's runs the same way with no
run started after it. The signals are sent once the runs have logged progress, never on a clock."""
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from resnet import train
from resnet.trainer import read_checkpoint
from resnet.config import config_to_args
from resnet.results import CSV_FILE, META_FILE, read_csv, read_meta

from .conftest import ROOT, tiny_config

# long enough never to finish before the signal; no periodic checkpoint: any checkpoint is the signal's
LONG = tiny_config(iterations=100_000, milestones=(50_000, 75_000), eval_every=10, checkpoint_every=100_000)
TIMING = ["elapsed_s", "images_per_s"]


def _rows(run_dir) -> int:
    try:
        return len((run_dir / CSV_FILE).read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


@pytest.fixture(autouse=True)
def _no_process_left():
    """Whatever a test's verdict, none of its processes outlives it (each starts its own session)."""
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _interruptible():
    """In the child before it runs: SIGINT at its default, which a shell's background job or nohup (pytest run
    that way) would leave ignored; Python then installs its own handler, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(cmd, started) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_interruptible)
    started.append(proc)
    return proc


def _wait_for_rows(procs, run_dirs, rows: int):
    while all(p.poll() is None for p in procs) and min(_rows(d) for d in run_dirs) < rows:
        time.sleep(0.01)
    assert all(p.poll() is None for p in procs), "a run ended before the signal"


def _stopped_run(run_dir) -> int:
    """The iteration a stopped run's checkpoint holds, checked against its run.json and log.csv."""
    iteration = read_checkpoint(run_dir / "checkpoint.pt")["iteration"]
    meta = read_meta(run_dir / META_FILE)
    assert meta["status"] == "running" and meta["iterations_done"] == iteration  # run.json and checkpoint agree
    assert read_csv(run_dir / CSV_FILE)["iteration"].max() <= iteration  # log.csv never ahead of them
    return iteration


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_run_after_its_update_with_a_checkpoint_that_resumes_bit_identical(sig, tmp_path, small_data,
                                                                                         _no_process_left):
    results = tmp_path / "stopped"
    run_dir = LONG.run_dir(results)
    proc = _start([sys.executable, "-m", "resnet", "train", "--results", str(results), "--quiet",
                   *config_to_args(LONG)], _no_process_left)
    _wait_for_rows([proc], [run_dir], 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert re.fullmatch(rf"stopped: {LONG.name}: stopped by {sig.name} at iteration [\d,]+ of 100,000, its checkpoint "
                        r"written; the same command resumes it\n", err), err
    iteration = _stopped_run(run_dir)
    # resumed to the next evaluation but one, it is where an uninterrupted run to there is
    stop_at = (iteration // LONG.eval_every + 2) * LONG.eval_every
    train(LONG, results, data=small_data, stop_at=stop_at, progress=False)
    train(LONG, tmp_path / "whole", data=small_data, stop_at=stop_at, progress=False)
    got, want = (read_checkpoint(r / "checkpoint.pt") for r in (run_dir, LONG.run_dir(tmp_path / "whole")))
    assert got["iteration"] == want["iteration"] == stop_at
    assert all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])
    assert read_csv(run_dir / CSV_FILE).drop(columns=TIMING).equals(
        read_csv(LONG.run_dir(tmp_path / "whole") / CSV_FILE).drop(columns=TIMING))


def _sweep(results, seeds, started):
    return _start([sys.executable, "-m", "resnet", "sweep", "--results", str(results), "--quiet", "--parallel", "2",
                   "--nets", "resnet", "--depths", "8", "--seeds", *map(str, seeds),
                   *_without_swept(config_to_args(LONG))], started)


def _without_swept(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--depth", "--net", "--seed"):
            skip = True
            continue
        out.append(a)
    return out


def test_a_signal_to_a_parallel_sweep_checkpoints_its_runs_and_starts_no_other(tmp_path, _no_process_left):
    results = tmp_path / "results"
    runs = [dataclasses.replace(LONG, seed=s).run_dir(results) for s in (0, 1, 2)]
    proc = _sweep(results, [0, 1, 2], _no_process_left)
    _wait_for_rows([proc], runs[:2], 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert re.fullmatch(r"stopped: sweep stopped by SIGTERM; checkpointed: (resnet8-seed0, resnet8-seed1|resnet8-seed1, "
                        r"resnet8-seed0); the same command resumes it\n", err), err
    for run_dir in runs[:2]:
        _stopped_run(run_dir)
    assert not runs[2].exists()  # queued, never started


def test_a_run_of_a_parallel_sweep_stopped_by_a_signal_stops_the_sweep(tmp_path, _no_process_left):
    results = tmp_path / "results"
    runs = [dataclasses.replace(LONG, seed=s).run_dir(results) for s in (0, 1, 2)]
    proc = _sweep(results, [0, 1, 2], _no_process_left)
    _wait_for_rows([proc], runs[:2], 2)
    holder = re.match(r"process (\d+)", (runs[0] / "train.lock").read_text())
    os.kill(int(holder.group(1)), signal.SIGTERM)  # seed 0's process alone, as a scheduler or a user might
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert re.fullmatch(r"stopped: sweep stopped as resnet8-seed0 was stopped by a signal; checkpointed: "
                        r"resnet8-seed[01], resnet8-seed[01]; the same command resumes it\n", err), err
    _stopped_run(runs[0])
    _stopped_run(runs[1])  # the sweep stopped the other too: nothing half done, nothing new started
    assert not runs[2].exists()


def test_a_handler_installed_by_someone_else_is_left_alone_and_the_defaults_come_back():
    from resnet.trainer import stop_on_signals

    def theirs(signum, frame):  # a job scheduler's (submitit's, say)
        pass

    before = signal.signal(signal.SIGTERM, theirs)
    int_before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, however pytest runs
    try:
        with stop_on_signals() as asked:
            assert signal.getsignal(signal.SIGTERM) is theirs and signal.getsignal(signal.SIGINT) is not (
                signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGINT)
            assert asked["signal"] == "SIGINT"
            with pytest.raises(KeyboardInterrupt, match="SIGINT again: stopped at once"):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, int_before)


def test_a_signal_its_launcher_ignores_stays_ignored():
    # nohup, or a shell's background job, starts a process with SIGINT ignored: a run started so is not stopped by it
    from resnet.trainer import stop_on_signals

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals() as asked:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert asked["signal"] is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
