"""main.ipynb: its reviewable text twin is in sync, and its full-mode settings are the paper's study.

The notebook's outputs are checked by nbval (see the Makefile); these tests cover what nbval cannot see.
"""
import dataclasses
import os
from pathlib import Path

import jupytext
import pytest

import resnet
from resnet.results import paper_protocol

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK, TEXT = ROOT / "main.ipynb", ROOT / "main.py"


def cells(notebook):
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_notebook_is_paired_with_its_percent_script():
    notebook = jupytext.read(NOTEBOOK)
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert cells(jupytext.read(TEXT)) == cells(notebook), (
        "main.py and main.ipynb differ: run `make sync` (jupytext --sync main.ipynb) after editing either")


def settings(monkeypatch, quick: bool, results: str | None = None) -> dict:
    """The namespace left by the notebook's settings cell (its first code cell), run here."""
    if results is None:
        monkeypatch.delenv("RESNET_RESULTS", raising=False)
    else:
        monkeypatch.setenv("RESNET_RESULTS", results)
    if quick:
        monkeypatch.setenv("RESNET_QUICK", "1")
    else:
        monkeypatch.delenv("RESNET_QUICK", raising=False)
    monkeypatch.delenv("RESNET_DATA", raising=False)
    first = next(cell for cell in jupytext.read(NOTEBOOK).cells if cell.cell_type == "code")
    namespace: dict = {}
    exec(compile(first.source, str(NOTEBOOK), "exec"), namespace)
    return namespace


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
    assert "10 runs of 64000 iterations, batch 128" in capsys.readouterr().out


def test_results_can_move_for_a_study_on_other_data(monkeypatch, capsys):
    ns = settings(monkeypatch, quick=False, results="results-official")
    assert ns["RESULTS"] == ns["STUDY"] == "results-official"


def test_quick_mode_trains_into_a_temporary_folder_never_results(monkeypatch):
    ns = settings(monkeypatch, quick=True)
    try:
        assert Path(ns["RESULTS"]).resolve() != (ROOT / "results").resolve()
        assert ns["STUDY"] == "results"
        assert all(c.device == "cpu" and c.iterations < 100 for c in ns["configs"])
    finally:
        os.rmdir(ns["RESULTS"])
