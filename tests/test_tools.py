"""tools/: the CPU campaign's and the GPU rounds' runs, in their issues' order, and the deadline arithmetic."""
import datetime as dt
import importlib.util
import json

import pytest

from .conftest import ROOT, JPEG_ARCHIVE



def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cpu_campaign, gpu_round = _tool("cpu_campaign"), _tool("gpu_round")


def test_the_campaign_trains_two_at_once_after_finishing_alone_a_run_begun_with_other_threads(
        tmp_path, monkeypatch, capsys, small_data):
    import torch

    from resnet import train
    from resnet.results import read_meta

    from .conftest import tiny_config

    configs = [tiny_config(depth=8, net=n, seed=s, iterations=20, milestones=(10, 15)) for n, s in
               (("resnet", 0), ("plain", 0), ("resnet", 1))]
    own = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the first run began on both cores, the third on one (as two at once train)
        train(configs[0], tmp_path, data=small_data, stop_at=10, progress=False)
        torch.set_num_threads(1)
        train(configs[2], tmp_path, data=small_data, stop_at=10, progress=False)
        torch.set_num_threads(2)
        monkeypatch.setattr(cpu_campaign, "campaign", lambda data, results: configs)
        assert cpu_campaign.main(["--until", "23:59", "--results", str(tmp_path), "--parallel", "2"]) == 0
        assert torch.get_num_threads() == 2  # given back after the run alone
    finally:
        torch.set_num_threads(own)
    metas = [read_meta(c.run_dir(tmp_path) / "run.json") for c in configs]
    assert [m["status"] for m in metas] == ["finished"] * 3
    assert [m["cpu_threads"] for m in metas] == [2, 1, 1]
    out = capsys.readouterr().out
    assert "2 at once, 1 thread(s) each" in out and out.count("resumes alone") == 1
    assert "resnet8-seed0 (1) resumes alone with the 2 thread(s) it started with" in out
    # a run stopped before its first checkpoint has nothing to keep consistent: it starts as two at once do
    from resnet.results import write_meta

    write_meta(metas[0] | {"status": "running", "iterations_done": 0}, configs[0].run_dir(tmp_path) / "run.json")
    assert cpu_campaign.threads_in_progress(configs[0], tmp_path) is None
    write_meta(metas[0] | {"status": "running", "iterations_done": 10}, configs[0].run_dir(tmp_path) / "run.json")
    assert cpu_campaign.threads_in_progress(configs[0], tmp_path) == 2


def test_the_campaign_trains_the_full_20s_then_ten_one_eighth_networks_then_the_full_56s_in_bf16():
    configs = cpu_campaign.campaign(str(JPEG_ARCHIVE))
    assert [(c.study, c.name) for c in configs] == (
        [("cifar10-jpeg-full-bf16", f"{n}20-seed0") for n in ("resnet", "plain")]
        + [("cifar10-jpeg-1of8-bf16", f"{n}{d}-seed0") for d in (20, 32, 44, 56, 110) for n in ("resnet", "plain")]
        + [("cifar10-jpeg-full-bf16", f"{n}56-seed0") for n in ("resnet", "plain")])
    assert all(c.device == "cpu" and c.seed == 0 and c.batch_size == 128 for c in configs)


def test_the_campaign_then_trains_on_the_paper_schedule_runs_a_gpu_session_left_unfinished(tmp_path):
    from resnet import TrainConfig
    from resnet.results import read_meta, write_meta

    from .conftest import fake_run

    steps = cpu_campaign.campaign(str(JPEG_ARCHIVE), tmp_path)
    assert len(steps) == 14
    gpu = TrainConfig(data=str(JPEG_ARCHIVE), precision="bf16", device="cuda", cuda_graph=True)
    for net, depth, seed in (("resnet", 110, 2), ("plain", 32, 0), ("resnet", 32, 0), ("plain", 44, 0)):
        run_dir = fake_run(tmp_path, 10.0, config=TrainConfig(**{**gpu.to_dict(), "net": net, "depth": depth,
                                                                 "seed": seed}))
        (run_dir / "checkpoint.pt").write_bytes(b"")
        if (net, depth) != ("plain", 44):  # finished (a checkpoint left over): nothing to train
            write_meta(read_meta(run_dir / "run.json") | {"status": "running", "iterations_done": 100},
                       run_dir / "run.json")
    (tmp_path / "cifar10-jpeg-full-bf16" / "resnet110-seed2" / "checkpoint.pt").unlink()  # nothing to resume from
    configs = cpu_campaign.campaign(str(JPEG_ARCHIVE), tmp_path)
    assert configs[:14] == steps
    assert [(c.study, c.name) for c in configs[14:]] == [("cifar10-jpeg-full-bf16", f"{n}32-seed0")
                                                         for n in ("resnet", "plain")]
    assert all(c.device == "cpu" and c.precision == "bf16" for c in configs[14:])


def test_the_deadline_is_the_next_such_time_of_day():
    assert cpu_campaign.seconds_until("18:25", dt.datetime(2026, 1, 1, 16, 25)) == 2 * 3600
    assert cpu_campaign.seconds_until("01:00", dt.datetime(2026, 1, 1, 23, 0)) == 2 * 3600  # tomorrow


def test_a_gpu_round_trains_the_ten_at_one_eighth_then_the_paper_s_ten_with_plain_110_last_then_four_more_seeds():
    configs = gpu_round.study_runs(str(JPEG_ARCHIVE))
    ten = [f"{n}{d}-seed0" for d in (20, 32, 44, 56, 110) for n in ("resnet", "plain")]
    ten = ten[:9] + ten[10:] + ten[9:10]  # plain-110 last
    assert [(c.study, c.name) for c in configs] == (
        [("cifar10-jpeg-1of8-bf16", n) for n in ten] + [("cifar10-jpeg-full-bf16", n) for n in ten]
        + [("cifar10-jpeg-full-bf16", f"resnet110-seed{s}") for s in (1, 2, 3, 4)])  # the CPU campaign's studies
    assert ten[-1] == "plain110-seed0"
    assert all(c.device == "cuda" and not c.cuda_graph and c.precision == "bf16" for c in configs)


def test_a_gpu_round_plans_what_the_transfer_limits_allow_runs_carried_in_first(tmp_path):
    from .conftest import fake_run

    configs = gpu_round.study_runs(str(JPEG_ARCHIVE))
    fake_run(tmp_path, 12.0, config=configs[0])  # ResNet-20 at 1/8 finished at home: not trained again
    names = lambda todo: [f"{c.study.split('-')[2]}/{c.name}" for c in todo]  # noqa: E731
    todo = gpu_round.plan(configs, tmp_path, set(), carry_mb=30, return_mb=60)
    assert names(todo)[:9] == [f"1of8/{c.name}" for c in configs[1:10]]  # the 1/8 study whole: its weights are small
    full = [c for c in todo if c.schedule == "1"]
    assert sum(gpu_round.returned_mb(c, False) for c in full) <= 30
    assert sum(gpu_round.returned_mb(c, finished=c.schedule != "1") for c in todo) <= 60
    assert names(full) == ["full/resnet20-seed0", "full/plain20-seed0", "full/resnet32-seed0", "full/plain32-seed0",
                           "full/resnet44-seed0"]  # then 60 MB is reached
    # a ResNet-110 carried in trains on, whatever it costs; the new runs fit around it
    todo = gpu_round.plan(configs, tmp_path, {("cifar10-jpeg-full-bf16", "resnet110-seed3")}, carry_mb=30, return_mb=60)
    assert names(todo)[9:] == ["full/resnet20-seed0", "full/plain20-seed0", "full/resnet110-seed3"]  # in its place
    todo = gpu_round.plan(configs, tmp_path, {("cifar10-jpeg-full-bf16", "resnet110-seed3")}, carry_mb=10, return_mb=60)
    assert names(todo)[9:] == ["full/resnet110-seed3"]  # over the limit on its own: it trains on all the same


def test_a_round_returns_finished_runs_first_and_names_the_unfinished_ones_left_behind(tmp_path, capsys):
    import dataclasses

    from resnet.results import read_meta, write_meta

    from .conftest import fake_run

    configs = [dataclasses.replace(gpu_round.study_runs(str(JPEG_ARCHIVE))[10], depth=d) for d in (20, 32, 44)]
    for c, status, mb in zip(configs, ("running", "finished", "running"), (9, 7, 5)):
        run_dir = fake_run(tmp_path, 10.0, config=c)
        (run_dir / "weights.pt").write_bytes(b"0" * mb * 10**6)
        if status == "running":
            (run_dir / "weights.pt").rename(run_dir / "checkpoint.pt")
            write_meta(read_meta(run_dir / "run.json") | {"status": "running"}, run_dir / "run.json")
    kept = gpu_round.runs_to_return(configs, tmp_path, return_mb=17, files=5)
    assert kept == {configs[0].study: ["resnet32-seed0", "resnet20-seed0"]}  # finished first, then in order
    assert "LEFT BEHIND" in (out := capsys.readouterr().out) and "resnet44-seed0, unfinished, 5.0 MB" in out
    # one part of 16 MB: 7 + 9 MB would need two, 7 + 5 fit
    assert gpu_round.runs_to_return(configs, tmp_path, return_mb=100, files=1) == {
        configs[0].study: ["resnet32-seed0", "resnet44-seed0"]}


def test_a_gpu_round_imports_what_it_carries_trains_and_exports_in_parts(tmp_path, monkeypatch, small_data):
    import dataclasses

    from resnet import train
    from resnet.transfer import export_study

    from .conftest import tiny_config

    done = tiny_config(net="plain")
    train(done, tmp_path / "earlier", data=small_data, stop_at=20, progress=False)
    export_study(done.run_dir(tmp_path / "earlier").parent, tmp_path / "carry" / f"{done.study}.tar", unfinished=True)
    other = dataclasses.replace(done, seed=5)  # another tool's archive carried beside it: not imported
    train(other, tmp_path / "other", data=small_data, progress=False)
    export_study(other.run_dir(tmp_path / "other").parent, tmp_path / "carry" / "graph-accuracy-eager.tar")
    finished_at_home = tiny_config(seed=7)
    train(finished_at_home, tmp_path / "home", data=small_data, progress=False)
    todo = [done, tiny_config(), finished_at_home]
    monkeypatch.setattr(gpu_round, "study_runs", lambda data, cuda_graph: [dataclasses.replace(c, cuda_graph=cuda_graph) for c in todo])
    monkeypatch.setattr(gpu_round, "PART_MB", 0.2)
    out = tmp_path / "out"
    assert gpu_round.main(["--data", str(JPEG_ARCHIVE), "--out", str(out), "--results", str(tmp_path / "r"),
                           "--home", str(tmp_path / "home"), "--carry", str(tmp_path / "carry"), "--minutes", "5",
                           "--parallel", "1", "--files", "20"]) == 0
    parts = sorted(out.iterdir())
    assert len(parts) > 1 and parts[0].name == f"{done.study}.tar.part000"
    from resnet.transfer import import_study

    assert import_study(parts[0], tmp_path / "back") == {done.name: "added", todo[1].name: "added"}
    assert not other.run_dir(tmp_path / "r").exists() and not finished_at_home.run_dir(tmp_path / "r").exists()
    assert json.loads((done.run_dir(tmp_path / "back") / "run.json").read_text())["status"] == "finished"


def test_a_tree_without_git_names_its_commit_from_the_environment(monkeypatch):
    from resnet.provenance import git_commit

    monkeypatch.setenv("RESNET_GIT_COMMIT", "abc123")
    assert git_commit() == "abc123"
    monkeypatch.delenv("RESNET_GIT_COMMIT")
    assert git_commit() != "abc123"


gpu_session = _tool("gpu_session")


def _git_repo(root):
    import subprocess

    from resnet import TrainConfig

    from .conftest import fake_run

    git = lambda *a: subprocess.run(["git", *a], cwd=root, check=True, capture_output=True, text=True).stdout  # noqa: E731
    root.mkdir(parents=True, exist_ok=True)
    git("init", "-q")
    git("config", "user.email", "t@t"), git("config", "user.name", "t")
    finished = fake_run(root / "results", 10.0, config=TrainConfig(data=str(JPEG_ARCHIVE), precision="bf16", net="plain"))
    (root / "code.py").write_text("x = 1\n")
    git("add", "-A"), git("commit", "-qm", "a study")
    return git, finished


def test_committed_weights_and_checkpoints_are_set_aside_for_the_device_call_and_put_back_as_head_has_them(tmp_path):
    git, finished = _git_repo(tmp_path)
    weights = (finished / "weights.pt").read_bytes()
    running = tmp_path / "results" / "study" / "run"  # a CPU-campaign run in progress, its checkpoint committed
    running.mkdir(parents=True)
    (running / "checkpoint.pt").write_bytes(b"a" * 10_000)
    git("add", "-f", "results/study/run/checkpoint.pt"), git("commit", "-qm", "a checkpoint")
    travelled = gpu_session.travelling_mb(tmp_path, [])
    assert sorted(gpu_session.set_weights_aside(tmp_path)) == sorted([
        "results/study/run/checkpoint.pt", str((finished / "weights.pt").relative_to(tmp_path))])
    sent = git("ls-files", "-co", "--exclude-standard")  # what the device call sends
    assert "weights.pt" not in sent and "checkpoint.pt" not in sent
    assert (finished / "weights.pt").read_bytes() == weights  # still on disk
    assert gpu_session.travelling_mb(tmp_path, []) < travelled - (len(weights) + 10_000) / 1e6 + 1e-6
    with pytest.raises(SystemExit, match="already set aside"):
        gpu_session.set_weights_aside(tmp_path)
    (running / "checkpoint.pt").write_bytes(b"b" * 10_000)  # the session trained the run on
    gpu_session.put_weights_back(tmp_path)
    assert git("status", "--porcelain") == " M results/study/run/checkpoint.pt\n" and "weights.pt" in git("ls-files")
    assert "gpu_session" not in (tmp_path / ".git" / "info" / "exclude").read_text()
    gpu_session.set_weights_aside(tmp_path)
    (finished / "weights.pt").write_bytes(b"other weights")
    with pytest.raises(SystemExit, match="committed weights differ from HEAD"):
        gpu_session.put_weights_back(tmp_path)


def test_a_session_is_prepared_here_and_its_returned_runs_come_home(tmp_path, small_data):
    from resnet import train
    from resnet.transfer import export_study

    from .conftest import tiny_config

    git, finished = _git_repo(tmp_path / "repo")
    unfinished = tiny_config(precision="bf16")
    train(unfinished, tmp_path / "repo" / "results", data=small_data, stop_at=20, progress=False)
    gpu = tmp_path / "repo" / ".gpu"
    (tmp_path / "repo" / ".gitignore").write_text(".gpu/\ncheckpoint.pt\ntrain.lock\n")
    carry = gpu_session.prepare(JPEG_ARCHIVE, tmp_path / "repo" / "results", tmp_path / "repo", gpu)
    assert carry == [".gpu/data", ".gpu/carry"] and (gpu / "data" / JPEG_ARCHIVE.name).exists()
    assert [p.name for p in (gpu / "carry").iterdir()] == [f"{unfinished.study}.tar"]  # the unfinished run only
    assert "weights.pt" not in git("ls-files")
    # the device trains it to the end and returns it
    away = tmp_path / "away"
    gpu_session.import_study(gpu / "carry" / f"{unfinished.study}.tar", away)
    train(unfinished, away, data=small_data, progress=False)
    export_study(unfinished.run_dir(away).parent, tmp_path / "files_at" / f"{unfinished.study}.tar")
    (tmp_path / "bench").mkdir()
    for name in ("gpu_check.md", "notes.md"):
        (tmp_path / "bench" / name).write_text("# CUDA check\n")
    gpu_session.pack(tmp_path / "bench", tmp_path / "files_at" / "benchmarks.tar")
    import tarfile

    with tarfile.open(tmp_path / "files_at" / "benchmarks.tar", "a") as tar:  # a name it never writes
        tar.add(tmp_path / "bench" / "notes.md", arcname="../notes.md")
    (tmp_path / "repo" / "benchmarks").mkdir()
    outcome = gpu_session.finish(tmp_path / "files_at", JPEG_ARCHIVE, tmp_path / "repo" / "results", tmp_path / "repo")
    assert outcome == {unfinished.study: {unfinished.name: "updated"}}
    assert not (unfinished.run_dir(tmp_path / "repo" / "results") / "checkpoint.pt").exists()
    assert git("diff", "--cached", "--name-only") == "" and "weights.pt" in git("ls-files")  # the index is HEAD's
    assert [p.name for p in (tmp_path / "repo" / "benchmarks").iterdir()] == ["gpu_check.md"]
    assert not (tmp_path / "repo" / "notes.md").exists()


def test_the_round_uses_the_graphed_step_only_when_every_check_passed_and_it_is_worth_it(tmp_path):
    path = tmp_path / "gpu_check.json"
    assert gpu_session.use_graph(path) == (False, "eager: the CUDA check wrote nothing")
    speed = lambda *ups: [{"speed-up": f"{u:.2f}x"} for u in ups]  # noqa: E731
    checks = [{"check": "resume", "result": "passed"}, {"check": "generators", "result": "passed"}]
    path.write_text(json.dumps({"checks": checks, "speed": speed(1.1, 1.5, 2.0)}))
    assert gpu_session.use_graph(path)[0]
    path.write_text(json.dumps({"checks": checks, "speed": speed(1.0, 1.1, 2.0)}))
    assert gpu_session.use_graph(path) == (False, "eager: the graphed step is only 1.10x the eager one (median network)")
    path.write_text(json.dumps({"checks": checks[:1] + [{"check": "generators", "result": "FAILED"}], "speed": speed(3, 3)}))
    assert gpu_session.use_graph(path) == (False, "eager: checks failed (generators)")


def test_the_device_command_measures_then_trains_for_the_rest_of_its_time(tmp_path, monkeypatch):
    calls, bench, out = [], tmp_path / "bench", tmp_path / "out"

    def check(bench, data, seconds, smoke):
        calls.append(("check", seconds))
        (bench / "gpu_check.json").write_text(json.dumps({"checks": [], "speed": [{"speed-up": "1.50x"}]}))
        return 0

    def cost(bench, data, seconds, smoke):
        calls.append(("cost", seconds))
        (bench / "study_cost_cuda_bf16.json").write_text("{}")
        (bench / "study_cost_cpu_bf16.json").write_text("{}")  # a smoke run's: never returned
        return 0

    monkeypatch.setattr(gpu_session, "facts", lambda: None)
    monkeypatch.setattr(gpu_session, "run_check", check)
    monkeypatch.setattr(gpu_session, "run_cost", cost)
    monkeypatch.setattr(gpu_session.gpu_round, "main", lambda argv: calls.append(("round", argv)) or 0)
    device = ["device", "--out", str(out), "--bench", str(bench)]
    assert gpu_session.main(device + ["--seconds", "300", "--check-seconds", "100"]) == 0
    (_, seconds), _, (_, argv) = calls
    assert seconds == 100 and argv[-1] == "--cuda-graph" and argv[:2] == ["--data", ".gpu/data/cifar10-jpeg.tar.gz"]
    minutes = float(argv[argv.index("--minutes") + 1])
    assert (300 - gpu_session.EXPORT_MARGIN_S) / 60 - 0.1 < minutes <= (300 - gpu_session.EXPORT_MARGIN_S) / 60
    assert [p.name for p in out.iterdir()] == ["benchmarks.tar"]  # one file of the eight the call returns
    import tarfile

    assert tarfile.open(out / "benchmarks.tar").getnames() == ["gpu_check.json", "study_cost_cuda_bf16.json"]
    calls.clear()
    assert gpu_session.main(device + ["--seconds", "60"]) == 1  # no time left to train
    assert [c[0] for c in calls] == ["check", "cost"]


def test_a_repeat_on_the_warm_machine_trains_at_once_on_the_check_it_made_at_this_commit(tmp_path, monkeypatch):
    calls, bench = [], tmp_path / "bench"

    def check(bench, data, seconds, smoke):
        calls.append("check")
        (bench / "gpu_check.json").write_text(json.dumps({"checks": [], "speed": [{"speed-up": "3.00x"}]}))
        return 0

    monkeypatch.setattr(gpu_session, "facts", lambda: None)
    monkeypatch.setattr(gpu_session, "run_check", check)
    monkeypatch.setattr(gpu_session, "run_cost", lambda *a: calls.append("cost") or 0)
    monkeypatch.setattr(gpu_session.gpu_round, "main", lambda argv: calls.append(argv[-1]) or 0)
    call = lambda n: ["device", "--out", str(tmp_path / f"out{n}"), "--bench", str(bench), "--seconds", "300"]  # noqa: E731
    monkeypatch.delenv("RESNET_GIT_COMMIT", raising=False)
    assert gpu_session.main(call(0)) == 0 and gpu_session.main(call(1)) == 0  # commit unknown: never taken as read
    assert calls == ["check", "cost", "--cuda-graph"] * 2
    calls.clear()
    monkeypatch.setenv("RESNET_GIT_COMMIT", "a" * 40)
    assert gpu_session.main(call(2)) == 0 and gpu_session.main(call(3)) == 0
    assert calls == ["check", "cost", "--cuda-graph", "--cuda-graph"]  # the repeat: the verdict of the first
    assert (tmp_path / "out2" / "benchmarks.tar").exists() and not (tmp_path / "out3").joinpath("benchmarks.tar").exists()
    calls.clear()
    monkeypatch.setenv("RESNET_GIT_COMMIT", "b" * 40)  # other code on this machine: measured again
    assert gpu_session.main(call(4)) == 0 and calls == ["check", "cost", "--cuda-graph"]
    (bench / gpu_session.MEASURED_FILE).write_text("{not json")
    calls.clear()
    assert gpu_session.main(call(5)) == 0 and calls == ["check", "cost", "--cuda-graph"]


def test_finish_brings_each_run_home_at_the_furthest_iteration_any_call_reached(tmp_path, small_data, capsys):
    from resnet import train
    from resnet.transfer import export_study

    from .conftest import tiny_config

    _git_repo(tmp_path / "repo")
    results, away = tmp_path / "repo" / "results", tmp_path / "away"
    cfg = tiny_config(precision="bf16")
    train(cfg, results, data=small_data, stop_at=10, progress=False)
    export_study(cfg.run_dir(results).parent, tmp_path / "carry.tar", unfinished=True, names=[cfg.name])
    gpu_session.import_study(tmp_path / "carry.tar", away)
    for n, stop_at in ((1, 20), (2, 30)):  # the first call, then its repeat on the warm machine
        train(cfg, away, data=small_data, stop_at=stop_at, progress=False)
        export_study(cfg.run_dir(away).parent, tmp_path / f"call{n}" / f"{cfg.study}.tar", unfinished=True,
                     names=[cfg.name])
    done = lambda: gpu_session.read_meta(cfg.run_dir(results) / "run.json")["iterations_done"]  # noqa: E731
    outcome = gpu_session.finish([tmp_path / "call2", tmp_path / "call1"], JPEG_ARCHIVE, results, tmp_path / "repo")
    assert outcome == {cfg.study: {cfg.name: "updated"}} and done() == 30  # out of order: the older one is kept
    assert f"{tmp_path / 'call1'}: {cfg.study}/{cfg.name}: kept: here at iteration 30, the archive at 20" in (
        capsys.readouterr().out)
    with pytest.raises(SystemExit, match="no such folder"):
        gpu_session.finish([tmp_path / "call3"], JPEG_ARCHIVE, results, tmp_path / "repo")


def test_a_round_whose_training_fails_still_returns_what_it_holds(tmp_path, monkeypatch, small_data, capsys):
    import dataclasses

    from resnet import train
    from resnet.transfer import export_study

    from .conftest import tiny_config

    carried = tiny_config(net="plain")
    train(carried, tmp_path / "earlier", data=small_data, stop_at=20, progress=False)
    export_study(carried.run_dir(tmp_path / "earlier").parent, tmp_path / "carry" / f"{carried.study}.tar", unfinished=True)
    monkeypatch.setattr(gpu_round, "study_runs", lambda data, cuda_graph: [dataclasses.replace(carried, cuda_graph=cuda_graph)])

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_round, "sweep", broken)
    out = tmp_path / "out"
    assert gpu_round.main(["--data", str(JPEG_ARCHIVE), "--out", str(out), "--results", str(tmp_path / "r"),
                           "--home", str(tmp_path / "home"), "--carry", str(tmp_path / "carry")]) == 1
    assert [p.name for p in out.iterdir()] == [f"{carried.study}.tar"]  # the checkpoint carried in goes back
    assert "illegal memory access" in capsys.readouterr().err


def test_the_session_s_benchmark_commands_run_as_written(tmp_path):
    """The device command's benchmark calls, in their CPU smoke modes (their arguments are real)."""
    assert gpu_session.run_cost(tmp_path, str(JPEG_ARCHIVE), 300, smoke=True) == 0
    assert json.loads((tmp_path / "study_cost_cpu_bf16.json").read_text())["networks"] == 2
    assert gpu_session.run_benchmark(["benchmarks.study_cost", "--no-such-flag"], 60) == 2
