"""Several runs trained in one process, one update of each in turn (``train_together``, and a sweep placing its
runs that way): each run is the run it would be alone, bit for bit on the CPU, with its own files, limits and
failures."""
import dataclasses
import os
import signal

import pytest
import torch

from resnet import sweep, train
from resnet.results import read_meta
from resnet.trainer import Stopped, train_together

from .conftest import tiny_config
from .test_train import assert_same_run, step_clock

# two runs unlike in every way that matters to the loop: net, seed, length, milestones, warm-up
PAIR = [tiny_config(net="plain", seed=1, iterations=30, milestones=(20,), warmup=True, warmup_check_every=5,
                    warmup_max_iterations=10),
        tiny_config(seed=0)]


@pytest.fixture(scope="module")
def alone(tmp_path_factory, small_data):
    """Each run of PAIR trained alone."""
    results = tmp_path_factory.mktemp("alone")
    for cfg in PAIR:
        train(cfg, results, data=small_data, progress=False)
    return results


def test_runs_trained_together_are_bit_for_bit_the_runs_trained_alone(tmp_path, small_data, alone):
    metas = train_together(PAIR, tmp_path, data=small_data, progress=False)
    assert [m["name"] for m in metas] == [c.name for c in PAIR] and all(m["status"] == "finished" for m in metas)
    for cfg, meta in zip(PAIR, metas):
        assert_same_run(cfg.run_dir(alone), cfg.run_dir(tmp_path))
        by_itself = read_meta(cfg.run_dir(alone) / "run.json")
        assert meta["weights_sha256"] == by_itself["weights_sha256"] and meta["warmup_end"] == by_itself["warmup_end"]
        assert meta["concurrent_runs"] == 2 and by_itself["concurrent_runs"] == 1
    assert train_together(PAIR, tmp_path, data=small_data, progress=False) == metas  # finished: not retrained


def test_runs_stopped_together_and_resumed_together_end_where_they_end_alone(tmp_path, small_data, alone):
    first = train_together(PAIR, tmp_path, data=small_data, stop_at=15, progress=False)
    assert [m["iterations_done"] for m in first] == [20, 20] and {m["status"] for m in first} == {"running"}
    train_together(PAIR[::-1], tmp_path, data=small_data, progress=False)  # resumed, in the other order
    for cfg in PAIR:
        assert_same_run(cfg.run_dir(alone), cfg.run_dir(tmp_path))


def test_runs_start_as_room_frees_and_none_starts_once_out_of_time(tmp_path, small_data, monkeypatch, alone):
    # one at a time (each takes the whole device); 1 s per update: the first run's 30 updates outlast the limit
    step_clock(monkeypatch)
    metas = train_together(PAIR, tmp_path, shares=[1.0, 1.0], data=small_data, time_limit=25, progress=False)
    assert [m["name"] for m in metas] == [PAIR[0].name] and metas[0]["status"] == "running"
    assert not PAIR[1].run_dir(tmp_path).exists()  # waiting for room when the time ran out: never started
    # without a limit, the second starts once the first is done
    metas = train_together(PAIR, tmp_path, shares=[1.0, 1.0], data=small_data, progress=False)
    assert [m["status"] for m in metas] == ["finished", "finished"] and metas[1]["concurrent_runs"] == 1
    for cfg in PAIR:
        assert_same_run(cfg.run_dir(alone), cfg.run_dir(tmp_path))


def test_a_run_that_fails_stops_alone_and_the_failure_is_raised_after_the_others_end(tmp_path, small_data, alone):
    bad = dataclasses.replace(PAIR[0], lr=0.05)  # refused: it is not the run in the folder
    train(PAIR[0], tmp_path, data=small_data, stop_at=10, progress=False)
    with pytest.raises(RuntimeError, match=r"runs failed: plain8-seed1: .*other settings: lr 0\.1 \(asked for "
                                           r"0\.05\)\..*; the others ran to the end"):
        train_together([bad, PAIR[1]], tmp_path, data=small_data, progress=False)
    assert_same_run(PAIR[1].run_dir(alone), PAIR[1].run_dir(tmp_path))
    assert read_meta(PAIR[0].run_dir(tmp_path) / "run.json")["iterations_done"] == 10  # left as it was
    # one run diverging (an lr of 10,000): the other trains to its end, as alone
    diverging = dataclasses.replace(PAIR[1], lr=1e4)
    with pytest.raises(RuntimeError, match=r"runs failed: resnet8-seed0: training loss became (nan|inf) between "
                                           r"iterations 0 and 10; .*; the others ran to the end"):
        train_together([PAIR[0], diverging], tmp_path / "b", data=small_data, progress=False)
    assert_same_run(PAIR[0].run_dir(alone), PAIR[0].run_dir(tmp_path / "b"))
    assert read_meta(diverging.run_dir(tmp_path / "b") / "run.json")["status"] == "diverged"


def test_a_signal_stops_every_run_together_with_a_checkpoint_each(tmp_path, small_data, monkeypatch, alone):
    import resnet.trainer

    real = resnet.trainer.learning_rate
    calls = [0]

    def learning_rate(*a, **kw):  # the 12th update of all (the 6th of each run): SIGTERM, as a scheduler sends it
        calls[0] += 1
        if calls[0] == 12:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)

    monkeypatch.setattr(resnet.trainer, "learning_rate", learning_rate)
    with pytest.raises(Stopped, match="stopped by SIGTERM; checkpointed: plain8-seed1, resnet8-seed0"):
        train_together(PAIR, tmp_path, data=small_data, progress=False)
    # each after its current update: the second run's 6th, during which it came, and the first run's 7th
    assert [read_meta(c.run_dir(tmp_path) / "run.json")["iterations_done"] for c in PAIR] == [7, 6]
    monkeypatch.undo()
    train_together(PAIR, tmp_path, data=small_data, progress=False)
    for cfg in PAIR:
        assert_same_run(cfg.run_dir(alone), cfg.run_dir(tmp_path))


def test_duplicate_runs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="duplicate runs: plain8-seed1"):
        train_together([PAIR[0], PAIR[0]], tmp_path, progress=False)


def test_a_sweep_asked_to_train_its_runs_together_trains_them_in_one_process(tmp_path, alone, monkeypatch):
    import resnet.sweeps

    monkeypatch.setattr(resnet.sweeps, "_start_child", None)  # no process may be started
    metas = sweep(PAIR, tmp_path, parallel=2, together=True, progress=False)
    assert [m["concurrent_runs"] for m in metas] == [2, 2]
    for cfg in PAIR:
        assert_same_run(cfg.run_dir(alone), cfg.run_dir(tmp_path))
    assert torch.get_num_threads() == read_meta(PAIR[0].run_dir(tmp_path) / "run.json")["cpu_threads"]
