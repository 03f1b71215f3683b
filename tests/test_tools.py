"""tools/: the CPU campaign's and the GPU rounds' runs, in their issues' order, and the deadline arithmetic."""
import datetime as dt
import importlib.util

from .conftest import ROOT, JPEG_ARCHIVE



def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cpu_campaign, gpu_round = _tool("cpu_campaign"), _tool("gpu_round")


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


def test_a_gpu_round_trains_the_ten_with_plain_110_last_then_four_more_resnet_110_seeds():
    configs = gpu_round.study_runs(str(JPEG_ARCHIVE))
    names = [c.name for c in configs]
    assert names[:9] == [f"{n}{d}-seed0" for d in (20, 32, 44, 56, 110) for n in ("resnet", "plain")][:9]
    assert names[9] == "plain110-seed0" and names[10:] == [f"resnet110-seed{s}" for s in (1, 2, 3, 4)]
    assert {c.study for c in configs} == {"cifar10-jpeg-full-bf16"}  # the CPU campaign's study: side by side
    assert all(c.device == "cuda" and not c.cuda_graph for c in configs)


def test_a_gpu_round_imports_what_it_carries_trains_and_exports_in_parts(tmp_path, monkeypatch, small_data):
    import dataclasses

    from resnet import train
    from resnet.transfer import export_study

    from .conftest import tiny_config

    done = tiny_config(net="plain")
    train(done, tmp_path / "earlier", data=small_data, progress=False)
    export_study(done.run_dir(tmp_path / "earlier").parent, tmp_path / "carry" / f"{done.study}.tar")
    other = dataclasses.replace(done, seed=5)  # another tool's archive carried beside it: not imported
    train(other, tmp_path / "other", data=small_data, progress=False)
    export_study(other.run_dir(tmp_path / "other").parent, tmp_path / "carry" / "graph-accuracy-eager.tar")
    todo = [done, tiny_config()]
    monkeypatch.setattr(gpu_round, "study_runs", lambda data, cuda_graph: [dataclasses.replace(c, cuda_graph=cuda_graph) for c in todo])
    out = tmp_path / "out"
    assert gpu_round.main(["--data", str(JPEG_ARCHIVE), "--out", str(out), "--results", str(tmp_path / "r"),
                           "--carry", str(tmp_path / "carry"), "--minutes", "5", "--parallel", "1", "--part-mb", "0.2"]) == 0
    parts = sorted(out.iterdir())
    assert len(parts) > 1 and parts[0].name == f"{done.study}.tar.part000"
    from resnet.transfer import import_study

    assert import_study(parts[0], tmp_path / "home") == {done.name: "added", todo[1].name: "added"}
    assert not other.run_dir(tmp_path / "r").exists()


def test_a_tree_without_git_names_its_commit_from_the_environment(monkeypatch):
    from resnet.provenance import git_commit

    monkeypatch.setenv("RESNET_GIT_COMMIT", "abc123")
    assert git_commit() == "abc123"
    monkeypatch.delenv("RESNET_GIT_COMMIT")
    assert git_commit() != "abc123"
