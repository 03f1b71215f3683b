"""tools/cpu_campaign.py: the campaign's runs, in the issue's order, and its deadline arithmetic."""
import datetime as dt
import importlib.util

from .conftest import ROOT, JPEG_ARCHIVE

spec = importlib.util.spec_from_file_location("cpu_campaign", ROOT / "tools" / "cpu_campaign.py")
cpu_campaign = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_campaign)


def test_the_campaign_trains_the_full_20s_then_ten_one_eighth_networks_then_the_full_56s_in_bf16():
    configs = cpu_campaign.campaign(str(JPEG_ARCHIVE))
    assert [(c.study, c.name) for c in configs] == (
        [("cifar10-jpeg-full-bf16", f"{n}20-seed0") for n in ("resnet", "plain")]
        + [("cifar10-jpeg-1of8-bf16", f"{n}{d}-seed0") for d in (20, 32, 44, 56, 110) for n in ("resnet", "plain")]
        + [("cifar10-jpeg-full-bf16", f"{n}56-seed0") for n in ("resnet", "plain")])
    assert all(c.device == "cpu" and c.seed == 0 and c.batch_size == 128 for c in configs)


def test_the_deadline_is_the_next_such_time_of_day():
    assert cpu_campaign.seconds_until("18:25", dt.datetime(2026, 1, 1, 16, 25)) == 2 * 3600
    assert cpu_campaign.seconds_until("01:00", dt.datetime(2026, 1, 1, 23, 0)) == 2 * 3600  # tomorrow
