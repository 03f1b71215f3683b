"""main.ipynb: its text twin is in sync, it takes its settings from resnet.study_from_environment (tested here
in every mode, the notebook having no branches of its own), and over a finished study its calls train nothing
and redraw the figure and tables.

The notebook's stored outputs are its report (RESNET_TRAIN=0), checked by nbval (see the Makefile); these tests
cover what nbval cannot, the quick mode's tiny training included.
"""
import dataclasses
import os
from pathlib import Path

import jupytext
import resnet
from resnet.config import paper_protocol

from .conftest import SMALL_SOURCE, fake_run

JPEG = "/data/cifar10-jpeg.tar.gz"  # a source by name only: these studies are described, not loaded

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK, TEXT = ROOT / "main.ipynb", ROOT / "main.py"


def cells(notebook):
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_notebook_is_paired_with_its_percent_script():
    notebook = jupytext.read(NOTEBOOK)
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert cells(jupytext.read(TEXT)) == cells(notebook), (
        "main.py and main.ipynb differ: run `make sync` (jupytext --sync main.ipynb) after editing either")


def test_the_notebook_holds_no_mode_branches_and_reads_its_settings_from_the_library():
    import ast

    code = "\n".join(cell.source for cell in jupytext.read(NOTEBOOK).cells if cell.cell_type == "code")
    tree = ast.parse(code)
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.If) and "quick" in ast.unparse(node.test)]
    assert "os.environ" not in ast.unparse(tree) and "study_from_environment()" in code


def study(**env):
    return resnet.study_from_environment({k: v for k, v in env.items() if v is not None})


def test_full_mode_sweeps_the_papers_ten_networks_into_results():
    s = study()
    assert (s.results, s.shown, s.quick, s.assets, s.parallel) == ("results", "results", False, "assets", "auto")
    # a depth's pair at a time, smallest first: a study cut short compares plain and residual at each depth it has
    assert [(c.net, c.depth) for c in s.configs] == [
        (net, depth) for depth in (20, 32, 44, 56, 110) for net in ("plain", "resnet")]
    paper = resnet.TrainConfig()
    for config in s.configs:
        # Only the network differs from the library's defaults, which are the paper's protocol; without
        # RESNET_DATA, the official download.
        assert config.data == "official" and config.device == "auto"
        assert dataclasses.replace(config, net=paper.net, depth=paper.depth, data=paper.data, device=paper.device) == paper
        assert paper_protocol(dataclasses.asdict(config))
    assert s.describe() == "10 runs of 64000 iterations, batch 128, fp32, into results/official-full-fp32/"
    assert s.figure7_path("official-full-fp32") == "assets/figure7-official-full-fp32.png"


def test_a_short_bf16_study_is_offered_and_lands_in_its_own_folder():
    s = study(RESNET_DATA=JPEG, RESNET_SCHEDULE="1/8", RESNET_PRECISION="bf16", RESNET_PARALLEL="4")
    assert {c.study for c in s.configs} == {"cifar10-jpeg-1of8-bf16"} and s.parallel == 4
    assert all(c.total_iterations == 8000 and c.lr_milestones == (4000, 6000) for c in s.configs)
    assert s.describe() == "10 runs of 8000 iterations, batch 128, bf16, into results/cifar10-jpeg-1of8-bf16/"


def test_results_can_move():
    s = study(RESNET_RESULTS="elsewhere")
    assert s.results == s.shown == "elsewhere"


def test_quick_mode_trains_into_a_scratch_folder_emptied_each_time_and_never_writes_results_or_assets(
        tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_CACHE", str(tmp_path / "cache"))
    s = study(RESNET_QUICK="1", RESNET_DATA=JPEG)
    assert Path(s.results) == tmp_path / "cache" / "quick-results" and s.shown == "results"
    assert s.assets is None and s.figure7_path("cifar10-jpeg-full-bf16") == "assets/figure7-cifar10-jpeg-full-bf16.png"
    assert all(c.device == "cpu" and c.iterations < 100 and c.train_subset == 1000 for c in s.configs)
    assert s.describe() == f"2 runs of 30 iterations, batch 32, fp32, into {s.results}/, emptied first (quick mode)"
    (Path(s.results) / "left-over").mkdir()
    assert study(RESNET_QUICK="1", RESNET_DATA=JPEG).results == s.results and not any(Path(s.results).iterdir())


def test_over_a_finished_study_the_notebooks_calls_train_nothing_and_redraw_figure6_and_the_tables(tmp_path):
    # A complete study of fixture runs (made-up curves, random weights) with the paper's exact settings.
    s = study(RESNET_RESULTS=str(tmp_path / "results"), RESNET_DATA=JPEG)
    for i, config in enumerate(s.configs):
        fake_run(s.results, 6.0 + i / 2, config=config)
    stamps = {p: p.stat().st_mtime_ns for p in Path(s.results).glob("*/*/*")}
    assert resnet.format_cost(resnet.estimate_cost(s.configs, s.results)) == "nothing left to train"
    metas = resnet.sweep(s.configs, s.results, parallel=s.parallel, progress=False)
    assert [m["status"] for m in metas] == ["finished"] * 10
    assert {p: p.stat().st_mtime_ns for p in Path(s.results).glob("*/*/*")} == stamps  # nothing trained or rewritten
    runs = resnet.load_runs(s.shown)
    resnet.plot_studies(runs, tmp_path / "assets")
    assert (tmp_path / "assets" / "figure6-cifar10-jpeg-full-fp32.png").stat().st_size > 0
    table = resnet.format_table(resnet.error_table(runs, peers=True))
    for label, paper in (("plain-56", "13.20~"), ("ResNet-110", "6.43")):
        assert any(label in line and paper in line for line in table.splitlines()), (label, table)
    assert any("deeper" in line for line in resnet.findings(runs))  # the comparison with the paper's claims


def test_a_fresh_official_data_study_never_collides_with_the_committed_runs():
    # `make study` on a machine with a network: the default settings (official data, the paper's schedule, fp32)
    # against the committed results/ of this repository. Nothing committed is in its way, and nothing is reused.
    from resnet.results import finished_meta

    committed = ROOT / "results"
    for config in study().configs:
        assert config.study == "official-full-fp32"
        assert finished_meta(config, committed) is None  # no RunConflict, no committed run taken for this one
        assert not config.run_dir(committed).exists()
    committed_studies = {run.study for run in resnet.load_runs(committed, finished_only=False)}
    assert "official-full-fp32" not in committed_studies


def test_the_report_trains_nothing_and_saves_no_figure_whatever_else_is_set():
    s = study(RESNET_TRAIN="0", RESNET_QUICK="1", RESNET_DATA=JPEG)
    assert s.to_train == () and not s.quick and s.assets is None and s.shown == s.results == "results"
    assert s.describe() == "the report (RESNET_TRAIN=0): nothing is trained; every study in results/ is drawn"
    assert study().to_train == study().configs  # the study trains what is missing
    import pytest

    with pytest.raises(ValueError, match="RESNET_TRAIN must be 0 .* or 1, not 'no'"):
        study(RESNET_TRAIN="no")


def test_the_notebook_as_make_study_runs_it_streams_its_cost_and_progress_live_and_draws_the_committed_studies(
        tmp_path):
    """The quick mode, executed as `make study` executes the notebook (papermill, output streamed): the cost
    estimate reaches the terminal while the runs are still to train, then a progress bar per run and each result."""
    import subprocess
    import sys

    env = {**os.environ, "RESNET_QUICK": "1", "RESNET_DATA": str(SMALL_SOURCE), "MPLBACKEND": "Agg",
           "RESNET_CACHE": str(tmp_path / "cache"), "RESNET_PROGRESS": "text"}
    env.pop("RESNET_TRAIN", None)
    quick = tmp_path / "cache" / "quick-results"
    stamps = {p: p.stat().st_mtime_ns for p in (ROOT / "assets").iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "papermill", str(ROOT / "main.ipynb"), str(tmp_path / "out.ipynb"),
                             "--no-progress-bar", "--stdout-file", "/dev/stdout", "--stderr-file", "/dev/stdout"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, finished_when_cost_shown = [], None
    for line in proc.stdout:
        lines.append(line)
        if "iterations left" in line:  # the cost table's header
            finished_when_cost_shown = len(list(quick.glob("*/*/weights.pt")))
    assert proc.wait(timeout=900) == 0, "".join(lines)[-3000:]
    out = "".join(lines)
    assert finished_when_cost_shown == 0, out[-3000:]  # shown live: no run had trained yet
    assert f"2 runs of 30 iterations, batch 32, fp32, into {quick}/, emptied first (quick mode)" in out
    assert "plain8-seed0: 100%" in out and "resnet8-seed0: 100%" in out  # a progress bar per run
    assert "plain8-seed0: finished at iteration 30, final test error" in out  # each result as it ends
    assert "plain8-seed0: finished, 30 iterations, data: cifar10-small.tar" in out
    assert "results/cifar10-jpeg-full-bf16/:" in out  # the committed studies are drawn too
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "assets").iterdir()} == stamps  # and their figures not rewritten


def test_make_study_checks_its_data_first_and_says_in_one_line_what_is_wrong(tmp_path):
    import subprocess
    import sys

    from .conftest import ROOT

    def check(**env):
        base = {k: v for k, v in os.environ.items() if k != "RESNET_TRAIN"}  # make test runs under RESNET_TRAIN=0
        out = subprocess.run([sys.executable, "-m", "resnet", "check-study"], capture_output=True, text=True,
                             cwd=ROOT, env={**base, "RESNET_RESULTS": str(tmp_path / "results"), **env})
        return out.returncode, out.stdout, out.stderr

    rc, _, err = check(RESNET_DATA=str(tmp_path / "no-such.tar.gz"))
    assert (rc, err) == (1, f"error: dataset not found: {tmp_path / 'no-such.tar.gz'}\n")  # alone, not in a traceback
    rc, out, _ = check(RESNET_DATA=str(SMALL_SOURCE))
    assert rc == 0 and out == (f"10 of 10 runs left to train (10 runs of 64000 iterations, batch 128, fp32, into "
                               f"{tmp_path / 'results'}/cifar10-small-full-fp32/); data cifar10-small.tar: 1,000 "
                               "training and 500 test images\n")
    assert check(RESNET_TRAIN="0", RESNET_DATA=str(tmp_path / "no-such.tar.gz"))[:2] == (0, (
        f"the report (RESNET_TRAIN=0): nothing is trained; every study in {tmp_path / 'results'}/ is drawn: nothing "
        "left to train\n"))  # nothing to train: no data needed
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.index("-m resnet check-study") < makefile.index("papermill main.ipynb")  # make study checks first
