"""The benchmark scripts run end to end (smoke mode on the CPU); no timing is asserted."""
import json

import pytest

from .conftest import SMALL_SOURCE


def test_study_cost_benchmark_smoke(tmp_path, full_size_source):
    from benchmarks import study_cost

    out = tmp_path / "study_cost_cpu_fp32.md"
    study_cost.main(["--depths", "8", "--iterations", "1", "--device", "cpu", "--precision", "fp32",
                     "--data", str(full_size_source), "--out", str(out)])
    text = out.read_text()
    assert "| resnet-8 |" in text and "| plain-8 |" in text and "The 2 networks" in text and "hours at 1/8 (8k)" in text
    from resnet.report import cost_markdown

    table = cost_markdown(tmp_path)  # the README's cost table, from the JSON summary beside
    assert "| cpu (" in table and "| fp32 | 2 |" in table and "[details](" in table


def test_cpu_parallel_benchmark_smoke_times_one_run_alone_and_two_at_once(tmp_path):
    from benchmarks import cpu_parallel

    out = tmp_path / "cpu_parallel.md"
    cpu_parallel.main(["--smoke", "--data", str(SMALL_SOURCE), "--out", str(out)])
    assert "SMOKE MODE" in out.read_text()
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert row["network"] == "resnet-8" and row["threads each, 2 at once"] == max(1, row["threads alone"] // 2)
    assert row["images/s, alone"] > 0 and row["images/s, 2 at once (together)"] > 0 and row["gain"] > 0


def test_gpu_check_smoke_runs_every_check_and_reports(tmp_path):
    from benchmarks import gpu_check

    assert gpu_check.main(["--smoke", "--device", "cpu", "--data", str(SMALL_SOURCE), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "gpu_check.md").read_text()
    assert "SMOKE MODE" in md and "## Checks: all passed" in md and md.count("| passed |") == 7
    assert "| resnet-8 | fp32 |" in md and "All at once" in md
    assert "eager steps: one at a time " in md and " min; all 2 at once in one process " in md
    assert "`sweep --parallel auto`'s choice" in md and "| plain-8 | " in md.split("## Runs at once")[1]
    import json

    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["smoke"] and {c["check"] for c in summary["checks"]} >= {"resume", "parallel sweep, cold cache",
                                                                             "runs together = alone"}
    together = summary["in one process"]
    assert together["networks"] == 2 and together["speed-up"] > 0 and together["s / round of updates"] > 0


def test_gpu_check_reports_a_failing_check_and_exits_1_and_quick_stops_after_the_speed(tmp_path, monkeypatch):
    from benchmarks import gpu_check

    def broken(*args, **kwargs):
        raise AssertionError("a resumed run differs from an uninterrupted one")

    monkeypatch.setattr(gpu_check, "check_resume", broken)
    monkeypatch.setattr(gpu_check, "runs_at_once", broken)  # --quick: neither runs
    monkeypatch.setattr(gpu_check, "concurrent", broken)
    assert gpu_check.main(["--smoke", "--quick", "--device", "cpu", "--data", str(SMALL_SOURCE), "--out", str(tmp_path)]) == 1
    md = (tmp_path / "gpu_check.md").read_text()
    assert "FAILED: resume" in md and "| resnet-8 | fp32 |" in md and md.count("(not measured: --quick)") == 2


def test_gpu_check_checks_the_fp32_graph_in_fp32_and_the_bf16_one_in_bf16_whatever_precision_is_timed(monkeypatch):
    import torch
    from benchmarks import gpu_check
    from resnet import TrainConfig

    seen = []
    monkeypatch.setattr(gpu_check, "check_graph_equals_eager", lambda cfg, data: seen.append(cfg.precision) or cfg.precision)
    for other in ("check_resume", "check_together", "check_bf16"):
        monkeypatch.setattr(gpu_check, other, lambda cfg, data: "")
    monkeypatch.setattr(gpu_check, "check_generators", lambda device: "")
    monkeypatch.setattr(gpu_check, "check_cold_cache_sweep", lambda cfg: "")
    for timed in ("fp32", "bf16"):  # --precision sets the speed measurements' precision, not the checks'
        seen.clear()
        rows = gpu_check.run_checks(TrainConfig(precision=timed), None, torch.device("cpu"))
        assert seen == ["fp32", "bf16"]
        assert [r["detail"] for r in rows[:2]] == ["fp32", "bf16"]


def test_graph_accuracy_smoke_resumes_a_pair_carried_back_in_and_compares_it(tmp_path, small_data, capfd):
    from benchmarks import graph_accuracy
    from resnet import train

    common = ["--smoke", "--data", str(SMALL_SOURCE), "--work", str(tmp_path / "work")]
    assert graph_accuracy.main([*common, "--out", str(tmp_path / "first"), "--stop-at", "20"]) == 0
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == ["graph-accuracy-eager.tar", "graph-accuracy-graphed.tar"]
    import shutil

    shutil.rmtree(tmp_path / "work")  # the machine is gone: only the archives came back
    assert graph_accuracy.main([*common, "--out", str(tmp_path / "second"), "--carry", str(tmp_path / "first")]) == 0
    out = capfd.readouterr().out
    assert "eager: {'resnet8-seed0': 'added'}" in out and "graphed: {'resnet8-seed0': 'added'}" in out
    assert out.count("resnet8-seed0: finished at iteration 40") == 2
    import json

    summary = json.loads((tmp_path / "second" / "graph_accuracy.json").read_text())
    eager, graphed = summary["runs"]
    uninterrupted = train(graph_accuracy.pair(str(SMALL_SOURCE), "bf16", smoke=True)["eager"], tmp_path / "whole",
                          data=small_data, progress=False)
    assert eager["final test error %"] == graphed["final test error %"] == uninterrupted["final_test_error"]
    # on the CPU no graph is recorded: the two steps are the same code, so the curves are identical
    assert summary["final difference (graphed - eager, points)"] == 0 and summary["evaluations compared"] == 4
    assert summary["largest gap between the test-error curves (points)"] == 0
    assert "SMOKE MODE" in (tmp_path / "second" / "graph_accuracy.md").read_text()


def test_gpu_check_keeps_what_it_measured_when_stopped_part_way(tmp_path, monkeypatch):
    from benchmarks import gpu_check

    timed, real = [], gpu_check._timed

    def stopped_at_the_second_network(cfg, data, iterations):
        if cfg.depth == 8 and cfg.net == "resnet":  # the smoke run's second network
            raise KeyboardInterrupt  # as a command stopped at its time limit
        timed.append(cfg.net)
        return real(cfg, data, iterations)

    monkeypatch.setattr(gpu_check, "_timed", stopped_at_the_second_network)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--smoke", "--quick", "--device", "cpu", "--data", str(SMALL_SOURCE), "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["network"] for r in summary["speed"]] == ["plain-8"] and len(summary["checks"]) == 7
    assert "| plain-8 | fp32 |" in (tmp_path / "gpu_check.md").read_text()


def test_official_images_scores_each_run_as_it_was_tested_in_training_and_the_peers_networks(tmp_path):
    import torch

    from benchmarks import official_images
    from resnet import train
    from resnet.models import CifarNet
    from resnet.report import official_errors
    from resnet.results import load_runs

    from .conftest import tiny_config

    meta = train(tiny_config(), tmp_path / "results")
    peers = tmp_path / "peers"
    peers.mkdir()
    for name, (_, depth) in official_images.PEER_NETWORKS.items():  # the peer's file format, untrained weights
        state = {f"module.{k}": v for k, v in CifarNet(depth, "A").state_dict().items() if "num_batches" not in k}
        torch.save({"state_dict": state, "best_prec1": 0.0}, peers / name)
    out = tmp_path / "official_images.json"
    # the small source's test images are the tiny run's own test images: scored as in training, the same error
    official_images.main(["--images", str(SMALL_SOURCE), "--results", str(tmp_path / "results"),
                          "--peers", str(peers), "--out", str(out)])
    measured = json.loads(out.read_text())
    assert measured["images"]["n"] == 500 and [p["weights"] for p in measured["peers"]] == list(
        official_images.PEER_NETWORKS)
    (run,) = measured["runs"]
    assert run["precision"] == "fp32" and len(run["wrong"]) == round(run["error"] * 5)
    assert run["error"] == pytest.approx(meta["final_test_error"], abs=0.2)  # at most one of the 500 images
    assert official_errors(load_runs(tmp_path / "results"), tmp_path) == {run["run"]: run["error"]}
    assert "| peer: akamaster-resnet56.th (trained on the official images) | fp32 |" in out.with_suffix(".md").read_text()


def test_fusion_smoke_trains_fused_seeds_as_separate_runs_to_rounding_and_reports(tmp_path):
    from benchmarks import fusion

    assert fusion.main(["--smoke", "--data", str(SMALL_SOURCE), "--ks", "1", "2", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "fusion.json").read_text())
    (equal,) = summary["equality"]
    assert equal["K"] == 2 and equal["one update: losses, worst relative difference"] < 1e-5
    assert equal["one update: weights, worst relative difference"] < 1e-5
    assert equal["free-running: losses, worst relative difference"] >= 0
    assert [(r["network"], r["K"]) for r in summary["speed"]] == [("resnet-8", 1), ("resnet-8", 2)]
    assert summary["verdict"] == "smoke mode: no decision"
    assert "SMOKE MODE" in (tmp_path / "fusion.md").read_text()


def test_cpu_layout_smoke_times_both_layouts_and_reports_what_the_layout_changes(tmp_path):
    from benchmarks import cpu_layout

    assert cpu_layout.main(["--smoke", "--data", str(SMALL_SOURCE), "--precisions", "fp32", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "cpu_layout.json").read_text())
    [row] = summary["speed"]
    assert (row["network"], row["precision"], row["threads"]) == ("resnet-8", "fp32", 1)
    for kind in ("step", "evaluation"):
        assert row[f"{kind} gain"] > 0 and row[f"s/{kind}, contiguous"] > 0 and row[f"s/{kind}, channels_last"] > 0
    [diff] = summary["difference"]  # the same weights in either layout: rounding apart, the same predictions
    assert 0 < float(diff["one update: largest weight difference / largest weight"]) < 1e-3
    assert diff["test predictions that differ"].startswith("0 of ")
    assert "SMOKE MODE" in (tmp_path / "cpu_layout.md").read_text()
