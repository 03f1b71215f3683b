"""The committed results: every finished run's weights, re-evaluated on the CPU on its own data, give the test
error its run.json records; every run's files are valid; and the README's numbers are generated from the files.

The re-evaluations need the data the runs were trained on (the JPEG stand-in, see README's "Choosing the data"):
with other data, or none, they are skipped, naming the data they need (failed under RESNET_REQUIRE_DATA=1)."""
import pytest

from resnet import evaluate_run, load_cifar10, load_runs
from resnet.report import SECTION_FILES
from resnet.results import read_meta

from .conftest import ROOT, no_data

COMMITTED = ROOT / "results"
FINISHED = [run.path for run in load_runs(COMMITTED)]
# the checkpoints of runs in progress, committed so that a long run can go on from any clone
CHECKPOINTS = sorted(COMMITTED.rglob("checkpoint.pt"))
# The re-evaluation is in the run's own precision where this CPU has instructions for it, else in fp32: a bf16 run
# is re-evaluated in bf16 on a CPU with bf16 instructions (as fast there as fp32 is anywhere, where bf16 without
# them takes hours), in fp32 on any other. Its error is compared with the one recorded during training (bf16
# autocast, one thread), which differs by a few of the 10,000 images' predictions; kernels and summation orders,
# chosen by instruction set and thread count, could move it more. benchmarks/reeval_spread.md measured both: fp32
# under 1 and 2 threads and ONEDNN_MAX_CPU_ISA AVX2, AVX512_CORE and the default, and bf16 under 1 and 2 threads,
# gave the same count every time, at most 7 images (bf16) and 11 images (fp32) from the recorded error. The
# tolerance is 0.3 points, over twice the larger: far below what a wrong network, wrong weights or wrong data move
# (points, not images).
CPU_TOLERANCE = 0.3
# A GPU-trained run's weights (none is committed yet) meet other convolution algorithms on a CPU as well: 20 images
# more.
GPU_TOLERANCE = CPU_TOLERANCE + 0.2


def recheck_precision(meta: dict) -> str:
    """bf16 for a bf16 run on a CPU with bf16 instructions, else fp32 (see above)."""
    import torch

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if meta["config"]["precision"] == "bf16" and native else "fp32"


@pytest.fixture(scope="module")
def their_data(real_source):
    """The committed runs' data source (a path or 'official') and the checksum of its decoded images."""
    return real_source, load_cifar10(real_source).checksum


def needs(meta: dict, their_data) -> str:
    """The source to evaluate a run of ``meta`` on; the test is skipped when it is not the run's own data."""
    source, checksum = their_data
    if checksum != meta["data_checksum"]:
        no_data(f"{meta['name']} was trained on {meta['data_source']} (decoded images' sha256 "
                f"{meta['data_checksum'][:12]}…), not on {source}: point RESNET_TEST_DATA at it (for "
                "cifar10-jpeg.tar.gz, see README's 'Choosing the data')")
    return source


def test_every_committed_run_folder_is_valid():
    # load_runs validates run.json against log.csv and the weights' presence; unfinished runs too
    runs = load_runs(COMMITTED, finished_only=False)
    assert len(runs) == len(list(COMMITTED.rglob("run.json")))


@pytest.mark.parametrize("path", CHECKPOINTS, ids=[f"{p.parent.parent.name}/{p.parent.name}" for p in CHECKPOINTS])
def test_a_committed_checkpoint_is_whole_and_where_its_run_json_says_its_run_is(path):
    from resnet.trainer import read_checkpoint

    meta, state = read_meta(path.parent / "run.json"), read_checkpoint(path)  # read_checkpoint checks its sha256
    assert meta["status"] == "running", f"{path}: a checkpoint beside a {meta['status']} run"
    assert (state["iteration"], state["config"], state["data_checksum"], state.get("restarted", [])) == (
        meta["iterations_done"], meta["config"], meta["data_checksum"], meta.get("restarted", [])), (
        f"{path} is not the checkpoint its run.json describes")


@pytest.mark.parametrize("run_dir", FINISHED, ids=[f"{p.parent.name}/{p.name}" for p in FINISHED])
def test_committed_weights_reproduce_the_recorded_test_error_on_the_cpu(run_dir, their_data):
    meta = read_meta(run_dir / "run.json")
    report = evaluate_run(run_dir, data=needs(meta, their_data), device="cpu", precision=recheck_precision(meta))
    assert report["same_data"]
    tolerance = CPU_TOLERANCE if meta["device_name"].startswith("cpu") else GPU_TOLERANCE
    assert abs(report["test_error"] - meta["final_test_error"]) <= tolerance, report


def test_every_committed_finished_run_and_the_peers_networks_are_scored_on_the_official_test_images():
    from resnet.report import official_images

    measured = official_images(ROOT / "benchmarks")
    assert measured is not None, "benchmarks/official_images.json is missing: run `python -m benchmarks.official_images`"
    scored = {e["run"]: e["weights_sha256"] for e in measured["runs"]}
    for run_dir in FINISHED:
        key = f"{run_dir.parent.name}/{run_dir.name}"
        assert scored.get(key) == read_meta(run_dir / "run.json")["weights_sha256"], (
            f"{key} is not scored on the official test images of its weights: run `python -m benchmarks.official_images`")
    assert sorted(p["weights"] for p in measured["peers"]) == ["akamaster-resnet20.th", "akamaster-resnet56.th"]
    assert measured["images"]["n"] == 1000 and all(
        len(e["wrong"]) == round(e["error"] * 10) for e in measured["runs"] + measured["peers"])


def _official_scores() -> dict:
    from resnet.report import official_images

    measured = official_images(ROOT / "benchmarks") or {"runs": [], "peers": []}
    return {e.get("run") or e["weights"]: e for e in measured["runs"] + measured["peers"]}


def _same_verdicts(saved: dict, again: dict, n: int):
    """The same weights on the same images on this CPU: the error within the re-check's tolerance, and no more than
    twice as many images as that tolerance allows judged otherwise."""
    assert abs(again["error"] - saved["error"]) <= CPU_TOLERANCE, (saved["error"], again["error"])
    assert len(set(saved["wrong"]) ^ set(again["wrong"])) <= 2 * round(CPU_TOLERANCE * n / 100)


@pytest.mark.parametrize("run_dir", FINISHED, ids=[f"{p.parent.name}/{p.name}" for p in FINISHED])
def test_committed_official_images_scores_are_those_of_the_committed_weights_on_the_cpu(
        run_dir, their_data, official_test_images):
    from benchmarks.official_images import score_run
    from resnet.report import official_images

    x, y, images = official_test_images
    saved = _official_scores()[f"{run_dir.parent.name}/{run_dir.name}"]
    meta = read_meta(run_dir / "run.json")
    needs(meta, their_data)  # the run's own training images: their per-pixel mean is subtracted
    assert images["checksum"] == official_images(ROOT / "benchmarks")["images"]["checksum"], (
        "not the official test images the committed scores were measured on")
    _same_verdicts(saved, score_run(run_dir, x, y, precision=recheck_precision(meta)), images["n"])


@pytest.mark.parametrize("name", ["akamaster-resnet20.th", "akamaster-resnet56.th"])
def test_the_peers_official_images_scores_are_those_of_its_weights_on_the_cpu(name, peers, official_test_images):
    from benchmarks.official_images import score_peer

    x, y, images = official_test_images
    saved = _official_scores()[name]
    again = score_peer(peers / name, x, y)
    assert again["weights_sha256"] == saved["weights_sha256"]
    _same_verdicts(saved, again, images["n"])


def test_committed_figure7_numbers_are_those_of_the_committed_weights_on_the_cpu(their_data):
    import numpy as np

    from resnet import figure7_runs
    from resnet.figures import figure7_data
    from resnet.figures import read_figure7_numbers

    study, paths = figure7_runs(load_runs(COMMITTED))
    if not paths:
        pytest.skip("no committed run of Figure 7's networks")
    numbers = read_figure7_numbers(ROOT / "assets" / f"figure7-{study}.json")
    assert [n["run"] for n in numbers["networks"]] == [f"{p.parent.name}/{p.name}" for p in paths], (
        "Figure 7 is not of the networks the committed runs give it: run `python -m resnet plot`")
    source = needs(read_meta(paths[0] / "run.json"), their_data)
    again = figure7_data(paths, data=source, device="cpu")
    assert again["images"] == numbers["images"]
    for saved, measured in zip(numbers["networks"], again["networks"]):
        assert saved["weights_sha256"] == measured["weights_sha256"]
        # the same weights and images on the same kind of CPU: only the thread count may change a summation order
        np.testing.assert_allclose(saved["std"], measured["std"], rtol=1e-5, err_msg=saved["network"])


@pytest.mark.parametrize("name", list(SECTION_FILES))
def test_the_readme_and_results_page_numbers_are_generated_from_the_committed_runs_and_measurements(name):
    from resnet.report import markers, sections

    text = (ROOT / SECTION_FILES[name]).read_text()
    start, end = markers(name)
    section = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert section == sections(COMMITTED, "assets", ROOT / "benchmarks")[name].strip(), (
        f"{SECTION_FILES[name]}'s {name} section is stale: run `python -m resnet report`")
