"""The benchmark scripts run end to end (smoke mode on the CPU); no timing is asserted."""
from benchmarks import speed

from .conftest import JPEG_ARCHIVE


def test_speed_benchmark_smoke(tmp_path, capsys):
    speed.main(["--smoke", "--device", "cpu", "--data", str(JPEG_ARCHIVE), "--out", str(tmp_path)])
    md = (tmp_path / "speed.md").read_text()
    assert "SMOKE MODE" in md and "| plain-8 | fp32 |" in md and "| resnet-8 | fp32 |" in md and "Sweep: 2 networks" in md
    header = (tmp_path / "speed.csv").read_text().splitlines()[0]
    assert header.startswith("network,precision,iterations/s,projected 64k s") and "device" in header


def test_study_cost_benchmark_smoke(tmp_path):
    from benchmarks import study_cost

    out = tmp_path / "study_cost_cpu_fp32.md"
    study_cost.main(["--depths", "8", "--iterations", "1", "--device", "cpu", "--precision", "fp32",
                     "--data", str(JPEG_ARCHIVE), "--out", str(out)])
    text = out.read_text()
    assert "| resnet-8 |" in text and "| plain-8 |" in text and "The 2 networks" in text and "hours at 1/8 (8k)" in text
    from resnet.report import cost_markdown

    table = cost_markdown(tmp_path)  # the README's cost table, from the JSON summary beside
    assert "| cpu (" in table and "| fp32 | 2 |" in table and "[details](" in table
