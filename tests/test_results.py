"""Results files, the error table, Figures 6 and 7, the command line and torch.hub loading."""
import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from resnet import (TrainConfig, build_model, error_table, findings, format_table, load_runs, pretrained,
                    response_findings)
from resnet.figures import layer_response_std, plot_figure6, plot_figure7, plot_shortcuts
from resnet.cli import main
from resnet.results import CSV_COLUMNS, ResultsError, read_csv, read_meta, write_csv, write_meta

from .conftest import FIXTURE_STUDY, ROOT, fake_run, tiny_config, write_official


@pytest.fixture
def fixture_results(tmp_path):
    results = tmp_path / "results"
    for depth, err in ((20, 9.0), (56, 13.0)):
        fake_run(results, err, net="plain", depth=depth)
    for depth, err in ((20, 8.5), (56, 7.0)):
        fake_run(results, err, net="resnet", depth=depth)
    for seed, err in ((1, 7.4), (2, 7.2)):
        fake_run(results, err, net="resnet", depth=56, seed=seed)
    fake_run(results, 8.0, net="resnet", depth=20, shortcut="B")
    return results


def test_error_table_from_fixture_results(fixture_results):
    table = error_table(load_runs(fixture_results))
    assert table["network"].tolist() == ["ResNet-20", "ResNet-20 (B)", "ResNet-56", "plain-20", "plain-56"]
    row = table.set_index("network").loc["ResNet-56"]
    assert row["seeds"] == 3 and row["params"] == 853_018
    assert row["test error % (final)"] == f"{np.mean([7.0, 7.4, 7.2]) + 30 * np.exp(-4):.2f} ± 0.20, best 7.55"
    assert row["paper"] == "6.97"
    assert table.set_index("network").loc["plain-56", "paper"] == "13.20~"  # read off Fig. 6: approximate
    assert table.set_index("network").loc["ResNet-20 (B)", "paper"] == ""
    text = format_table(error_table(load_runs(fixture_results), peers=True))
    assert "best epoch, test-picked" in text and "akamaster" in text
    assert format_table(error_table([])) == "(no finished runs)"


def test_figure6_from_fixture_results(fixture_results, tmp_path):
    path = tmp_path / "assets" / "figure6.png"
    fig = plot_figure6(load_runs(fixture_results), path)
    assert path.stat().st_size > 10_000
    plain, res = fig.axes
    assert [l.get_label() for l in plain.get_lines() if not l.get_label().startswith("_")] == ["plain-20", "plain-56"]
    assert plain.get_ylim() == (0, 20)  # the paper's range
    fake_run(fixture_results, 30.0, net="plain", depth=44)  # ends above it: left out as the paper does, and named
    fake_run(fixture_results, 90.0, net="plain", depth=110)  # at chance, left out of Figure 6 as in the paper
    high = plot_figure6(load_runs(fixture_results))
    assert high.axes[0].get_ylim() == (0, 20)  # the paper's range at its schedule, whatever lies above
    assert [t.get_text() for t in high.axes[0].texts] == ["final test error above the chart: plain-44 30.55%"]
    assert not high.axes[1].texts  # every ResNet within it
    # a shorter schedule: a range that shows the ResNets (worst final x 1.6, in steps of 5), plain nets above named
    for net, depth, final in (("resnet", 20, 16.0), ("resnet", 56, 15.0), ("plain", 20, 18.0), ("plain", 56, 48.0)):
        fake_run(tmp_path / "short", final, net=net, depth=depth, schedule="1/8")
    short = plot_figure6(load_runs(tmp_path / "short"))
    assert short.axes[0].get_ylim() == (0, 30)  # 16.55% x 1.6 = 26.5, rounded up to 30
    assert [t.get_text() for t in short.axes[0].texts] == ["final test error above the chart: plain-56 48.55%"]
    colors = {l.get_label(): l.get_color() for ax in short.axes for l in ax.get_lines() if not l.get_label().startswith("_")}
    assert colors == {"plain-20": "tab:orange", "plain-56": "tab:blue", "ResNet-20": "tab:olive", "ResNet-56": "tab:red"}
    styles = {l.get_linestyle() for l in res.get_lines()}
    assert styles == {"--", "-"}  # dashed training error, solid test error
    assert res.get_lines()[0].get_xdata()[-1] == pytest.approx(6.4)  # x in 1e4 iterations
    lo, hi = res.get_xlim()
    assert [t for t in res.get_xticks() if lo <= t <= hi] == [0, 1, 2, 3, 4, 5, 6]  # the paper's ticks


def test_figure6_third_panel_when_resnet1202_exists(fixture_results, tmp_path):
    fake_run(fixture_results, 7.9, net="resnet", depth=1202)
    fake_run(fixture_results, 6.5, net="resnet", depth=110)
    fig = plot_figure6(load_runs(fixture_results))
    assert len(fig.axes) == 3
    assert [l.get_label() for l in fig.axes[2].get_lines() if not l.get_label().startswith("_")] == [
        "ResNet-110", "ResNet-1202"]


def test_a_figure6_panel_without_runs_keeps_the_studys_iterations_on_its_x_axis(tmp_path):
    fake_run(tmp_path, 8.5, net="resnet", depth=20)
    plain, res = plot_figure6(load_runs(tmp_path)).axes
    assert [t.get_text() for t in plain.texts] == ["no finished plain runs"]
    assert plain.get_xlim() == res.get_xlim() and res.get_xlim()[1] > 6.4


def test_figure7_from_tiny_models(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    stds, models = {}, {}
    for net in ("plain", "resnet"):
        models[net] = build_model(tiny_config(net=net, depth=14))
        stds[net] = layer_response_std(models[net], x, batch_size=20)
        assert stds[net].shape == (13,) and (stds[net] > 0).all()
    # batching does not change the statistic: compare with one pass over all images
    from resnet.models import capture_responses

    model = models["plain"]
    with capture_responses(model) as captured, torch.no_grad():
        model(x)
    whole = np.array([r.double().std(unbiased=False).item() for r in captured[0]])
    np.testing.assert_allclose(stds["plain"], whole, rtol=1e-6)
    fig = plot_figure7(stds, tmp_path / "f7.png", note="64 random images (test fixture)")
    assert (tmp_path / "f7.png").exists() and len(fig.axes) == 2
    sorted_line = fig.axes[1].get_lines()[0].get_ydata()
    assert (np.diff(sorted_line) <= 0).all()
    twenty = plot_figure7({"plain-20": np.linspace(1, 0.5, 19)})  # 19 layers: matplotlib's own ticks are 2.5 apart
    for ax in twenty.axes:  # layer indices are whole numbers
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_the_figure7_command_draws_any_runs_saves_their_numbers_and_prints_the_findings(tmp_path, capsys):
    tiny = write_official(tmp_path / "tiny" / "cifar-10-batches-py")
    base = TrainConfig(data=str(tiny), train_subset=20, test_subset=10)
    runs = [str(fake_run(tmp_path / "results", 10.0, config=dataclasses.replace(base, net="resnet", depth=d)))
            for d in (20, 32)]
    assert main(["figure7", *runs, "--figure", str(tmp_path / "f7" / "mine.png")]) == 0
    out = capsys.readouterr().out
    assert "ResNet-32: mean std" in out and "deeper ResNets respond less" in out
    mine = json.loads((tmp_path / "f7" / "mine.json").read_text())
    assert [n["network"] for n in mine["networks"]] == ["ResNet-20", "ResNet-32"] and "10 test images" in mine["images"]
    assert (tmp_path / "f7" / "mine.png").exists()


def test_the_report_names_figure7_numbers_that_are_not_of_the_runs_it_draws(tmp_path):
    from resnet.report import results_markdown

    results, assets = tmp_path / "results", tmp_path / "assets"
    sha = {net: json.loads((fake_run(results, 10.0, net=net, depth=20) / "run.json").read_text())["weights_sha256"]
           for net in ("plain", "resnet")}
    assets.mkdir()
    (assets / f"figure7-{FIXTURE_STUDY}.png").write_bytes(b"")
    networks = [{"network": f"{net}-20", "net": net, "depth": 20, "run": f"{FIXTURE_STUDY}/{net}20-seed0",
                 "weights_sha256": sha[net], "std": [std]} for net, std in (("plain", 0.9), ("resnet", 0.7))]
    (assets / f"figure7-{FIXTURE_STUDY}.json").write_text(json.dumps({"images": "fixture", "networks": networks}))
    assert "ResNets respond less than plain nets of their depth" in results_markdown(results, assets, tmp_path)
    fake_run(results, 7.0, net="resnet", depth=56)  # finished since: Figure 7 now draws three networks
    text = results_markdown(results, assets, tmp_path)
    assert "ResNets respond less" not in text and (
        f"are of {FIXTURE_STUDY}/plain20-seed0, {FIXTURE_STUDY}/resnet20-seed0, not of the runs it now draws "
        f"({FIXTURE_STUDY}/plain20-seed0, {FIXTURE_STUDY}/resnet20-seed0, {FIXTURE_STUDY}/resnet56-seed0)") in text


@pytest.mark.parametrize("damage, match", [
    (lambda d: d.pop("networks"), "KeyError"),
    (lambda d: d.update(images=3), "'images' is not a text"),
    (lambda d: d["networks"][1].pop("depth"), "network 1: 'depth' missing or not int"),
    (lambda d: d["networks"][0].update(weights_sha256=7), "network 0: 'weights_sha256' missing or not text or null"),
    (lambda d: d["networks"][0].update(std=[0.5, "big"]), "network 0: 'std' is not a list of numbers"),
    (lambda d: d["networks"][0].update(std=[]), "network 0: 'std' is not a list of numbers"),
    (lambda d: d.update(networks="all"), "AttributeError"),
])
def test_damaged_figure7_numbers_are_named(tmp_path, damage, match):
    from resnet.figures import read_figure7_numbers

    numbers = {"images": "fixture", "networks": [
        {"network": name, "net": net, "depth": 20, "run": f"s/{net}20-seed0", "weights_sha256": None, "std": [0.5]}
        for name, net in (("plain-20", "plain"), ("ResNet-20", "resnet"))]}
    path = tmp_path / "figure7-s.json"
    path.write_text(json.dumps(numbers))
    assert read_figure7_numbers(path) == numbers
    damage(numbers)
    path.write_text(json.dumps(numbers))
    with pytest.raises(ValueError, match=f"figure7-s.json: malformed Figure 7 numbers .*{re.escape(match)}"):
        read_figure7_numbers(path)


def test_figure7_findings_are_checked_on_the_mean_std_per_layer():
    def net(kind, depth, *stds):
        return {"net": kind, "depth": depth, "std": list(stds)}

    measure = "Fig. 7, mean over the 3x3 layers of their responses' std"
    assert response_findings([net("plain", 20, 1.0, 0.8), net("resnet", 20, 0.5, 0.9)]) == [
        f"ResNets respond less than plain nets of their depth ({measure}): holds (20: plain 0.900, ResNet 0.700)"]
    assert response_findings([net("plain", 20, 0.5), net("resnet", 20, 0.6), net("plain", 56, 0.9),
                              net("resnet", 56, 0.4)])[0].endswith(
        "does not hold (20: plain 0.500, ResNet 0.600; 56: plain 0.900, ResNet 0.400)")  # every depth must hold
    deeper = response_findings([net("resnet", 20, 0.8), net("resnet", 56, 0.6), net("resnet", 110, 0.7)])
    assert deeper == [f"deeper ResNets respond less ({measure}): does not hold (20: 0.800, 56: 0.600, 110: 0.700)"]
    assert response_findings([net("resnet", 20, 0.8), net("resnet", 56, 0.6)]) == [
        f"deeper ResNets respond less ({measure}): holds (20: 0.800, 56: 0.600)"]
    assert response_findings([net("plain", 20, 0.8), net("plain", 56, 0.6)]) == []  # nothing the paper claims


# --- schema validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("damage, match", [
    (lambda m: m.pop("data_source"), "data_source.*missing"),
    (lambda m: m.update(parameters="many"), "parameters.*type"),
    (lambda m: m.update(status="done"), "status"),
    (lambda m: m.update(final_test_error=None), "final_test_error"),
    # values no run can have: NaN (JSON's NaN), inf, negatives, errors over 100%
    (lambda m: m.update(final_train_error=float("nan")), "'final_train_error' is nan, not a percentage"),
    (lambda m: m.update(best_test_error=101.0), "'best_test_error' is 101.0, not a percentage"),
    (lambda m: m.update(wall_s=float("inf")), "'wall_s' is inf, not a count or duration"),
    (lambda m: m.update(parameters=-1), "'parameters' is -1"),
    # settings of the wrong type, missing, or naming another run
    (lambda m: m["config"].update(depth="20"), "field 'config': setting depth must be int, got '20'"),
    (lambda m: m["config"].update(lr=float("nan")), "field 'config': setting lr must be a finite number"),
    (lambda m: m["config"].pop("weight_decay"), "field 'config' lacks the settings \\['weight_decay'\\]"),
    (lambda m: m["config"].update(depth=32), "field 'name' is 'resnet20-seed0', but its settings make the run "
                                             "'resnet32-seed0'"),
    (lambda m: m.update(iterations_done=70_000), "'iterations_done' is 70000, past the run's 64000 iterations"),
    # malformed histories
    (lambda m: m.update(reseeded=[{"iteration": "700", "from": "cuda", "to": "cpu"}]), "field 'reseeded' has an entry"),
    (lambda m: m.update(restarted=[{"lost_iteration": 5}]), "field 'restarted' has an entry"),
    (lambda m: m.update(devices=[{"iteration": 0}]), "field 'devices' has an entry"),
    # what run.json says of a finished run against its log.csv
    (lambda m: m.update(final_train_error=1.0), "final_train_error 1.0 is not the last training error of log.csv"),
    (lambda m: m.update(best_test_error=1.0), "best_test_error 1.0 is not the lowest test error of log.csv"),
    (lambda m: m.update(best_test_iteration=1000), "best_test_iteration 1000 is not the lowest test error's"),
    (lambda m: m.update(iterations_done=32_000), "iterations_done 32000 is not the run's iterations"),
])
def test_malformed_metadata_is_named(fixture_results, damage, match):
    path = fixture_results / FIXTURE_STUDY / "resnet20-seed0" / "run.json"
    meta = json.loads(path.read_text())
    damage(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ResultsError, match=f"{re.escape(str(path))}: .*{match}" if "log.csv" not in match else match):
        load_runs(fixture_results)
    for command in (["plot", "--results", str(fixture_results), "--no-figure7", "--assets", str(path.parent / "a")],
                    ["report", "--results", str(fixture_results), "--root", str(path.parent)]):
        assert main(command) == 1  # one line, no traceback (the CLI prints it)


def test_unreadable_json_is_named(fixture_results):
    path = fixture_results / FIXTURE_STUDY / "plain20-seed0" / "run.json"
    path.write_text("{not json")
    with pytest.raises(ResultsError, match="plain20-seed0/run.json.*not valid JSON"):
        read_meta(path)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("test_error", "test_err"), "columns"),
    (lambda t: t.replace(",1.0,", ",abc,", 1), "non-number"),
    (lambda t: t.replace(",1.0,", ",inf,", 1), "non-finite"),
    (lambda t: t.splitlines()[0] + "\n", "no rows"),
    (lambda t: "\n".join(t.splitlines()[:1] + t.splitlines()[1:][::-1]) + "\n", "increasing"),
])
def test_malformed_csv_is_named(fixture_results, edit, match):
    path = fixture_results / FIXTURE_STUDY / "resnet56-seed0" / "log.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(ResultsError, match=match):
        read_csv(path)


def test_finished_run_must_be_complete(fixture_results):
    (fixture_results / FIXTURE_STUDY / "resnet56-seed1" / "weights.pt").unlink()
    with pytest.raises(ResultsError, match="resnet56-seed1.*weights.pt"):
        load_runs(fixture_results)


def test_csv_round_trip_keeps_every_value(tmp_path):
    rows = [dict(iteration=10, epoch=0.1, lr=0.1, train_loss=1 / 3, train_error=50.0, test_loss=2 / 3,
                 test_error=49.5, val_loss=None, val_error=None, elapsed_s=1.5, images_per_s=123.25),
            dict(iteration=64_000, epoch=163.84, lr=1e-3, train_loss=np.float64(0.1) + 1e-17, train_error=1e-300,
                 test_loss=np.float32(0.7), test_error=8.75, val_loss=np.nextafter(0.3, 1), val_error=7.0,
                 elapsed_s=12345.678901234567, images_per_s=1023.999999999999)]
    write_csv(rows, tmp_path / "log.csv")
    back = read_csv(tmp_path / "log.csv").to_dict("records")
    assert [list(r) for r in back] == [list(CSV_COLUMNS)] * 2
    for row, got in zip(rows, back):
        for column, value in row.items():  # every value exactly, float digits and types included
            assert (np.isnan(got[column]) if value is None else got[column] == value), (column, value, got[column])
    assert isinstance(back[1]["iteration"], int)


# --- loading models the usual ways -----------------------------------------------------------------

def test_pretrained_and_torch_hub_load_committed_style_runs(fixture_results):
    model = pretrained("resnet56", fixture_results)  # the lowest seed
    want = torch.load(fixture_results / FIXTURE_STUDY / "resnet56-seed0" / "weights.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], want[k]) for k in want)
    assert not model.training
    with pytest.raises(FileNotFoundError, match="resnet110.*available"):
        pretrained("resnet110", fixture_results)
    hub = torch.hub.load(str(ROOT), "resnet56", source="local", pretrained=True, results_dir=fixture_results)
    assert all(torch.equal(hub.state_dict()[k], want[k]) for k in want)
    fresh = torch.hub.load(str(ROOT), "plain20", source="local")
    assert fresh.shortcut is None and fresh.depth == 20


def test_pretrained_prefers_the_papers_protocol_and_says_which_run_it_loaded(tmp_path, capsys):
    fake_run(tmp_path, 9.0, net="resnet", depth=32, lr=0.05, precision="bf16")  # seed 0, but another lr
    fake_run(tmp_path, 12.0, net="resnet", depth=32, schedule="1/8")  # the paper's settings, a shorter schedule
    fake_run(tmp_path, 10.0, net="resnet", depth=32, seed=1)  # the paper's protocol
    model = pretrained("resnet32", tmp_path)
    assert model.run == tmp_path / FIXTURE_STUDY / "resnet32-seed1"
    assert capsys.readouterr().err == (f"resnet32: the weights of {FIXTURE_STUDY}/resnet32-seed1 (data fixture, "
                                       "paper's schedule (64,000 iterations), fp32; test error 10.55% on fixture)\n")
    (tmp_path / FIXTURE_STUDY / "resnet32-seed1" / "run.json").unlink()
    assert pretrained("resnet32", tmp_path, quiet=True).run.parent.name == "fixture-full-bf16"  # then the longest
    assert capsys.readouterr().err == ""
    pretrained("resnet32", tmp_path)
    assert "not the paper's protocol" in capsys.readouterr().err


# --- command line ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "sweep"])
def test_cli_help_documents_every_setting(capsys, command):
    import re

    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare with whitespace joined
    swept = {"net": "--nets", "depth": "--depths", "seed": "--seeds"} if command == "sweep" else {}
    for f in dataclasses.fields(TrainConfig):
        flag = swept.get(f.name, "--" + f.name.replace("_", "-"))
        assert re.search(rf"{flag}\b", out), flag
        if f.name not in swept:  # its help text, once, from the field's metadata
            assert " ".join(f.metadata["help"].split()) in out, f.name
    for flag in ("--results", "--stop-at", "--time-limit", "--quiet", *(("--parallel",) if command == "sweep" else ())):
        assert flag in out


def test_cli_sweep_goes_depth_by_depth_then_net_then_seed(monkeypatch, tmp_path, capsys):
    # both nets of a depth before the next depth: a sweep cut short still has plain and residual side by side
    import resnet.sweeps

    asked = []
    monkeypatch.setattr(resnet.sweeps, "sweep", lambda configs, *a, **k: asked.extend(configs) or [])
    main(["sweep", "--results", str(tmp_path), "--quiet", "--depths", "32", "20", "--seeds", "1", "0"])
    assert [c.name for c in asked] == ["plain32-seed1", "plain32-seed0", "resnet32-seed1", "resnet32-seed0",
                                       "plain20-seed1", "plain20-seed0", "resnet20-seed1", "resnet20-seed0"]
    asked.clear()
    main(["sweep", "--results", str(tmp_path), "--quiet"])
    assert [c.name for c in asked] == [f"{n}{d}-seed0" for d in (20, 32, 44, 56, 110) for n in ("plain", "resnet")]
    capsys.readouterr()


def test_cli_sweep_trains_the_runs_named_in_their_order_and_refuses_a_name_its_settings_do_not_make(
        monkeypatch, tmp_path, capsys):
    import resnet.sweeps

    asked = []
    monkeypatch.setattr(resnet.sweeps, "sweep", lambda configs, *a, **k: asked.extend(configs) or [])
    common = ["sweep", "--results", str(tmp_path), "--quiet", "--precision", "bf16"]
    assert main([*common, "--runs", "resnet44-seed0", "plain44-seed0", "resnet110-seed3"]) == 0
    assert [c.name for c in asked] == ["resnet44-seed0", "plain44-seed0", "resnet110-seed3"]
    assert {c.precision for c in asked} == {"bf16"} and asked[2].uses_warmup
    asked.clear()
    assert main([*common, "--shortcut", "B", "--runs", "resnet20B-seed1"]) == 0
    assert [(c.name, c.shortcut) for c in asked] == [("resnet20B-seed1", "B")]
    capsys.readouterr()
    for wrong, said in [(["--runs", "resnet20B-seed1"], "'resnet20B-seed1' is not a run of these settings (names "
                                                        "are like resnet110-seed1; these settings make 'resnet20-seed1')"),
                        (["--runs", "resnet-20"], "'resnet-20' is not a run of these settings"),
                        (["--runs", "resnet21-seed0"], "depth"),
                        (["--depths", "20", "--runs", "resnet20-seed0"], "--runs names the runs itself: leave out --depths")]:
        asked.clear()
        assert main([*common, *wrong]) == 1
        assert said in capsys.readouterr().err and not asked


def test_cli_plot_and_evaluate(fixture_results, tmp_path, capsys):
    assert main(["plot", "--results", str(fixture_results), "--assets", str(tmp_path), "--shortcuts", "20"]) == 0
    out, err = capsys.readouterr()
    assert "ResNet-56" in out and "plain-20" in out and (tmp_path / f"figure6-{FIXTURE_STUDY}.png").exists()
    assert "Figure 7 not drawn" in err and not (tmp_path / f"figure7-{FIXTURE_STUDY}.png").exists()  # fixture data
    assert (tmp_path / "shortcuts-20.png").exists()
    # a mistyped results folder draws nothing and overwrites nothing
    assert main(["plot", "--results", str(tmp_path / "typo"), "--assets", str(tmp_path / "a2")]) == 2
    assert "no finished runs" in capsys.readouterr().err and not (tmp_path / "a2").exists()


def test_cli_train_resumes_a_stopped_run_and_sweeps_in_parallel(tmp_path):
    cfg = tiny_config(iterations=20)
    from resnet.config import config_to_args

    args = [sys.executable, "-m", "resnet", "train", "--results", str(tmp_path), "--quiet", *config_to_args(cfg)]
    first = subprocess.run(args + ["--stop-at", "10"], capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert "running at iteration 10" in first.stdout
    second = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert "finished at iteration 20" in second.stdout
    import os

    sweep = subprocess.run([sys.executable, "-m", "resnet", "sweep", "--results", str(tmp_path),
                            "--depths", "8", "--nets", "plain", "resnet", "--parallel", "2",
                            *[a for a in config_to_args(cfg) if a not in ("--depth", "8")]],
                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, "RESNET_PROGRESS": "text"})
    assert sweep.returncode == 0, sweep.stderr
    # live: what was done before, a text progress bar for the run in its own process, its result as it ends
    assert sweep.stdout.splitlines()[0] == "already finished: resnet8-seed0"
    assert re.search(r"^plain8-seed0: finished at iteration 20, final test error \d+\.\d\d%$", sweep.stdout, re.M)
    assert sweep.stdout.count("plain8-seed0: finished") == 1 and "resnet8-seed0: finished" not in sweep.stdout
    assert re.search(r"plain8-seed0: 100%.*20/20", sweep.stderr), sweep.stderr
    plain = dataclasses.replace(cfg, net="plain").run_dir(tmp_path)
    report = subprocess.run([sys.executable, "-m", "resnet", "evaluate", str(plain), "--device", "cpu"],
                            capture_output=True, text=True, cwd=ROOT)
    result = json.loads(report.stdout)
    assert result["test_error"] == result["recorded_test_error"]


def test_cli_reports_bad_input_in_one_line_and_the_traceback_only_with_debug(tmp_path):
    out = subprocess.run([sys.executable, "-m", "resnet", "train", "--depth", "21", "--iterations", "1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and out.stderr == "error: depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got 21\n"
    debug = subprocess.run([sys.executable, "-m", "resnet", "--debug", "train", "--depth", "21"],
                           capture_output=True, text=True, cwd=ROOT)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_cli_reads_the_data_from_resnet_data_and_records_it_as_an_absolute_path(tmp_path, monkeypatch):
    import os

    env = {**os.environ, "RESNET_DATA": "no-such-archive.tar.gz"}
    out = subprocess.run([sys.executable, "-m", "resnet", "train", "--results", str(tmp_path), "--device", "cpu"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 1 and str(ROOT / "no-such-archive.tar.gz") in out.stderr  # the env's, made absolute
    monkeypatch.chdir(tmp_path)
    from resnet import TrainConfig
    from resnet.config import resolve_source

    assert resolve_source("data/x.tar.gz") == str(tmp_path / "data" / "x.tar.gz")
    assert resolve_source("official") == "official" and TrainConfig().data == ""


def test_findings_check_the_papers_claims(fixture_results):
    lines = findings(load_runs(fixture_results))
    assert lines[0] == "data fixture, paper's schedule (64,000 iterations), fp32:"
    assert "  ResNet-20: 9.05% vs paper 8.75%, +0.30 points" in lines
    assert any(l.startswith("  deeper plain nets are worse (degradation), test error: holds") for l in lines)
    assert any(l.startswith("  deeper ResNets are better, test error: holds") for l in lines)
    fake_run(fixture_results, 9.5, net="resnet", depth=32)  # worse than ResNet-20: the claim fails
    lines = findings(load_runs(fixture_results))
    assert any(l.startswith("  deeper ResNets are better, test error: does not hold (20: 9.05, 32: 10.05") for l in lines)
    assert findings([]) == ["no finished runs to compare with the paper"]


def test_resnet110_s_mean_over_seeds_is_compared_with_the_paper_s_mean_and_its_best_run_with_the_best(tmp_path):
    fake_run(tmp_path, 7.0, seed=0, net="resnet", depth=110)
    only = [l.strip() for l in findings(load_runs(tmp_path)) if "ResNet-110" in l]
    assert only == ["ResNet-110: one run, 7.55% vs the paper's mean of 5, 6.61 ± 0.16%, +0.94 points"]
    for seed, final in ((1, 6.6), (2, 7.4)):
        fake_run(tmp_path, final, seed=seed, net="resnet", depth=110)
    (line,) = [l.strip() for l in findings(load_runs(tmp_path)) if "ResNet-110" in l]
    assert line == ("ResNet-110: mean of 3 runs 7.55% vs the paper's mean of 5, 6.61 ± 0.16%, +0.94 points; "
                    "best run 7.15% vs its best 6.43%, +0.72 points")  # fake_run's curves end 0.55 above ``final``
    row = error_table(load_runs(tmp_path)).iloc[0]
    assert (row["network"], row["seeds"], row["test error % (final)"], row["paper"]) == (
        "ResNet-110", 3, "7.55 ± 0.40, best 7.15", "6.61 ± 0.16, best 6.43")  # ours as the paper's


@pytest.mark.parametrize("final, verdict", [(88.0, "holds"), (40.0, "does not hold")])
def test_plain_110_is_checked_against_the_papers_above_60_percent_and_stays_out_of_the_depth_trend(
        fixture_results, final, verdict):
    fake_run(fixture_results, final, net="plain", depth=110)
    fake_run(fixture_results, final, net="plain", depth=110, schedule="1/8")
    runs = load_runs(fixture_results)
    lines = findings(runs)
    assert (f"  plain-110: {final + 0.55:.2f}%; the paper reports only that it is above 60% (left out of Fig. 6): "
            f"{verdict}") in lines
    short = lines[lines.index("data fixture, 1/8 schedule (8,000 iterations), fp32:"):lines.index(
        "data fixture, paper's schedule (64,000 iterations), fp32:")]
    assert len(short) > 1 and not any(line.startswith("  plain-110") for line in short)  # not compared
    assert "  deeper plain nets are worse (degradation), test error: holds (20: 9.55, 56: 13.55)" in lines
    table = error_table(runs)
    assert table.set_index(["network", "schedule"]).loc[("plain-110", "full"), "paper"] == "> 60"
    assert table.set_index(["network", "schedule"]).loc[("plain-110", "1/8"), "paper"] == ""


def test_a_short_schedule_study_is_checked_for_the_claims_but_never_compared_with_the_papers_numbers(fixture_results):
    for net, depth, err in (("plain", 20, 12.0), ("plain", 56, 15.0), ("resnet", 20, 11.0), ("resnet", 56, 10.0)):
        fake_run(fixture_results, err, net=net, depth=depth, schedule="1/8", precision="bf16")
    runs = load_runs(fixture_results)
    lines = findings(runs)
    short = lines.index("data fixture, 1/8 schedule (8,000 iterations), bf16:")
    assert lines[short + 1:short + 3] == [  # said once for the study, then only the claims
        "  not the paper's protocol (its schedule, optimiser and data counts): its claims are checked, its numbers "
        "are not compared",
        "  deeper plain nets are worse (degradation), test error: holds (20: 12.55, 56: 15.55)"]
    assert "  deeper ResNets are better, test error: holds (20: 11.55, 56: 10.55)" in lines[short:]
    table = error_table(runs)
    short_rows = table[table["schedule"] == "1/8"]
    assert len(short_rows) == 4 and (short_rows["paper"] == "").all() and (short_rows["vs paper, points"] == "").all()
    assert (short_rows["precision"] == "bf16").all()
    assert (short_rows["iterations"] == 8000).all()
    full = table[table["schedule"] == "full"].set_index("network")
    assert full.loc["ResNet-20", "paper"] == "8.75" and full.loc["ResNet-20", "iterations"] == 64000
    assert full.loc["ResNet-20", "vs paper, points"] == "+0.30"


def test_every_study_gets_its_own_figure6_labelled_with_data_schedule_and_precision(fixture_results, tmp_path):
    from resnet import plot_studies

    fake_run(fixture_results, 11.0, net="resnet", depth=20, schedule="1/8", precision="bf16")
    runs = load_runs(fixture_results)
    with pytest.raises(ValueError, match="one Figure 6 per study"):
        plot_figure6(runs)
    figures = plot_studies(runs, tmp_path)
    assert sorted(figures) == ["fixture-1of8-bf16", FIXTURE_STUDY]
    assert all((tmp_path / f"figure6-{study}.png").exists() for study in figures)
    fig = plot_figure6([r for r in runs if r.study == "fixture-1of8-bf16"])
    assert "data fixture, 1/8 schedule (8,000 iterations), bf16" in fig._suptitle.get_text()


def test_shortcut_comparison_figure_and_table(fixture_results, tmp_path):
    fake_run(fixture_results, 7.8, net="resnet", depth=20, shortcut="C")
    runs = load_runs(fixture_results)
    fig = plot_shortcuts(runs, 20, tmp_path / "shortcuts.png")
    labels = [l.get_label() for l in fig.axes[0].get_lines() if not l.get_label().startswith("_")]
    assert labels == ["plain-20 (269,722 params)", "ResNet-20 (269,722 params)", "ResNet-20 (B) (272,474 params)",
                      "ResNet-20 (C) (283,962 params)"]
    table = error_table(runs).set_index("network")
    assert table.loc["ResNet-20 (C)", "params"] == 283_962 and table.loc["ResNet-20 (B)", "params"] == 272_474


def test_the_results_page_names_every_device_a_finished_run_trained_on(tmp_path):
    from resnet.report import results_markdown

    moved = fake_run(tmp_path / "results", 7.0, net="resnet", depth=110, seed=1)
    meta = read_meta(moved / "run.json")
    meta.update(device_name="cpu (x86_64, 2 cores)", devices=[{"iteration": 0, "device": "NVIDIA H200"},
                                                             {"iteration": 27_370, "device": "cpu (x86_64, 2 cores)"}])
    write_meta(meta, moved / "run.json")
    fake_run(tmp_path / "results", 8.0, net="resnet", depth=20)  # an older run: its run.json names its last device
    assert [r.devices for r in load_runs(tmp_path / "results")] == [["NVIDIA H200", "cpu (x86_64, 2 cores)"], ["none"]]
    text = results_markdown(tmp_path / "results", tmp_path / "assets", tmp_path / "no-benchmarks")
    assert "finished runs trained on NVIDIA H200, cpu (x86_64, 2 cores), none." in text


def test_the_results_page_shows_each_study_its_figure_table_claims_and_runs_in_progress(fixture_results, tmp_path):
    from resnet.report import markers, results_markdown, sections, update_reports

    fake_run(fixture_results, 11.0, net="resnet", depth=20, schedule="1/8", precision="bf16")
    running = fake_run(fixture_results, 12.0, net="plain", depth=20, schedule="1/8", precision="bf16")
    meta = read_meta(running / "run.json")
    meta.update(status="running", iterations_done=3000, final_test_error=None, device_name="gpu-fixture",
                reseeded=[{"iteration": 1000, "from": "cpu", "to": "cuda"}, {"iteration": 2500, "from": "cuda", "to": "cpu"}])
    (running / "weights.pt").unlink()
    (running / "checkpoint.pt").write_bytes(b"")  # only its presence is read
    (running / "run.json").write_text(json.dumps(meta))
    text = results_markdown(fixture_results, "assets", tmp_path / "no-benchmarks", link="../")
    short, full = text.split("### data fixture, paper's schedule")
    assert short.startswith("### data fixture, 1/8 schedule (8,000 iterations), bf16")
    assert "![Figure 6, fixture-1of8-bf16](../assets/figure6-fixture-1of8-bf16.png)" in short
    assert ("- plain20-seed0: checkpoint at 3,000 of 8,000 iterations (logged up to 8,000); test error 12.55%, "
            "training error 10.55% at iteration 8,000\n") in short + "\n"  # its moves are in its run.json, not here
    assert "cuda" not in text and " trained on cpu" not in full  # a study's devices are those of its finished runs
    assert "data source `fixture`, finished runs trained on none." in short
    # a short study: one sentence says its numbers are not compared, and its table has no paper columns
    assert "Not the paper's protocol: its claims are checked, its numbers are not compared." in short
    assert "| ResNet-20 | 269722 | 1 | 11.55 | 9.55 | 11.55 |\n" in short and "| paper |" not in short
    assert "Its 1 finished run trained for 1 s in all" in short  # the running one not counted
    assert "Its 7 finished runs trained for 7 s in all" in full  # fake_run's wall_s: 1 s each
    assert "| ResNet-56 | 853018 | 3 | 7.75 ± 0.20, best 7.55 | 5.75 ± 0.20 | 7.75 ± 0.20 | 6.97 | +0.78 |" in full
    assert ("| deeper plain nets are worse (degradation) | holds (20: 9.55, 56: 13.55) | holds (20: 7.55, 56: 11.55) |"
            in full)  # the claims, one row each
    assert "not compared with its" not in text  # no sentence per network
    assert "for scale" not in text  # fixture data is no stand-in with a peer measurement
    (tmp_path / "peer-benchmarks").mkdir()
    (tmp_path / "peer-benchmarks" / "peer_on_jpeg.json").write_text(json.dumps({
        "data": {"source": "fixture", "checksum": "0" * 64, "n": 10000}, "measured": {},
        "peers": [{"weights": "akamaster-resnet56.th", "net": "resnet", "depth": 56, "reported": 6.61, "error": 16.8}]}))
    with_peers = results_markdown(fixture_results, "assets", tmp_path / "peer-benchmarks")
    assert with_peers.count("- for scale: the peer's ResNet-56 (akamaster-resnet56.th), trained on the official images "
                            "(6.61% reported), scores 16.80% on these fixture test images (benchmarks/peer_on_jpeg.md): "
                            "a shift between data sets, trained on one and tested on the other") == 1  # the full study only
    # the files: each section between its markers, the rest untouched, written again only when it changes
    no_cost = tmp_path / "no-benchmarks"
    (tmp_path / "docs").mkdir()
    readme, page = tmp_path / "README.md", tmp_path / "docs" / "results.md"
    readme.write_text("intro\n" + "".join(f"{markers(n)[0]}\nold\n{markers(n)[1]}\n" for n in ("headline", "summary", "peers"))
                      + "outro\n")
    page.write_text(f"head\n{markers('results')[0]}\nold\n{markers('results')[1]}\n")
    assert update_reports(tmp_path, fixture_results, "assets", no_cost) == [readme, page]
    assert update_reports(tmp_path, fixture_results, "assets", no_cost) == []
    body = sections(fixture_results, "assets", no_cost)
    assert page.read_text() == f"head\n{markers('results')[0]}\n{body['results']}\n{markers('results')[1]}\n"
    assert readme.read_text() == "intro\n" + "".join(
        f"{markers(n)[0]}\n{body[n]}\n{markers(n)[1]}\n" for n in ("headline", "summary", "peers")) + "outro\n"
    readme.write_text(f"intro\n{markers('summary')[0]}\nold\n{markers('summary')[1]}\n")
    with pytest.raises(ValueError, match="the markers '<!-- headline:start"):
        update_reports(tmp_path, fixture_results, "assets", no_cost)


def test_the_readme_leads_with_the_paper_schedule_study_beside_the_paper_and_the_peers(fixture_results, tmp_path):
    from resnet.report import headline_markdown, headline_study

    assert headline_study(tmp_path / "none") is None
    assert "No run of the paper's protocol has finished yet" in headline_markdown(tmp_path / "none")
    fake_run(fixture_results, 11.0, net="resnet", depth=20, schedule="1/8")  # more runs, but a short schedule
    fake_run(fixture_results, 12.0, net="resnet", depth=32, schedule="1/8")
    assert headline_study(fixture_results) == FIXTURE_STUDY
    running = fake_run(fixture_results, 8.0, net="resnet", depth=32)
    write_meta(read_meta(running / "run.json") | dict(status="running", iterations_done=5000, final_test_error=None),
               running / "run.json")
    (running / "weights.pt").unlink()
    text = headline_markdown(fixture_results)
    assert f"![Figure 6, {FIXTURE_STUDY}](assets/figure6-{FIXTURE_STUDY}.png)" in text
    assert "| network | seeds | test error % (final) |" in text and "params" not in text
    assert "| ResNet-20 | 1 | 9.05 | 7.05 | 9.05 | 8.75 | +0.30 | 8.27 | 8.00 | 8.51 |" in text  # the peers beside
    assert "Still training: resnet32-seed0 (5,000 of 64,000 iterations)." in text and "ResNet-32 |" not in text
    assert "leaves plain-110 out" not in text
    fake_run(fixture_results, 70.0, net="plain", depth=110)  # in the table, not in Figure 6, as in the paper
    text = headline_markdown(fixture_results)
    assert "| plain-110 | 1 | 70.55 |" in text and "Figure 6 leaves plain-110 out, as the paper does" in text
    official = TrainConfig(data="official", net="resnet", depth=20)  # a study on the official data comes first
    fake_run(fixture_results, 9.0, config=official)
    meta = read_meta(official.run_dir(fixture_results) / "run.json")
    write_meta(meta | {"data_source": "official"}, official.run_dir(fixture_results) / "run.json")
    assert headline_study(fixture_results) == official.study


def test_the_table_averages_only_runs_that_differ_in_nothing_but_the_seed(fixture_results):
    import shutil

    fake_run(fixture_results, 9.9, net="resnet", depth=20, seed=1, lr=0.05)  # another lr: not a seed of ResNet-20
    table = error_table(load_runs(fixture_results))
    rows = table[table["network"] == "ResNet-20"].set_index("settings")
    assert rows.loc["", "seeds"] == 1 and rows.loc["lr 0.05", "seeds"] == 1
    assert rows.loc["lr 0.05", "paper"] == ""  # not the paper's protocol either
    # a copy of a run under another folder name is refused, not counted as a second seed
    shutil.copytree(fixture_results / FIXTURE_STUDY / "resnet56-seed0", fixture_results / FIXTURE_STUDY / "resnet56-seed0-backup")
    with pytest.raises(ResultsError, match="resnet56-seed0-backup holds the run 'resnet56-seed0'"):
        load_runs(fixture_results)
    assert pretrained("resnet56", fixture_results) is not None  # the copy's name is no seed: ignored


def test_a_recorded_final_error_that_is_not_the_logs_is_refused(fixture_results):
    path = fixture_results / FIXTURE_STUDY / "resnet20-seed0" / "run.json"
    meta = json.loads(path.read_text())
    meta["final_test_error"] = 1.0  # edited by hand
    path.write_text(json.dumps(meta))
    with pytest.raises(ResultsError, match="final_test_error 1.0 is not the last test error of log.csv"):
        load_runs(fixture_results)


def test_the_readme_says_its_findings_from_the_finished_runs_or_says_they_are_open(fixture_results, tmp_path):
    from resnet.report import summary_markdown

    empty = summary_markdown(tmp_path / "none", tmp_path / "no-benchmarks").splitlines()
    assert [line.split(": ", 1)[1] for line in empty] == [
        "not measured yet, no study has finished two plain depths.",
        "not measured yet, no study has finished two ResNet depths.",
        "not measured yet, no run of the paper's protocol (its full schedule) has finished."]
    full = "the paper's schedule (fixture, fp32)"
    fake_run(fixture_results, 13.0, net="plain", depth=20, schedule="1/8")  # a short study: plain-56 trains better
    fake_run(fixture_results, 12.0, net="plain", depth=56, schedule="1/8")
    fake_run(fixture_results, 12.0, net="resnet", depth=20, schedule="1/8")  # not the paper's protocol: no gap
    lines = summary_markdown(fixture_results, tmp_path / "no-benchmarks").splitlines()
    assert lines[0] == (
        "- **The degradation problem** (deeper plain nets train worse): no at the 1/8 schedule (fixture, fp32), "
        "training error 11.55% for plain-20, 10.55% for plain-56, test error 13.55%, 12.55%; yes at "
        f"{full}, training error 7.55% for plain-20, 11.55% for plain-56, test error 9.55%, 13.55%.")
    assert lines[1] == (f"- **Deeper ResNets do better**: yes at {full}, test error 9.05% for ResNet-20, 7.75% "
                        "for ResNet-56.")
    assert lines[2] == (f"- **Distance to the paper** (final test error minus the paper's): at {full}: ResNet-20 "
                        "+0.30, ResNet-56 +0.78, plain-20 -0.15, plain-56 +0.35 points.")
    # fixture data is not the official data: the caveat, without a peer line (none measured on it)
    assert lines[3].startswith("- **The data**: these runs trained and were tested on fixture, not the official images")
    # three seeds of ResNet-56 in the fixture: their spread is measured, the other networks' is not
    resnet56 = f"ResNet-56 at {full}, 3 seeds, final test error 7.75 ± 0.20% (mean ± std; 7.55 to 7.95%)"
    assert lines[4] == (f"- **Seeds**: {resnet56}; every other network one seed: its spread between seeds is not "
                        "measured yet.")
    for net, depth in (("resnet", 20), ("plain", 20), ("plain", 56)):
        fake_run(fixture_results, 9.0, net=net, depth=depth, seed=1)
        fake_run(fixture_results, 9.0, net=net, depth=depth, seed=1, schedule="1/8")
    fake_run(fixture_results, 9.0, net="plain", depth=56, seed=2, schedule="1/8")
    again = summary_markdown(fixture_results, tmp_path / "no-benchmarks").splitlines()
    assert again[-1].startswith("- **Seeds**: means of 2 seeds or more per network: ResNet-20 at the 1/8 schedule")
    assert (f"; ResNet-20 at {full}, 2 seeds, final test error 9.30 ± 0.35% (mean ± std; 9.05 to 9.55%); {resnet56}; "
            in again[-1])
    assert again[-1].count("seeds, final test error") == 7  # 1/8: ResNet-20, plain-20, plain-56; full: 4 networks


def test_a_runs_history_stays_in_its_run_json_and_a_lost_checkpoint_is_reported(tmp_path):
    from resnet.report import results_markdown

    def report():
        return results_markdown(tmp_path, tmp_path / "assets", tmp_path / "no-benchmarks")

    restarted = [{"lost_iteration": 48_484, "restarted": "2026-11-26T18:30:19+0000"}]
    moved = fake_run(tmp_path, 11.0, net="resnet", depth=20)
    write_meta(read_meta(moved / "run.json") | {"reseeded": [{"iteration": 700, "from": "cuda", "to": "cpu"}],
                                                "restarted": restarted}, moved / "run.json")
    running = fake_run(tmp_path, 12.0, net="plain", depth=20)
    meta = read_meta(running / "run.json") | dict(status="running", iterations_done=3000, final_test_error=None)
    (running / "weights.pt").unlink()
    write_meta(meta | {"restarted": restarted}, running / "run.json")
    (running / "checkpoint.pt").write_bytes(b"")
    assert "- plain20-seed0: checkpoint at 3,000 of 64,000 iterations (logged up to 64,000)" in report()
    assert "restarted" not in report() and "cuda" not in report()
    (running / "checkpoint.pt").unlink()
    assert ("- plain20-seed0: its checkpoint at 3,000 of 64,000 iterations is missing: it restarts from the "
            "beginning when trained next; test error") in report()


def test_plot_draws_figure_7_of_the_longest_study_and_the_report_shows_it(tmp_path, capsys, full_size_source):
    from resnet.report import results_markdown

    import shutil

    # Figure 7 draws runs on all of CIFAR-10's images only: random ones in the official format, at its counts
    full_size = shutil.copytree(full_size_source, tmp_path / "cifar-10-batches-py")  # this test removes it
    base = TrainConfig(data=str(full_size))
    for net, depth in (("plain", 20), ("resnet", 20), ("resnet", 32)):  # ResNet-32 is not in Figure 7
        fake_run(tmp_path / "results", 10.0, config=dataclasses.replace(base, net=net, depth=depth))
    fake_run(tmp_path / "results", 12.0, config=dataclasses.replace(base, schedule="1/8", net="plain", depth=56))
    study = dataclasses.replace(base).study
    assert main(["plot", "--results", str(tmp_path / "results"), "--assets", str(tmp_path / "assets")]) == 0
    assert f"Figure 7 of {study} saved to" in capsys.readouterr().out  # the full schedule's, not the 1/8 one's
    assert sorted(p.name for p in (tmp_path / "assets").glob("figure7-*")) == [f"figure7-{study}.json",
                                                                                 f"figure7-{study}.png"]
    text = results_markdown(tmp_path / "results", tmp_path / "assets", tmp_path / "no-benchmarks")
    assert text.count("![Figure 7") == 1 and f"figure7-{study}.png" in text
    numbers_path = tmp_path / "assets" / f"figure7-{study}.json"  # the figure's numbers, beside it
    numbers = json.loads(numbers_path.read_text())
    assert [(n["network"], n["run"]) for n in numbers["networks"]] == [
        ("plain-20", f"{study}/plain20-seed0"), ("ResNet-20", f"{study}/resnet20-seed0")]
    assert all(len(n["std"]) == 19 for n in numbers["networks"]) and "10000 test images" in numbers["images"]
    findings = response_findings(numbers["networks"])
    assert len(findings) == 1 and findings[0] in text  # the finding checked in the README, from the saved numbers
    # drawn again from its saved numbers while they are of these weights: nothing evaluated, nothing rewritten, no data
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "assets").glob("figure7-*")}
    shutil.rmtree(full_size)
    assert main(["plot", "--results", str(tmp_path / "results"), "--assets", str(tmp_path / "assets")]) == 0
    assert f"Figure 7 of {study} saved to" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "assets").glob("figure7-*")} == stamps
    numbers["networks"][1]["weights_sha256"] = "0" * 64  # numbers of other weights than the run's
    numbers_path.write_text(json.dumps(numbers))
    text = results_markdown(tmp_path / "results", tmp_path / "assets", tmp_path / "no-benchmarks")
    assert findings[0] not in text and f"not of the weights now saved for {study}/resnet20-seed0" in text
    numbers_path.write_text("{")
    with pytest.raises(ValueError, match="malformed Figure 7 numbers"):
        results_markdown(tmp_path / "results", tmp_path / "assets", tmp_path / "no-benchmarks")
    numbers_path.unlink()
    assert "its numbers are not saved" in results_markdown(tmp_path / "results", tmp_path / "assets",
                                                           tmp_path / "no-benchmarks")
    assert main(["plot", "--results", str(tmp_path / "results"), "--assets", str(tmp_path / "a2"), "--no-figure7"]) == 0
    assert not list((tmp_path / "a2").glob("figure7-*"))


def test_a_tree_without_git_names_its_commit_from_the_environment(monkeypatch):
    from resnet.trainer import git_commit

    monkeypatch.setenv("RESNET_GIT_COMMIT", "abc123")
    assert git_commit() == "abc123"
    monkeypatch.delenv("RESNET_GIT_COMMIT")
    assert git_commit() != "abc123"


def test_plot_and_report_write_every_file_whole_so_a_full_disk_leaves_the_old_ones(fixture_results, tmp_path,
                                                                                   monkeypatch):
    """Every figure, README section and results page goes through the atomic writer: with the disk full, each
    command fails naming its file and leaves what was there byte for byte (a direct write would replace it)."""
    import errno
    from pathlib import Path

    from resnet.report import markers, update_reports

    assets, root = tmp_path / "assets", tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("".join(f"{markers(n)[0]}\n{markers(n)[1]}\n" for n in ("headline", "summary", "peers")))
    (root / "docs" / "results.md").write_text(f"{markers('results')[0]}\n{markers('results')[1]}\n")
    assert main(["plot", "--results", str(fixture_results), "--assets", str(assets), "--no-figure7"]) == 0
    update_reports(root, fixture_results, assets)
    fake_run(fixture_results, 12.0, net="plain", depth=32)  # new results: every file would change
    before = {p: p.read_bytes() for p in [*assets.iterdir(), root / "README.md", root / "docs" / "results.md"]}

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match=r"could not write .*figure6-fixture-full-fp32\.png \(No space left on device\)"):
        from resnet import load_runs, plot_studies

        plot_studies(load_runs(fixture_results), assets)
    with pytest.raises(OSError, match=r"could not write .*README\.md \(No space left on device\); the previous"):
        update_reports(root, fixture_results, assets)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in before} == before
    assert not [p for p in [*assets.iterdir(), *root.rglob("*")] if p.suffix == ".tmp"]


def test_the_readmes_python_example_runs_on_a_fresh_clone_but_for_the_line_that_trains_for_hours(capsys):
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    lines = code.splitlines()
    assert sum("resnet.train(" in line for line in lines) == 1
    exec("\n".join(line for line in lines if "resnet.train(" not in line), {})  # noqa: S102 - the README's own code
    out = capsys.readouterr()
    assert "ResNet-56" in out.out and "resnet56: the weights of" in out.err


def test_a_paired_difference_counts_the_images_only_one_network_gets_wrong():
    from resnet.compare import paired_difference

    d = paired_difference([0, 1, 2, 3], [2, 3], 10)  # a alone misses 0 and 1
    assert (d["only_a"], d["only_b"], d["difference"]) == (2, 0, 20.0)
    half = 1.96 * ((2 - 10 * 0.2 ** 2) / 9 / 10) ** 0.5  # the per-image differences' sample variance, over n
    assert (d["low"], d["high"]) == pytest.approx((100 * (0.2 - half), 100 * (0.2 + half)))
    assert d["p"] == pytest.approx(0.5)  # McNemar, exact: both discordant images against a: 2 * (1/2)^2
    swapped = paired_difference([2, 3], [0, 1, 2, 3], 10)
    assert (swapped["difference"], swapped["low"], swapped["p"]) == pytest.approx((-20.0, -d["high"], 0.5))
    assert paired_difference([], [], 10) == {"difference": 0.0, "low": 0.0, "high": 0.0, "only_a": 0, "only_b": 0,
                                             "p": 1.0}
    assert paired_difference(list(range(10)), [], 1000)["p"] == pytest.approx(2 / 2 ** 10)


def test_the_official_images_scores_join_the_table_and_each_resnet_of_the_peers_depths_meets_the_peer(
        fixture_results, tmp_path):
    from resnet.compare import OFFICIAL_COLUMN
    from resnet.report import headline_markdown, official_comparisons, official_errors, summary_markdown

    runs = {r.path.name: r for r in load_runs(fixture_results) if r.study == FIXTURE_STUDY}

    def scored(name, wrong, **kw):
        run = runs[name]
        return {"run": f"{run.study}/{name}", "weights_sha256": run.meta["weights_sha256"], "precision": "fp32",
                "error": len(wrong) / 10, "wrong": wrong} | kw

    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "official_images.json").write_text(json.dumps({
        "images": {"source": "png", "checksum": "0" * 64, "n": 1000, "what": "official CIFAR-10 test images 0–999, lossless"},
        "measured": {},
        "runs": [scored("resnet56-seed0", list(range(90))), scored("resnet56-seed1", list(range(45, 95))),
                 scored("resnet20-seed0", list(range(100)), weights_sha256="f" * 64)],  # retrained since it was scored
        "peers": [{"weights": "akamaster-resnet56.th", "net": "resnet", "depth": 56, "weights_sha256": "1" * 64,
                   "precision": "fp32", "error": 5.0, "wrong": list(range(40, 90))}]}))
    every = load_runs(fixture_results)
    table = error_table(every, official=official_errors(every, bench)).set_index("network")
    assert table.loc["ResNet-56", OFFICIAL_COLUMN] == "7.00 ± 2.83"  # the two seeds scored: 9.0 and 5.0
    assert table.loc["ResNet-20", OFFICIAL_COLUMN] == ""  # its weights are no longer the ones scored
    assert OFFICIAL_COLUMN not in error_table(every).columns
    of = "on official CIFAR-10 test images 0–999, lossless (n = 1,000): "
    peer = "the peer's ResNet-56 (akamaster-resnet56.th, trained on the official images) 5.0%"
    assert official_comparisons(every, bench) == [
        # 40 images only seed 0 gets wrong, none only the peer: +4 points, far outside chance
        f"{of}resnet56-seed0 (trained on fixture) 9.0%, {peer}: +4.0 points (95% interval +2.8 to +5.2, paired over "
        "the images; McNemar p = 1.8e-12), distinguishable (benchmarks/official_images.md)",
        # five images each way: no difference
        f"{of}resnet56-seed1 (trained on fixture) 5.0%, {peer}: +0.0 points (95% interval -0.6 to +0.6, paired over "
        "the images; McNemar p = 1), not distinguishable (benchmarks/official_images.md)"]
    assert official_comparisons(every, tmp_path / "none") == []
    summary = summary_markdown(fixture_results, bench)
    assert ("- **On official test images** (0–999, lossless, n = 1,000; scored, never trained on): resnet56-seed0 "
            "(trained on fixture) 9.0%, ") in summary and "McNemar p = 1), not distinguishable.\n" in summary
    assert "On official test images" not in summary_markdown(fixture_results, tmp_path / "none")
    assert f"The column *{OFFICIAL_COLUMN}*" in headline_markdown(fixture_results, "assets", bench)
    assert "The column" not in headline_markdown(fixture_results, "assets", tmp_path / "none")


def test_the_papers_claims_and_its_numbers_are_computed_once_as_tables(fixture_results):
    from resnet.compare import DEEPER_RESNETS, DEGRADATION, claims, paper_gaps

    runs = load_runs(fixture_results)
    checked = claims(runs).set_index(["claim", "error"])
    assert list(checked.index) == [(DEGRADATION, "test"), (DEGRADATION, "training"), (DEEPER_RESNETS, "test"),
                                   (DEEPER_RESNETS, "training")]
    training = checked.loc[(DEGRADATION, "training")]
    assert training.depths == (20, 56) and training.errors == pytest.approx((7.55, 11.55), abs=0.01)
    assert training.holds and training.seeds == 1
    resnets = checked.loc[(DEEPER_RESNETS, "test")]
    assert resnets.errors == pytest.approx((9.05, 7.75), abs=0.01) and resnets.holds  # ResNet-56: mean of 3 seeds
    assert resnets.seeds == 1  # the fewest behind one depth: ResNet-20's one
    gaps = paper_gaps(runs).set_index("network")
    assert list(gaps.index) == ["ResNet-20", "ResNet-56", "plain-20", "plain-56"]  # option B: not the paper's
    assert gaps.loc["ResNet-56", "seeds"] == 3 and gaps.loc["ResNet-56", "best"] == pytest.approx(7.0 + 30 * np.exp(-4))
    assert gaps.loc["ResNet-56", "difference"] == pytest.approx(gaps.loc["ResNet-56", "error"] - 6.97)
    short = [r for r in runs if r.config["net"] == "plain"]
    assert paper_gaps([]).empty and claims(short[:1]).empty  # one depth: no claim to check
