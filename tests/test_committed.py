"""The committed results: every finished run's weights, re-evaluated on the CPU on its own data, give the test
error its run.json records; every run's files are valid; and the README's numbers are generated from the files."""
import pytest

from resnet import evaluate_run, load_runs
from resnet.results import read_meta

from .conftest import JPEG_ARCHIVE, ROOT

COMMITTED = ROOT / "results"
FINISHED = [run.path for run in load_runs(COMMITTED)]
# the checkpoints of runs in progress, committed so that a long run survives a new machine (tools/campaign_end.sh)
CHECKPOINTS = sorted(COMMITTED.rglob("checkpoint.pt"))
# A CPU-trained run is re-evaluated by the same kernels in the same precision: the error must match exactly.
# A GPU-trained run's weights evaluated on a CPU may flip a few of the 10,000 test images' predictions (other
# convolution algorithms, other summation order); 0.2 points is 20 images.
GPU_TOLERANCE = 0.2


def test_every_committed_run_folder_is_valid():
    # load_runs validates run.json against log.csv and the weights' presence; unfinished runs too
    runs = load_runs(COMMITTED, finished_only=False)
    assert len(runs) == len(list(COMMITTED.rglob("run.json")))


@pytest.mark.parametrize("path", CHECKPOINTS, ids=[f"{p.parent.parent.name}/{p.parent.name}" for p in CHECKPOINTS])
def test_a_committed_checkpoint_is_whole_and_where_its_run_json_says_its_run_is(path):
    from resnet.checkpoint import read_state

    meta, state = read_meta(path.parent / "run.json"), read_state(path)  # read_state checks its sha256
    assert meta["status"] == "running", f"{path}: a checkpoint beside a {meta['status']} run"
    assert (state["iteration"], state["config"], state["data_checksum"], state.get("restarted", [])) == (
        meta["iterations_done"], meta["config"], meta["data_checksum"], meta.get("restarted", [])), (
        f"{path} is not the checkpoint its run.json describes")


@pytest.mark.parametrize("run_dir", FINISHED, ids=[f"{p.parent.name}/{p.name}" for p in FINISHED])
def test_committed_weights_reproduce_the_recorded_test_error_on_the_cpu(run_dir):
    meta = read_meta(run_dir / "run.json")
    report = evaluate_run(run_dir, data=str(JPEG_ARCHIVE), device="cpu")
    assert report["same_data"], (
        f"{run_dir} was trained on {meta['data_source']} ({meta['data_checksum'][:12]}…), but the data here is "
        f"{report['data_source']} ({report['data_checksum'][:12]}…): point RESNET_TEST_DATA at the run's source")
    tolerance = 0.0 if meta["device_name"].startswith("cpu") else GPU_TOLERANCE
    assert abs(report["test_error"] - meta["final_test_error"]) <= tolerance, report


def test_committed_figure7_numbers_are_those_of_the_committed_weights_on_the_cpu():
    import numpy as np

    from resnet import figure7_data, figure7_runs
    from resnet.figures import read_figure7_numbers

    study, paths = figure7_runs(load_runs(COMMITTED))
    if not paths:
        pytest.skip("no committed run of Figure 7's networks")
    numbers = read_figure7_numbers(ROOT / "assets" / f"figure7-{study}.json")
    assert [n["run"] for n in numbers["networks"]] == [f"{p.parent.name}/{p.name}" for p in paths], (
        "Figure 7 is not of the networks the committed runs give it: run `python -m resnet plot`")
    again = figure7_data(paths, data=str(JPEG_ARCHIVE), device="cpu")
    assert again["images"] == numbers["images"]
    for saved, measured in zip(numbers["networks"], again["networks"]):
        assert saved["weights_sha256"] == measured["weights_sha256"]
        # the same weights and images on the same kind of CPU: only the thread count may change a summation order
        np.testing.assert_allclose(saved["std"], measured["std"], rtol=1e-5, err_msg=saved["network"])


@pytest.mark.parametrize("name", ["summary", "results", "peers"])
def test_the_readmes_numbers_are_generated_from_the_committed_runs_and_measurements(name):
    from resnet.report import markers, sections

    readme = (ROOT / "README.md").read_text()
    start, end = markers(name)
    section = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert section == sections(COMMITTED, "assets", ROOT / "benchmarks")[name].strip(), (
        f"README.md's {name} section is stale: run `python -m resnet report`")
