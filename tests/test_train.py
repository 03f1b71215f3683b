"""The trainer: the paper's schedule, a real short run, resume, divergence, re-evaluation, sweeps."""
import dataclasses
import json

import pytest
import torch

from resnet import RunConflict, TrainConfig, TrainingDiverged, evaluate_run, learning_rate, sweep, train
from resnet.results import CSV_COLUMNS, read_csv, read_meta

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


def test_paper_defaults():
    c = TrainConfig()
    assert (c.batch_size, c.iterations, c.lr, c.milestones, c.momentum, c.weight_decay) == (
        128, 64_000, 0.1, (32_000, 48_000), 0.9, 1e-4)
    assert (c.net, c.shortcut, c.val_size, c.eval_every) == ("resnet", "A", 0, 391)


@pytest.mark.parametrize("kw, match", [({"checkpoint_every": 15, "eval_every": 10}, "multiple"),
                                       ({"net": "dense"}, "net"), ({"precision": "fp8"}, "precision"),
                                       ({"milestones": (48_000, 32_000)}, "increasing"), ({"iterations": 0}, "positive")])
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
    run_dir = results / cfg.name
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


def test_a_finished_run_is_not_retrained(finished_run, small_data):
    cfg, results, meta = finished_run
    stamp = (results / cfg.name / "weights.pt").stat().st_mtime_ns
    assert train(cfg, results, data=small_data, progress=False) == meta
    assert (results / cfg.name / "weights.pt").stat().st_mtime_ns == stamp
    with pytest.raises(RunConflict, match=r"other settings: lr 0\.1 \(asked for 0\.05\)"):
        train(dataclasses.replace(cfg, lr=0.05), results, data=small_data, progress=False)
    with pytest.raises(RunConflict, match=f"other settings: data '{meta['data_source']}' \\(asked for 'official'\\)"):
        train(dataclasses.replace(cfg, data="official"), results, data=small_data, progress=False)
    moved = dataclasses.replace(cfg, data="/elsewhere/" + cfg.data.rsplit("/", 1)[1], device="auto")
    assert train(moved, results, data=small_data, progress=False) == meta  # same data, another machine's path


def test_evaluation_reproduces_the_recorded_test_error(finished_run):
    cfg, results, meta = finished_run
    report = evaluate_run(results / cfg.name, device="cpu")
    assert report["same_data"] and report["test_error"] == meta["final_test_error"]


def test_resume_ends_bit_for_bit_where_an_uninterrupted_run_does(tmp_path, small_data, finished_run):
    cfg, results, _ = finished_run
    partial = train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    assert partial["status"] == "running" and partial["iterations_done"] == 20
    assert (tmp_path / cfg.name / "checkpoint.pt").exists()
    resumed = train(cfg, tmp_path, data=small_data, progress=False)
    assert resumed["status"] == "finished"
    a = torch.load(results / cfg.name / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / cfg.name / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = ["elapsed_s", "images_per_s"]
    assert read_csv(results / cfg.name / "log.csv").drop(columns=timing).equals(
        read_csv(tmp_path / cfg.name / "log.csv").drop(columns=timing))


def test_warmup_ends_and_the_lr_comes_back_to_0_1(tmp_path, small_data):
    # never below the threshold: the warm-up ends at its cap and the lr returns to 0.1
    cfg = tiny_config(warmup=True, warmup_until_error=0.0, warmup_max_iterations=15, warmup_check_every=5)
    meta = train(cfg, tmp_path, data=small_data, progress=False)
    assert meta["warmup_end"] == 15
    assert read_csv(tmp_path / cfg.name / "log.csv")["lr"].tolist() == pytest.approx([0.01, 0.1, 0.01, 0.001])
    # always below: it ends at the first check
    cfg = tiny_config(warmup=True, warmup_until_error=100.0, warmup_check_every=5, seed=1)
    assert train(cfg, tmp_path, data=small_data, progress=False)["warmup_end"] == 5


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_its_checkpoint(tmp_path, small_data):
    cfg = tiny_config()
    train(cfg, tmp_path, data=small_data, stop_at=20, progress=False)
    run_dir = tmp_path / cfg.name
    checkpoint = (run_dir / "checkpoint.pt").read_bytes()
    poisoned = dataclasses.replace(small_data, train_x=small_data.train_x.clone())
    poisoned.train_x[::7] = float("nan")
    with pytest.raises(TrainingDiverged, match="loss became nan between iterations 20 and 30"):
        train(cfg, tmp_path, data=poisoned, progress=False)
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
    names = ("plain8-seed0", "resnet8-seed0")
    mtimes = [(tmp_path / n / "weights.pt").stat().st_mtime_ns for n in names]
    assert sweep(configs, tmp_path, progress=False) == metas
    assert mtimes == [(tmp_path / n / "weights.pt").stat().st_mtime_ns for n in names]
    with pytest.raises(ValueError, match="duplicate"):
        sweep([configs[0], configs[0]], tmp_path)


def test_validation_protocol_logs_validation_error_and_is_recorded(tmp_path):
    cfg = tiny_config(val_size=100, iterations=20)
    meta = train(cfg, tmp_path, progress=False)
    assert cfg.name == "resnet8-val100-seed0" and meta["n_train"] == 900 and meta["n_val"] == 100
    assert meta["config"]["val_size"] == 100
    log = read_csv(tmp_path / cfg.name / "log.csv")
    assert log["val_error"].notna().all() and log["val_error"].between(0, 100).all()
    # the default protocol has no validation columns filled
    assert TrainConfig().val_size == 0


@pytest.mark.parametrize("parallel", [1, 2])
def test_sweep_reports_a_conflict_before_training_anything(finished_run, parallel):
    cfg, results, _ = finished_run
    missing = dataclasses.replace(cfg, seed=7)
    with pytest.raises(RunConflict, match=f"{cfg.name} holds a run with other settings: data"):
        sweep([missing, dataclasses.replace(cfg, data="official")], results, parallel=parallel, progress=False)
    assert not (results / missing.name).exists()
