"""The benchmark scripts run end to end (smoke mode on the CPU); no timing is asserted."""
from benchmarks import speed

from .conftest import JPEG_ARCHIVE


def test_speed_benchmark_smoke(tmp_path, capsys):
    speed.main(["--smoke", "--device", "cpu", "--data", str(JPEG_ARCHIVE), "--out", str(tmp_path)])
    md = (tmp_path / "speed.md").read_text()
    assert "SMOKE MODE" in md and "| plain-8 | fp32 |" in md and "| resnet-8 | fp32 |" in md and "Sweep: 2 networks" in md
    header = (tmp_path / "speed.csv").read_text().splitlines()[0]
    assert header.startswith("network,precision,iterations/s,projected 64k s") and "device" in header
