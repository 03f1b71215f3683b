"""The trainer: the paper's schedule, a real short run, resume, divergence, re-evaluation, sweeps."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from resnet import TrainConfig, evaluate_run, sweep, train
from resnet.data import to_device
from resnet.results import CSV_COLUMNS, RunConflict, finished_meta, read_csv, read_meta
from resnet.trainer import CheckpointError, TrainingDiverged, learning_rate

from .conftest import tiny_config


@pytest.mark.parametrize("iteration, lr", [(0, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01),
                                           (48_000, 0.001), (63_999, 0.001)])
def test_paper_learning_rate_schedule(iteration, lr):
    assert learning_rate(iteration, TrainConfig()) == pytest.approx(lr)


def test_warmup_lr_and_which_depths_warm_up():
    assert learning_rate(100, TrainConfig(depth=110), warming_up=True) == pytest.approx(0.01)
    assert TrainConfig(depth=110).uses_warmup and TrainConfig(depth=1202).uses_warmup
    assert not TrainConfig(depth=56).uses_warmup
    assert not TrainConfig(depth=110, warmup=False).uses_warmup and TrainConfig(depth=20, warmup=True).uses_warmup


# The paper: "we use 0.01 to warm up the training until the training error is below 80% (about 400 iterations)".
# Checked every 20 iterations here (each check reads the error from the device), and never past iteration 400.
@pytest.mark.parametrize("iteration, error, checked, ended", [
    (1, 99.0, False, None), (19, 10.0, False, None),  # between checks nothing is decided
    (20, 85.0, True, False), (20, 80.0, True, False),  # "below 80%": 80% itself goes on
    (40, 79.9, True, True), (380, 90.0, True, False),
    (400, 95.0, True, True),  # the cap ends it whatever the error
])
def test_the_warmup_rule(iteration, error, checked, ended):
    from resnet.trainer import warmup_check, warmup_ended

    cfg = TrainConfig(depth=110)
    assert warmup_check(iteration, cfg) is checked
    if checked:
        assert warmup_ended(iteration, error, cfg) is ended


def test_paper_defaults():
    c = TrainConfig()
    assert (c.batch_size, c.iterations, c.lr, c.milestones, c.momentum, c.weight_decay) == (
        128, 64_000, 0.1, (32_000, 48_000), 0.9, 1e-4)
    assert (c.net, c.shortcut, c.val_size, c.eval_every) == ("resnet", "A", 0, 391)


@pytest.mark.parametrize("kw, match", [({"checkpoint_every": 15, "eval_every": 10}, "multiple"),
                                       ({"net": "dense"}, "net"), ({"precision": "fp8"}, "precision"),
                                       ({"milestones": (48_000, 32_000)}, "increasing"), ({"iterations": 0}, "positive"),
                                       ({"test_subset": -10}, "test_subset must not be negative"),
                                       ({"train_subset": -1000}, "train_subset must not be negative"),
                                       ({"momentum": 1.5}, r"momentum must be in \[0, 1\)"),
                                       ({"milestones": (-5,)}, "milestones must be positive"),
                                       ({"lr_decay": 0}, "lr_decay must be positive"), ({"lr": -0.1}, "lr must be"),
                                       ({"weight_decay": -1e-4}, "weight_decay must not be negative"),
                                       ({"warmup_until_error": 180}, "percentage")])
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_data):
    results = tmp_path_factory.mktemp("results")
    cfg = tiny_config()
    meta = train(cfg, results, data=small_data, progress=False)
    return cfg, results, meta


def test_a_short_real_run_learns_and_writes_valid_results(finished_run, small_data):
    cfg, results, meta = finished_run
    run_dir = cfg.run_dir(results)
    assert meta["status"] == "finished" and read_meta(run_dir / "run.json") == meta
    log = read_csv(run_dir / "log.csv")
    assert list(log.columns) == list(CSV_COLUMNS)
    assert log["iteration"].tolist() == [10, 20, 30, 40]
    assert log["lr"].tolist() == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert meta["final_test_error"] < 85  # chance is 90%
    assert meta["final_test_error"] == log["test_error"].iloc[-1] and meta["best_test_error"] == log["test_error"].min()
    assert meta["parameters"] == 97_216 * 1 - 21_926 and meta["data_source"] == small_data.source
    assert meta["n_train"] == 1000 and meta["n_test"] == 500 and meta["torch"] == torch.__version__
    assert TrainConfig.from_dict(meta["config"]) == cfg
    assert not (run_dir / "checkpoint.pt").exists()
    weights = torch.load(run_dir / "weights.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights.values())


def test_a_short_run_on_cifar10_itself_learns(tmp_path, real_source, real_data):
    cfg = tiny_config(data=real_source)
    meta = train(cfg, tmp_path, data=to_device(real_data, "cpu", train_subset=1000, test_subset=500), progress=False)
    assert meta["status"] == "finished" and meta["data_checksum"] == real_data.checksum
    assert meta["final_test_error"] < 85  # chance is 90%


def test_a_finished_run_is_not_retrained(finished_run, small_data):
    cfg, results, meta = finished_run
    stamp = (cfg.run_dir(results) / "weights.pt").stat().st_mtime_ns
    assert train(cfg, results, data=small_data, progress=False) == meta
    assert (cfg.run_dir(results) / "weights.pt").stat().st_mtime_ns == stamp
    with pytest.raises(RunConflict, match=r"other settings: lr 0\.1 \(asked for 0\.05\)"):
        train(dataclasses.replace(cfg, lr=0.05), results, data=small_data, progress=False)
    # other data is another study, in another folder: no conflict, and the finished run is left alone
    official = dataclasses.replace(cfg, data="official")
    assert official.run_dir(results).parent.name == "official-full-fp32" != cfg.run_dir(results).parent.name
    assert finished_meta(official, results) is None
    # another source that maps to the same study folder is refused, naming the difference
    zipped = dataclasses.replace(cfg, data="/elsewhere/cifar10-small.zip")
    assert zipped.run_dir(results) == cfg.run_dir(results)
    with pytest.raises(RunConflict, match=f"other settings: data '{meta['data_source']}' \\(asked for 'cifar10-small.zip'\\)"):
        train(zipped, results, data=small_data, progress=False)
    moved = dataclasses.replace(cfg, data="/elsewhere/" + cfg.data.rsplit("/", 1)[1], device="auto")
    assert train(moved, results, data=small_data, progress=False) == meta  # same data, another machine's path


def test_evaluation_reproduces_the_recorded_test_error(finished_run):
    cfg, results, meta = finished_run
    report = evaluate_run(cfg.run_dir(results), device="cpu")
    assert report["same_data"] and report["test_error"] == meta["final_test_error"]


def test_resume_ends_bit_for_bit_where_an_uninterrupted_run_does(tmp_path, small_data, finished_run):
    cfg, results, _ = finished_run
    partial = train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    assert partial["status"] == "running" and partial["iterations_done"] == 20
    assert (cfg.run_dir(tmp_path) / "checkpoint.pt").exists()
    resumed = train(cfg, tmp_path, data=small_data, progress=False)
    assert resumed["status"] == "finished"
    a = torch.load(cfg.run_dir(results) / "weights.pt", weights_only=True)
    b = torch.load(cfg.run_dir(tmp_path) / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = ["elapsed_s", "images_per_s"]
    assert read_csv(cfg.run_dir(results) / "log.csv").drop(columns=timing).equals(
        read_csv(cfg.run_dir(tmp_path) / "log.csv").drop(columns=timing))


def test_warmup_ends_and_the_lr_comes_back_to_0_1(tmp_path, small_data):
    # never below the threshold: the warm-up ends at its cap and the lr returns to 0.1
    cfg = tiny_config(warmup=True, warmup_until_error=0.0, warmup_max_iterations=15, warmup_check_every=5)
    meta = train(cfg, tmp_path, data=small_data, progress=False)
    assert meta["warmup_end"] == 15
    assert read_csv(cfg.run_dir(tmp_path) / "log.csv")["lr"].tolist() == pytest.approx([0.01, 0.1, 0.01, 0.001])
    # always below: it ends at the first check
    cfg = tiny_config(warmup=True, warmup_until_error=100.0, warmup_check_every=5, seed=1)
    assert train(cfg, tmp_path, data=small_data, progress=False)["warmup_end"] == 5


def poisoned(data):
    """``data`` with every seventh training image NaN: every batch makes the loss NaN."""
    bad = dataclasses.replace(data, train_x=data.train_x.clone())
    bad.train_x[::7] = float("nan")
    return bad


# without a time limit the NaN is found at the next evaluation point; with one that stops the run mid-interval
# (after 5 updates of the step clock's 1 s), where the stop would otherwise write a checkpoint
@pytest.mark.parametrize("time_limit, found_at", [(None, 30), (4.5, 25)])
def test_a_diverging_run_stops_with_a_clear_error_and_keeps_its_checkpoint(tmp_path, small_data, monkeypatch,
                                                                          time_limit, found_at):
    cfg = tiny_config()
    train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    run_dir = cfg.run_dir(tmp_path)
    checkpoint = (run_dir / "checkpoint.pt").read_bytes()
    if time_limit is not None:
        step_clock(monkeypatch)
    with pytest.raises(TrainingDiverged, match=f"loss became nan between iterations 20 and {found_at}"):
        train(cfg, tmp_path, data=poisoned(small_data), time_limit=time_limit, progress=False)
    assert (run_dir / "checkpoint.pt").read_bytes() == checkpoint
    assert read_csv(run_dir / "log.csv")["iteration"].tolist() == [10, 20]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "diverged"
    assert not (run_dir / "weights.pt").exists()
    # with good data again it resumes from the kept checkpoint and finishes
    assert train(cfg, tmp_path, data=small_data, progress=False)["status"] == "finished"


def test_sweep_trains_what_is_missing_and_refuses_duplicates(tmp_path):
    configs = [tiny_config(net="plain", iterations=10), tiny_config(iterations=10)]
    metas = sweep(configs, tmp_path, progress=False)
    assert [m["name"] for m in metas] == ["plain8-seed0", "resnet8-seed0"] and all(m["status"] == "finished" for m in metas)
    mtimes = [(c.run_dir(tmp_path) / "weights.pt").stat().st_mtime_ns for c in configs]
    assert sweep(configs, tmp_path, progress=False) == metas
    assert mtimes == [(c.run_dir(tmp_path) / "weights.pt").stat().st_mtime_ns for c in configs]
    with pytest.raises(ValueError, match="duplicate"):
        sweep([configs[0], configs[0]], tmp_path)


def test_validation_protocol_logs_validation_error_and_is_recorded(tmp_path, finished_run):
    cfg = tiny_config(val_size=100, iterations=20)
    meta = train(cfg, tmp_path, progress=False)
    assert cfg.name == "resnet8-val100-seed0" and meta["n_train"] == 900 and meta["n_val"] == 100
    assert meta["config"]["val_size"] == 100
    log = read_csv(cfg.run_dir(tmp_path) / "log.csv")
    assert log["val_error"].notna().all() and log["val_error"].between(0, 100).all()
    assert (log["val_loss"] != log["test_loss"]).all()  # measured on other images than the test set's
    # the paper's protocol (no split): every training image trains, and the validation columns stay empty
    default, results, default_meta = finished_run
    assert default.val_size == 0 and default_meta["n_train"] == 1000 and default_meta["n_val"] == 0
    assert read_csv(default.run_dir(results) / "log.csv")[["val_loss", "val_error"]].isna().all().all()


@pytest.mark.parametrize("parallel", [1, 2])
def test_sweep_reports_a_conflict_before_training_anything(finished_run, parallel):
    cfg, results, _ = finished_run
    missing = dataclasses.replace(cfg, seed=7)
    with pytest.raises(RunConflict, match=f"{cfg.name} holds a run with other settings: lr"):
        sweep([missing, dataclasses.replace(cfg, lr=0.05)], results, parallel=parallel, progress=False)
    assert not missing.run_dir(results).exists()


# --- the schedule scale ------------------------------------------------------------------------------

@pytest.mark.parametrize("iteration, lr", [(0, 0.1), (3_999, 0.1), (4_000, 0.01), (5_999, 0.01), (6_000, 0.001),
                                           (7_999, 0.001)])
def test_a_one_eighth_schedule_scales_the_iterations_and_milestones_and_nothing_else(iteration, lr):
    short = TrainConfig(schedule="1/8")
    assert learning_rate(iteration, short) == pytest.approx(lr)
    assert (short.total_iterations, short.lr_milestones) == (8_000, (4_000, 6_000))
    assert dataclasses.replace(short, schedule="1") == TrainConfig()  # everything else is the paper's
    assert TrainConfig.from_dict(short.to_dict()) == short and TrainConfig(schedule="0.125") == short


@pytest.mark.parametrize("schedule, match", [("0", r"\(0, 1\]"), ("3/2", r"\(0, 1\]"), ("fast", "fraction"),
                                             ("1/0", "fraction"), ("1/1000000", "no iteration")])
def test_bad_schedules_are_refused(schedule, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(schedule=schedule)


def test_a_study_is_its_data_schedule_and_precision():
    assert TrainConfig(data="official").study == "official-full-fp32"
    cfg = TrainConfig(data="/x/cifar10-jpeg.tar.gz", schedule="1/8", precision="bf16")
    assert cfg.study == "cifar10-jpeg-1of8-bf16" and cfg.run_dir("results").as_posix() == (
        "results/cifar10-jpeg-1of8-bf16/resnet20-seed0")


def test_a_half_schedule_run_trains_half_the_iterations_with_the_lr_divided_at_half_the_milestones(tmp_path, small_data):
    cfg = tiny_config(schedule="1/2")  # 40 iterations, milestones 20 and 30 -> 20 iterations, 10 and 15
    meta = train(cfg, tmp_path, data=small_data, progress=False)
    log = read_csv(cfg.run_dir(tmp_path) / "log.csv")
    assert meta["status"] == "finished" and log["iteration"].tolist() == [10, 20]
    assert log["lr"].tolist() == pytest.approx([0.1, 0.001])
    assert meta["config"]["schedule"] == "1/2" and cfg.run_dir(tmp_path).parent.name.endswith("-1of2-fp32")


# --- stopping on time ------------------------------------------------------------------------------

def step_clock(monkeypatch, seconds_per_step: float = 1.0):
    """The trainer's clock, made to advance only as it trains: ``seconds_per_step`` per update, nothing else."""
    import resnet.trainer

    now = [0.0]
    real_make_step = resnet.trainer.make_step

    def make_step(*args, **kw):
        update = real_make_step(*args, **kw)

        def timed(*a):
            now[0] += seconds_per_step
            return update(*a)

        return timed

    monkeypatch.setattr(resnet.trainer, "make_step", make_step)
    monkeypatch.setattr(resnet.trainer, "clock", lambda: now[0])


def assert_same_run(a_dir: Path, b_dir: Path):
    """Two finished runs with the same weights and the same log.csv, but for its timings."""
    a = torch.load(a_dir / "weights.pt", weights_only=True)
    b = torch.load(b_dir / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = ["elapsed_s", "images_per_s"]
    assert read_csv(a_dir / "log.csv").drop(columns=timing).equals(read_csv(b_dir / "log.csv").drop(columns=timing))


def test_a_time_limit_stops_at_a_checkpoint_from_which_the_run_resumes(tmp_path, small_data, finished_run):
    cfg, results, _ = finished_run
    # no time at all: the first evaluation interval outlasts the limit, so the run stops after its first update,
    # with a checkpoint, and the resume ends where the uninterrupted run did
    partial = train(cfg, tmp_path, data=small_data, time_limit=0, progress=False)
    assert partial["status"] == "running" and partial["iterations_done"] == 1
    assert (cfg.run_dir(tmp_path) / "checkpoint.pt").exists()
    assert train(cfg, tmp_path, data=small_data, time_limit=3600, progress=False)["status"] == "finished"
    assert_same_run(cfg.run_dir(results), cfg.run_dir(tmp_path))


def test_a_run_whose_checkpoint_is_lost_restarts_from_the_beginning_and_says_so(tmp_path, small_data, finished_run,
                                                                                  capsys):
    cfg, results, _ = finished_run
    run_dir = cfg.run_dir(tmp_path)
    train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    (run_dir / "checkpoint.pt").unlink()  # the machine that held it is gone; run.json and log.csv were kept
    capsys.readouterr()
    again = train(cfg, tmp_path, data=small_data, stop_at=10, progress=False)
    assert "checkpoint.pt is missing" in capsys.readouterr().err
    assert again["iterations_done"] == 10 and [r["lost_iteration"] for r in again["restarted"]] == [20]
    assert read_csv(run_dir / "log.csv")["iteration"].tolist() == [10]  # the lost attempt's rows are gone
    done = train(cfg, tmp_path, data=small_data, progress=False)  # a plain resume keeps the record
    assert done["status"] == "finished" and done["restarted"] == again["restarted"]
    assert read_meta(run_dir / "run.json")["restarted"] == again["restarted"]
    assert_same_run(cfg.run_dir(results), run_dir)  # a restart is a run from scratch: the same run
    assert "restarted" not in read_meta(cfg.run_dir(results) / "run.json")


def test_a_time_limit_stops_mid_interval_and_the_resume_is_exact(tmp_path, small_data, monkeypatch):
    # 1 s per update, 10 updates per evaluation interval; the warm-up is on, checked every 5 updates, so the
    # stops below fall inside both an evaluation interval and a warm-up check's window
    cfg = tiny_config(warmup=True, warmup_until_error=0.0, warmup_max_iterations=15, warmup_check_every=5)
    reference = train(cfg, tmp_path / "uninterrupted", data=small_data, progress=False)
    step_clock(monkeypatch)
    first = train(cfg, tmp_path, data=small_data, time_limit=3.5, progress=False)
    assert first["iterations_done"] == 4 and first["wall_s"] == 4  # the first update past 3.5 s
    # resumed at 4 s with a limit of 14 s: at iteration 10 the partial interval (6 s) still fits, the next,
    # a whole one, outlasts the limit and is stopped at the first update past it
    second = train(cfg, tmp_path, data=small_data, time_limit=14, progress=False)
    assert second["status"] == "running" and second["iterations_done"] == 19
    assert read_csv(cfg.run_dir(tmp_path) / "log.csv")["iteration"].tolist() == [10]
    done = train(cfg, tmp_path, data=small_data, progress=False)
    assert done["status"] == "finished" and done["warmup_end"] == reference["warmup_end"] == 15
    assert_same_run(cfg.run_dir(tmp_path / "uninterrupted"), cfg.run_dir(tmp_path))
    assert done["wall_s"] == 40  # every update's 1 s, across the three calls


def test_a_sweep_out_of_time_starts_nothing(tmp_path):
    configs = [tiny_config(net="plain", iterations=10), tiny_config(iterations=10)]
    assert sweep(configs, tmp_path, time_limit=0, progress=False) == []
    assert not any(tmp_path.iterdir())


def test_a_sweep_trains_in_the_order_given_and_stops_after_a_run_the_time_limit_stopped(tmp_path, monkeypatch):
    import resnet.sweeps

    calls = []

    def fake_train(cfg, results_dir, *, stop_at=None, time_limit=None, progress=True):
        calls.append((cfg.name, time_limit))
        stopped = cfg.depth == 14  # the time limit stops the second run
        return {"name": cfg.name, "status": "running" if stopped else "finished", "iterations_done": 10}

    monkeypatch.setattr(resnet.sweeps, "train", fake_train)
    configs = [tiny_config(depth=d) for d in (20, 14, 8)]
    metas = sweep(configs, tmp_path, time_limit=1000, progress=False)
    assert [name for name, _ in calls] == ["resnet20-seed0", "resnet14-seed0"]  # the third is not started
    assert all(0 < limit <= 1000 for _, limit in calls) and calls[1][1] <= calls[0][1]
    assert [m["name"] for m in metas] == ["resnet20-seed0", "resnet14-seed0"]
    calls.clear()
    sweep(configs, tmp_path, stop_at=10, progress=False)  # stop_at stops each run, not the sweep
    assert [name for name, _ in calls] == ["resnet20-seed0", "resnet14-seed0", "resnet8-seed0"]


# --- checkpoints are data, tied to their settings and data --------------------------------------------

def test_a_checkpoint_resumes_only_under_its_own_settings_and_data(tmp_path, small_data):
    cfg = tiny_config()
    train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    (cfg.run_dir(tmp_path) / "run.json").unlink()  # even without run.json, the checkpoint knows its settings
    with pytest.raises(RunConflict, match=r"other settings or data: lr 0\.1 \(asked for 0\.05\)"):
        train(dataclasses.replace(cfg, lr=0.05), tmp_path, data=small_data, progress=False)
    other = dataclasses.replace(small_data, checksum="f" * 64)
    with pytest.raises(RunConflict, match="data checksum"):
        train(cfg, tmp_path, data=other, progress=False)
    assert train(cfg, tmp_path, data=small_data, progress=False)["status"] == "finished"


def test_a_crafted_checkpoint_runs_no_code(tmp_path, small_data):
    cfg = tiny_config()
    run_dir = cfg.run_dir(tmp_path)
    run_dir.mkdir(parents=True)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    torch.save({"model": Payload()}, run_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        train(cfg, tmp_path, data=small_data, progress=False)
    assert not marker.exists()


# --- what a sweep will cost ------------------------------------------------------------------------

def test_the_cost_estimate_times_what_is_left_and_skips_finished_runs(finished_run, small_data):
    from resnet.sweeps import estimate_cost, format_cost

    cfg, results, _ = finished_run
    todo = dataclasses.replace(cfg, seed=3)
    rows = estimate_cost([cfg, todo], results, iterations=2)
    assert [r["run"] for r in rows] == [f"{todo.study}/{todo.name}"]
    row = rows[0]
    assert row["iterations left"] == 40 and row["s / iteration"] > 0 and row["s / evaluation"] > 0
    assert row["hours"] == pytest.approx((40 * row["s / iteration"] + 4 * row["s / evaluation"]) / 3600)
    assert format_cost(rows).splitlines()[-1].startswith("total: ")
    assert format_cost([]) == "nothing left to train"


def test_the_cost_estimate_counts_from_the_checkpoint_and_all_of_a_run_that_lost_it(tmp_path, small_data):
    from resnet.sweeps import iterations_left

    cfg = tiny_config()
    train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    assert iterations_left(cfg, tmp_path) == 20
    (cfg.run_dir(tmp_path) / "checkpoint.pt").unlink()  # it restarts from the beginning: all 40 are to train
    assert iterations_left(cfg, tmp_path) == 40


def test_a_time_limit_stops_before_the_limit_when_the_next_interval_would_not_fit(tmp_path, small_data, monkeypatch):
    step_clock(monkeypatch)  # each evaluation interval takes 10 s
    meta = train(tiny_config(), tmp_path, data=small_data, time_limit=25, progress=False)
    assert meta["status"] == "running" and meta["iterations_done"] == 20  # 20 s + one more 10-s interval > 25 s
    assert meta["wall_s"] == 20


# --- one process per run ---------------------------------------------------------------------------

def test_a_run_being_trained_is_refused_to_a_second_process_and_freed_when_the_first_dies(tmp_path, small_data):
    import subprocess
    import sys

    from resnet.results import RunLocked, run_lock

    cfg = tiny_config()
    run_dir = cfg.run_dir(tmp_path)
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from resnet.results import run_lock\n"
        f"with run_lock(Path({str(run_dir)!r})):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"being trained by process {holder.pid} on"):
            train(cfg, tmp_path, data=small_data, progress=False)
        assert not (run_dir / "run.json").exists()  # the refused process wrote nothing
    finally:
        holder.kill()  # as kill -9: no cleanup runs, the kernel drops the lock
        holder.wait()
    assert train(cfg, tmp_path, data=small_data, progress=False)["status"] == "finished"
    with run_lock(run_dir):  # and the finished run's lock is free again
        pass


def test_how_a_run_is_run_is_not_part_of_what_it_is(finished_run, small_data, tmp_path):
    from resnet.config import identity_fields

    assert "checkpoint_every" not in identity_fields() and "device" not in identity_fields()
    assert {"lr", "schedule", "precision", "seed", "data"} <= set(identity_fields())
    cfg, results, meta = finished_run
    assert train(dataclasses.replace(cfg, checkpoint_every=20), results, data=small_data, progress=False) == meta
    train(cfg, tmp_path, data=small_data, stop_at=10, progress=False)  # resumed with checkpoints every 20
    resumed = train(dataclasses.replace(cfg, checkpoint_every=20), tmp_path, data=small_data, progress=False)
    assert resumed["status"] == "finished" and resumed["final_test_error"] == meta["final_test_error"]


def test_a_run_trained_with_eager_steps_is_the_same_run_with_the_same_result(finished_run, small_data, tmp_path):
    cfg, results, meta = finished_run
    eager = dataclasses.replace(cfg, cuda_graph=False)  # --no-cuda-graph
    assert train(eager, results, data=small_data, progress=False) == meta  # recognised as the finished run
    again = train(eager, tmp_path, data=small_data, progress=False)
    assert again["weights_sha256"] == meta["weights_sha256"] and not again["config"]["cuda_graph"]


def test_the_cost_estimate_times_fresh_batches_as_training_does(small_data, monkeypatch):
    import resnet.sweeps
    from resnet.steps import Step

    seen = []
    real_call = Step.__call__
    monkeypatch.setattr(Step, "__call__", lambda self, x, y, lr: seen.append(y.clone()) or real_call(self, x, y, lr))
    resnet.sweeps.time_network(tiny_config(), small_data, iterations=3)
    assert len(seen) == 4 and all(not torch.equal(a, b) for a, b in zip(seen, seen[1:]))


# --- damaged files are named, never trained on ---------------------------------------------------------

def _flip(path, position):
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_or_truncated_checkpoint_is_named_and_never_resumed(tmp_path, small_data):
    from resnet.trainer import read_checkpoint

    cfg = tiny_config()
    train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    path = cfg.run_dir(tmp_path) / "checkpoint.pt"
    good, state = path.read_bytes(), read_checkpoint(path)
    refused = 0
    for position in range(0, len(good), 97):  # every 97th byte: headers, the state's bytes, the zip directory
        _flip(path, position)
        try:
            damaged = read_checkpoint(path)
        except CheckpointError as e:
            assert str(e).startswith(f"{path}: ") and "Delete it to restart" in str(e)
            refused += 1
        else:  # a byte the reader never uses (zip padding, timestamps): the state must come back exactly
            assert damaged["rows"] == state["rows"] and all(
                torch.equal(damaged["model"][k], state["model"][k]) for k in state["model"]), position
        path.write_bytes(good)
    assert refused > len(good) // 97 / 2  # most bytes matter
    _flip(path, len(good) // 2)  # inside the state's bytes: caught by the sha256, nothing trains
    with pytest.raises(CheckpointError, match=f"{path}: damaged checkpoint"):
        train(cfg, tmp_path, data=small_data, progress=False)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=f"{path}: unreadable checkpoint"):
        train(cfg, tmp_path, data=small_data, progress=False)
    path.write_bytes(good)
    assert train(cfg, tmp_path, data=small_data, progress=False)["status"] == "finished"


def test_damaged_weights_are_named_when_loaded(finished_run, tmp_path):
    import shutil

    from resnet import load_run
    from resnet.results import ResultsError

    cfg, results, meta = finished_run
    assert len(meta["weights_sha256"]) == 64 and meta["cpu_threads"] == torch.get_num_threads()
    copy = tmp_path / cfg.name
    shutil.copytree(cfg.run_dir(results), copy)
    _flip(copy / "weights.pt", len((copy / "weights.pt").read_bytes()) // 2)
    with pytest.raises(ResultsError, match="weights.pt: damaged"):
        load_run(copy)


def test_a_checkpoint_of_the_older_format_is_refused_then_upgraded_and_resumed_exactly(tmp_path, small_data, finished_run):
    import importlib.util

    from resnet.trainer import read_checkpoint

    cfg, results, meta = finished_run
    train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    path = cfg.run_dir(tmp_path) / "checkpoint.pt"
    torch.save(read_checkpoint(path), path)  # as the trainer wrote it before checkpoints carried their sha256
    with pytest.raises(CheckpointError, match="tools/migrate_checkpoint.py"):
        train(cfg, tmp_path, data=small_data, progress=False)
    spec = importlib.util.spec_from_file_location("migrate", Path(__file__).resolve().parent.parent / "tools" / "migrate_checkpoint.py")
    migrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migrate)
    assert migrate.main(str(path)) == 0
    resumed = train(cfg, tmp_path, data=small_data, progress=False)
    assert resumed["final_test_error"] == meta["final_test_error"] and resumed["weights_sha256"] == meta["weights_sha256"]


def test_a_failed_write_says_which_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    from resnet.files import torch_bytes, write_atomic

    path = tmp_path / "weights.pt"
    write_atomic(torch_bytes({"w": torch.ones(2)}), path)

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match=f"could not write {path} \\(No space left on device\\); the previous weights.pt is unchanged"):
        write_atomic(torch_bytes({"w": torch.zeros(2)}), path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]  # no temporary file left


def test_errors_before_training_leave_no_run_folder(tmp_path):
    cfg = tiny_config(device="cuda") if not torch.cuda.is_available() else tiny_config(data=str(tmp_path / "none.zip"))
    with pytest.raises((RuntimeError, ValueError)):
        train(cfg, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_a_run_refused_under_its_lock_before_writing_anything_leaves_no_folder(tmp_path, small_data, monkeypatch):
    import resnet.trainer

    def refuse(*args, **kwargs):
        raise RuntimeError("no room for the model")  # as a device that cannot hold the network would

    monkeypatch.setattr(resnet.trainer, "build", refuse)
    with pytest.raises(RuntimeError, match="no room"):
        train(tiny_config(), tmp_path, data=small_data, progress=False)
    assert not any(tmp_path.rglob("*"))  # not even the lock file's folder
    monkeypatch.undo()
    train(tiny_config(), tmp_path, data=small_data, progress=False, stop_at=10)
    monkeypatch.setattr(resnet.trainer, "build", refuse)
    with pytest.raises(RuntimeError, match="no room"):
        train(tiny_config(), tmp_path, data=small_data, progress=False)
    assert (tiny_config().run_dir(tmp_path) / "checkpoint.pt").exists()  # a folder with a run in it is kept whole


def test_a_run_diverging_before_its_first_checkpoint_says_it_has_none(tmp_path, small_data):
    cfg = tiny_config()
    with pytest.raises(TrainingDiverged, match="and no checkpoint \\(none was written yet"):
        train(cfg, tmp_path, data=poisoned(small_data), progress=False)


def test_a_run_folder_moved_to_another_machine_finds_its_data_through_resnet_data_or_the_cache_by_checksum(
        finished_run, tmp_path, monkeypatch, isolated_cache):
    import shutil
    import tarfile

    from PIL import Image

    from resnet.data import DataError
    from resnet.results import write_meta

    from .conftest import SMALL_SOURCE

    cfg, results, meta = finished_run
    moved = shutil.copytree(cfg.run_dir(results), tmp_path / "elsewhere" / cfg.name)
    gone = str(tmp_path / "no-longer-here" / "cifar10-small.tar")  # where run.json says its data was
    write_meta(read_meta(moved / "run.json") | {"config": {**meta["config"], "data": gone}}, moved / "run.json")
    monkeypatch.delenv("RESNET_DATA", raising=False)
    with pytest.raises(DataError, match=(
            rf"the data {cfg.name} was trained on \(cifar10-small.tar, decoded images' sha256 "
            rf"{meta['data_checksum'][:12]}…\) is not at {gone} on this machine, nor in the data cache: pass --data")):
        evaluate_run(moved, device="cpu")
    copy = shutil.copy(SMALL_SOURCE, tmp_path / "my-copy.tar")  # the same images, anywhere
    monkeypatch.setenv("RESNET_DATA", str(copy))
    again = evaluate_run(moved, device="cpu")
    assert again["same_data"] and again["test_error"] == meta["final_test_error"]
    copy.unlink()  # gone too: the images it decoded into the cache are found there by their checksum
    monkeypatch.delenv("RESNET_DATA")
    cached = evaluate_run(moved, device="cpu")
    assert cached["same_data"] and cached["test_error"] == meta["final_test_error"]
    assert cached["data_source"] == "my-copy.tar"  # the name of the source it was decoded from
    # other images in RESNET_DATA are refused, naming both checksums; --data evaluates on them on purpose
    with tarfile.open(SMALL_SOURCE) as tar:
        tar.extractall(tmp_path / "other", filter="data")
    tree = tmp_path / "other" / "cifar10-small"
    Image.new("RGB", (32, 32)).save(tree / "train" / "airplane" / "0000.png")
    monkeypatch.setenv("RESNET_DATA", str(tree))
    with pytest.raises(DataError, match=rf"is not the data {cfg.name} was trained on: .*the run's "
                                        rf"{meta['data_checksum'][:12]}…"):
        evaluate_run(moved, device="cpu")
    assert not evaluate_run(moved, data=str(tree), device="cpu")["same_data"]
