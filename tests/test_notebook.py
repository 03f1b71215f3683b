"""main.ipynb: its text twin is in sync, its full mode sweeps the paper's study, and over a finished study it
trains nothing and redraws the figure and tables.

The notebook's outputs are checked by nbval (see the Makefile); these tests cover what nbval cannot see.
"""
import dataclasses
import os
from pathlib import Path

import jupytext
import pytest

import resnet
from resnet.compare import paper_protocol

from .conftest import JPEG_ARCHIVE, fake_run

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK, TEXT = ROOT / "main.ipynb", ROOT / "main.py"


def cells(notebook):
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_notebook_is_paired_with_its_percent_script():
    notebook = jupytext.read(NOTEBOOK)
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert cells(jupytext.read(TEXT)) == cells(notebook), (
        "main.py and main.ipynb differ: run `make sync` (jupytext --sync main.ipynb) after editing either")


def code_cells() -> list[str]:
    return [cell.source for cell in jupytext.read(NOTEBOOK).cells if cell.cell_type == "code"]


def run_cells(sources: list[str]) -> dict:
    namespace: dict = {}
    for source in sources:
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    return namespace


def settings(monkeypatch, quick: bool, results: str | None = None, data: str | None = None, schedule: str | None = None,
             precision: str | None = None) -> dict:
    """The namespace left by the notebook's settings cell (its first code cell), run here."""
    for name, value in (("RESNET_QUICK", "1" if quick else None), ("RESNET_RESULTS", results), ("RESNET_DATA", data),
                        ("RESNET_SCHEDULE", schedule), ("RESNET_PRECISION", precision)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return run_cells(code_cells()[:1])


def test_full_mode_sweeps_the_papers_ten_networks_into_results(monkeypatch, capsys):
    ns = settings(monkeypatch, quick=False)
    assert ns["RESULTS"] == "results"
    configs = ns["configs"]
    assert sorted((c.net, c.depth) for c in configs) == sorted(
        (net, depth) for net in ("plain", "resnet") for depth in (20, 32, 44, 56, 110))
    paper = resnet.TrainConfig()
    for config in configs:
        # Only the network differs from the library's defaults, which are the paper's protocol; data "" is
        # RESNET_DATA when set, else the official download.
        assert config.data == ""
        assert dataclasses.replace(config, net=paper.net, depth=paper.depth, data=paper.data) == paper
        assert paper_protocol(dataclasses.asdict(config))
    assert "10 runs of 64000 iterations, batch 128, fp32, into results/official-full-fp32/" in capsys.readouterr().out


def test_a_short_bf16_study_is_offered_and_lands_in_its_own_folder(monkeypatch, capsys):
    ns = settings(monkeypatch, quick=False, data=str(JPEG_ARCHIVE), schedule="1/8", precision="bf16")
    assert {c.study for c in ns["configs"]} == {"cifar10-jpeg-1of8-bf16"}
    assert all(c.total_iterations == 8000 and c.lr_milestones == (4000, 6000) for c in ns["configs"])
    assert "10 runs of 8000 iterations, batch 128, bf16, into results/cifar10-jpeg-1of8-bf16/" in capsys.readouterr().out


def test_results_can_move(monkeypatch):
    ns = settings(monkeypatch, quick=False, results="elsewhere")
    assert ns["RESULTS"] == ns["SHOWN"] == "elsewhere"


def test_quick_mode_trains_into_a_temporary_folder_never_results(monkeypatch):
    ns = settings(monkeypatch, quick=True)
    try:
        assert Path(ns["RESULTS"]).resolve() != (ROOT / "results").resolve()
        assert ns["SHOWN"] == "results"
        assert all(c.device == "cpu" and c.iterations < 100 for c in ns["configs"])
    finally:
        os.rmdir(ns["RESULTS"])


def test_full_mode_over_a_finished_study_trains_nothing_and_redraws_figure6_and_the_tables(
        monkeypatch, tmp_path, capsys):
    # A complete study of fixture runs (made-up curves, random weights) with the paper's exact settings.
    study = tmp_path / "results"
    configs = settings(monkeypatch, quick=False, results=str(study), data=str(JPEG_ARCHIVE))["configs"]
    for i, config in enumerate(configs):
        fake_run(study, 6.0 + i / 2, config=config)
    stamps = {p: p.stat().st_mtime_ns for p in study.glob("*/*/*")}
    monkeypatch.chdir(tmp_path)  # full mode saves its figures to assets/

    cells = code_cells()
    figure7 = next(i for i, source in enumerate(cells) if "response_stds" in source)  # tested in test_results
    run_cells(cells[:figure7])

    assert {p: p.stat().st_mtime_ns for p in study.glob("*/*/*")} == stamps  # nothing trained or rewritten
    assert (tmp_path / "assets" / "figure6-cifar10-jpeg-full-fp32.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "nothing left to train" in out  # the cost estimate times nothing
    assert f"{study}/cifar10-jpeg-full-fp32/: plain110-seed0, plain20-seed0" in out
    assert out.count(": finished, 64000 iterations, data: fixture") == 10
    for label, paper in (("plain-56", "13.20~"), ("ResNet-110", "6.43")):
        assert any(label in line and paper in line for line in out.splitlines()), (label, out)
    assert "deeper" in out  # the comparison with the paper's claims


def test_a_fresh_official_data_study_never_collides_with_the_committed_runs(monkeypatch):
    # `make study` on a machine with a network: the default settings (official data, the paper's schedule, fp32)
    # against the committed results/ of this repository. Nothing committed is in its way, and nothing is reused.
    from resnet.runfolder import finished_meta

    ns = settings(monkeypatch, quick=False)
    committed = ROOT / "results"
    for config in ns["configs"]:
        assert config.study == "official-full-fp32"
        assert finished_meta(config, committed) is None  # no RunConflict, no committed run taken for this one
        assert not config.run_dir(committed).exists()
    committed_studies = {run.study for run in resnet.load_runs(committed, finished_only=False)}
    assert "official-full-fp32" not in committed_studies
