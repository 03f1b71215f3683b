"""Studies that travel: export, import, resume after import, and archives that must be refused."""
import io
import json
import tarfile

import pytest

from resnet import train
from resnet.results import RunConflict
from resnet.cli import main
from resnet.transfer import export_study, import_study

from .conftest import tiny_config

FINISHED, UNFINISHED = tiny_config(net="plain"), tiny_config()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data):
    """A study with a finished run and a run stopped at iteration 20; and the second run uninterrupted."""
    home, reference = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("reference")
    train(FINISHED, home, data=small_data, progress=False)
    train(UNFINISHED, home, data=small_data, stop_at=20, progress=False)
    return home, train(UNFINISHED, reference, data=small_data, progress=False), reference


def test_a_study_exported_in_parts_comes_home_and_its_unfinished_run_ends_as_an_uninterrupted_one(
        trained, tmp_path, small_data):
    home, uninterrupted, _ = trained
    parts = export_study(FINISHED.run_dir(home).parent, tmp_path / "out" / "study.tar", unfinished=True, part_mb=0.2)
    assert len(parts) > 2 and all(p.stat().st_size <= 200_000 for p in parts)
    away = tmp_path / "away"
    assert import_study(parts[0], away) == {FINISHED.name: "added", UNFINISHED.name: "added"}
    for name in ("run.json", "log.csv", "weights.pt"):
        assert (FINISHED.run_dir(away) / name).read_bytes() == (FINISHED.run_dir(home) / name).read_bytes()
    resumed = train(UNFINISHED, away, data=small_data, progress=False)
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]
    assert resumed["final_test_error"] == uninterrupted["final_test_error"]
    # imported again: the finished run is already there, the newer one is kept
    assert import_study(tmp_path / "out" / "study.tar", away) == {
        FINISHED.name: "already here", UNFINISHED.name: "kept: finished here, unfinished in the archive"}


def test_without_asking_only_finished_runs_travel_and_a_finished_one_replaces_a_checkpoint(trained, tmp_path):
    home, _, reference = trained
    [archive] = export_study(FINISHED.run_dir(home).parent, tmp_path / "finished.tar")
    manifest = json.loads(tarfile.open(archive).extractfile("manifest.json").read())
    assert list(manifest["runs"]) == [FINISHED.name]
    away = tmp_path / "away"
    export_study(UNFINISHED.run_dir(home).parent, tmp_path / "all.tar", unfinished=True)
    import_study(tmp_path / "all.tar", away)
    assert (UNFINISHED.run_dir(away) / "checkpoint.pt").exists()
    export_study(UNFINISHED.run_dir(reference).parent, tmp_path / "reference.tar")
    assert import_study(tmp_path / "reference.tar", away) == {UNFINISHED.name: "updated"}
    assert not (UNFINISHED.run_dir(away) / "checkpoint.pt").exists()
    assert json.loads((UNFINISHED.run_dir(away) / "run.json").read_text())["status"] == "finished"


def test_a_run_further_on_here_but_whose_checkpoint_is_lost_is_replaced_by_the_archives(trained, tmp_path,
                                                                                         small_data):
    home, uninterrupted, _ = trained
    [archive] = export_study(UNFINISHED.run_dir(home).parent, tmp_path / "all.tar", unfinished=True)
    away = tmp_path / "away"
    train(UNFINISHED, away, data=small_data, stop_at=30, progress=False)
    assert import_study(archive, away)[UNFINISHED.name] == "kept: here at iteration 30, the archive at 20"
    (UNFINISHED.run_dir(away) / "checkpoint.pt").unlink()  # the machine that held it is gone
    assert import_study(archive, away)[UNFINISHED.name] == "updated"
    imported = json.loads((UNFINISHED.run_dir(away) / "run.json").read_text())
    # the run here is recorded as restarted, as training it here would have recorded it
    restarted = [{"lost_iteration": 30, "restarted": imported["started"]}]
    assert imported["iterations_done"] == 20 and imported["restarted"] == restarted
    resumed = train(UNFINISHED, away, data=small_data, progress=False)
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"] and resumed["restarted"] == restarted
    assert "restarted" not in json.loads((UNFINISHED.run_dir(home) / "run.json").read_text())


def test_only_the_runs_named_travel_and_a_name_not_in_the_study_is_refused(trained, tmp_path):
    home, _, _ = trained
    [archive] = export_study(FINISHED.run_dir(home).parent, tmp_path / "one.tar", unfinished=True,
                             names=[UNFINISHED.name])
    assert list(json.loads(tarfile.open(archive).extractfile("manifest.json").read())["runs"]) == [UNFINISHED.name]
    with pytest.raises(ValueError, match="no run resnet99-seed0"):
        export_study(FINISHED.run_dir(home).parent, tmp_path / "none.tar", names=["resnet99-seed0"])


def test_an_archive_of_another_result_or_other_settings_is_refused(trained, tmp_path, small_data):
    home, _, _ = trained
    [archive] = export_study(FINISHED.run_dir(home).parent, tmp_path / "study.tar")
    other = tmp_path / "other"
    train(FINISHED.__class__(**{**FINISHED.to_dict(), "milestones": (20, 30), "lr": 0.05}), other, data=small_data,
          progress=False)  # same name and study, another lr
    with pytest.raises(RunConflict, match=r"holds another run than the archive's: lr 0.05 \(asked for 0.1\)"):
        import_study(archive, other)


def test_a_damaged_or_incomplete_archive_is_named_and_nothing_is_written(trained, tmp_path):
    home, _, _ = trained
    parts = export_study(FINISHED.run_dir(home).parent, tmp_path / "study.tar", unfinished=True, part_mb=0.2)
    data = bytearray(parts[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is damaged|not a study archive"):
        import_study(parts[0], tmp_path / "away")
    parts[-1].unlink()
    with pytest.raises(ValueError, match="not a study archive, or a part is missing"):
        import_study(parts[0], tmp_path / "away")
    parts[1].unlink()
    with pytest.raises(ValueError, match="parts missing"):
        import_study(parts[0], tmp_path / "away")
    assert not (tmp_path / "away").exists()


def test_an_archive_naming_paths_outside_its_runs_is_refused(tmp_path):
    manifest = {"format": 1, "study": "s", "runs": {"r": {"status": "finished", "files": {"../../evil.sh": "0"}}}}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("manifest.json", json.dumps(manifest).encode()), ("s/r/../../evil.sh", b"echo")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "evil.tar").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"run 'r' with files \['../../evil.sh'\]"):
        import_study(tmp_path / "evil.tar", tmp_path / "results")
    assert not (tmp_path / "evil.sh").exists() and not (tmp_path / "results").exists()


def test_export_and_import_on_the_command_line(trained, tmp_path, capsys):
    home, _, _ = trained
    study = FINISHED.run_dir(home).parent
    assert main(["export", str(study), str(tmp_path / "s.tar"), "--unfinished"]) == 0
    assert main(["import", str(tmp_path / "s.tar"), "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 's.tar'}" in out and f"{FINISHED.name}: added" in out and f"{UNFINISHED.name}: added" in out
    assert main(["import", str(tmp_path / "missing.tar")]) == 1
    assert "no such archive" in capsys.readouterr().err
    assert main(["export", str(study), str(tmp_path / "one.tar"), "--unfinished", "--runs", UNFINISHED.name]) == 0
    manifest = json.loads(tarfile.open(tmp_path / "one.tar").extractfile("manifest.json").read())
    assert list(manifest["runs"]) == [UNFINISHED.name]
    assert main(["export", str(study), str(tmp_path / "none.tar"), "--runs", "resnet8-seed9"]) == 1
    assert "no run resnet8-seed9 to export" in capsys.readouterr().err


def _archive(path, study, runs: dict[str, dict[str, bytes]], manifest: dict | None = None):
    """A study archive of ``runs`` ({run: {file: bytes}}) written as export writes one (or with ``manifest``)."""
    import hashlib

    manifest = manifest or {"format": 1, "study": study, "runs": {
        run: {"status": json.loads(files["run.json"])["status"], "iterations_done": 0,
              "files": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}} for run, files in runs.items()}}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        members = {"manifest.json": json.dumps(manifest).encode(),
                   **{f"{study}/{run}/{n}": b for run, files in runs.items() for n, b in files.items()}}
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def _files(run_dir, names):
    return {n: (run_dir / n).read_bytes() for n in names}


def _edit_json(raw: bytes, **changes) -> bytes:
    return json.dumps(json.loads(raw) | changes, indent=1).encode()


def _other_checkpoint(trained, tmp_path, small_data):
    """The unfinished run's checkpoint bytes at iteration 30 (where the archive's run.json says 20)."""
    train(UNFINISHED, tmp_path / "further", data=small_data, stop_at=30, progress=False)
    return (UNFINISHED.run_dir(tmp_path / "further") / "checkpoint.pt").read_bytes()


HOSTILE = {  # what is done to the archive's files: (run, file) -> bytes, and the error it must meet
    "weights not of run.json's sha256": (
        lambda f, ck: {(FINISHED.name, "weights.pt"): f[FINISHED.name]["weights.pt"][:-10] + b"0" * 10},
        "weights.pt: damaged"),
    "a garbage log.csv": (lambda f, ck: {(FINISHED.name, "log.csv"): b"iteration,oops\n1,2\n"}, "log.csv: columns"),
    "a final error that the log contradicts": (
        lambda f, ck: {(FINISHED.name, "run.json"): _edit_json(f[FINISHED.name]["run.json"], final_test_error=1.5)},
        "final_test_error 1.5 is not the last test error"),
    "a checkpoint further on than its run.json": (
        lambda f, ck: {(UNFINISHED.name, "checkpoint.pt"): ck}, r"iteration 30 \(run.json's: 20\)"),
    "a checkpoint of other settings": (
        lambda f, ck: {(UNFINISHED.name, "run.json"): _edit_json(
            f[UNFINISHED.name]["run.json"], config=json.loads(f[UNFINISHED.name]["run.json"])["config"] | {"lr": 0.05},
            name=UNFINISHED.name)}, "lr 0.1"),
    "a damaged checkpoint": (
        lambda f, ck: {(UNFINISHED.name, "checkpoint.pt"): f[UNFINISHED.name]["checkpoint.pt"][:1000]},
        "checkpoint.pt: unreadable checkpoint"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_an_archive_that_a_reader_or_a_resume_would_refuse_is_refused_naming_its_member_and_nothing_changes(
        trained, tmp_path, small_data, case):
    # the results here: the unfinished run at iteration 20 with its checkpoint, nothing of the finished one
    home, _, _ = trained
    study = FINISHED.run_dir(home).parent.name
    files = {FINISHED.name: _files(FINISHED.run_dir(home), ("weights.pt", "log.csv", "run.json")),
             UNFINISHED.name: _files(UNFINISHED.run_dir(home), ("checkpoint.pt", "log.csv", "run.json"))}
    edit, error = HOSTILE[case]
    changed = edit(files, _other_checkpoint(trained, tmp_path, small_data) if "further" in case else None)
    for (run, name), data in changed.items():
        files[run] = files[run] | {name: data}
    archive = _archive(tmp_path / "hostile.tar", study, files)
    away = tmp_path / "away"
    train(UNFINISHED, away, data=small_data, stop_at=10, progress=False)
    before = {p: p.read_bytes() for p in away.rglob("*") if p.is_file()}
    run = next(run for run, _ in changed)
    with pytest.raises((ValueError, RuntimeError), match=error) as caught:
        import_study(archive, away)
    assert f"hostile.tar:{study}/{run}" in str(caught.value) and "resnet-import-" not in str(caught.value)
    assert {p: p.read_bytes() for p in away.rglob("*") if p.is_file()} == before
    assert not FINISHED.run_dir(away).exists()


def test_an_import_is_all_or_nothing_when_one_of_its_runs_is_being_trained_here(trained, tmp_path, small_data):
    from resnet.results import RunLocked, run_lock

    home, _, _ = trained
    [archive] = export_study(FINISHED.run_dir(home).parent, tmp_path / "study.tar", unfinished=True)
    away = tmp_path / "away"
    train(UNFINISHED, away, data=small_data, stop_at=10, progress=False)  # older here: the archive's would win
    before = {p: p.read_bytes() for p in away.rglob("*") if p.is_file()}
    with run_lock(UNFINISHED.run_dir(away)):  # as a training process holds it
        with pytest.raises(RunLocked, match="is being trained"):
            import_study(archive, away)
    assert not FINISHED.run_dir(away).exists()  # the other run is not installed either
    assert {p: p.read_bytes() for p in away.rglob("*") if p.is_file() and p.name != "train.lock"} == {
        p: b for p, b in before.items() if p.name != "train.lock"}


def test_an_import_that_cannot_write_every_file_writes_none(trained, tmp_path, small_data, monkeypatch):
    import resnet.files

    home, _, _ = trained
    [archive] = export_study(FINISHED.run_dir(home).parent, tmp_path / "study.tar", unfinished=True)
    real, written = resnet.files.Path.write_bytes, []

    def disk_full_at_the_fourth(self, data):
        if self.name.endswith(".tmp"):  # the installed files, not the checks' scratch
            written.append(self)
        if len(written) == 4 and written[-1] == self:
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(resnet.files.Path, "write_bytes", disk_full_at_the_fourth)
    with pytest.raises(OSError, match="none of the 6 files was changed"):
        import_study(archive, tmp_path / "away")
    monkeypatch.undo()
    assert len(written) == 4 and not (tmp_path / "away").exists()


@pytest.mark.parametrize("manifest, error", [
    ([1, 2], "its manifest is not a JSON object"),
    ({"format": 1, "study": "s", "runs": {}}, "its manifest lists no runs"),
    ({"format": 1, "study": "s"}, "its manifest lists no runs"),
    ({"format": 1, "study": "../up", "runs": {"r": {"files": {}}}}, "study '../up' is not a folder name"),
    ({"format": 1, "study": "s", "runs": {"r": "x"}}, "entry for run 'r' is malformed"),
    ({"format": 1, "study": "s", "runs": {"r": {"files": {"run.json": 5}}}}, "entry for run 'r' is malformed"),
    ({"format": 1, "study": "s", "runs": {"..": {"files": {}}}}, "entry for run '..' is malformed"),
])
def test_a_malformed_or_empty_manifest_is_named_in_one_line(tmp_path, manifest, error):
    _archive(tmp_path / "bad.tar", "s", {}, manifest=manifest)
    with pytest.raises(ValueError, match=error):
        import_study(tmp_path / "bad.tar", tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_a_fresh_archive_wins_over_stale_parts_of_an_earlier_export(trained, tmp_path, small_data):
    home, _, _ = trained
    study = FINISHED.run_dir(home).parent
    stale = export_study(study, tmp_path / "study.tar", part_mb=0.2)  # finished run only, in parts
    (tmp_path / "old").mkdir()
    for part in stale:  # kept aside, then put back beside a fresh whole archive, as if left by the earlier export
        (tmp_path / "old" / part.name).write_bytes(part.read_bytes())
    [fresh] = export_study(study, tmp_path / "study.tar", unfinished=True)
    assert not any(p.exists() for p in stale)  # the export removed the earlier parts of its name
    for part in stale:
        part.write_bytes((tmp_path / "old" / part.name).read_bytes())
    assert set(import_study(fresh, tmp_path / "away")) == {FINISHED.name, UNFINISHED.name}


def test_more_parts_than_can_be_named_are_refused_before_writing(trained, tmp_path):
    home, _, _ = trained
    with pytest.raises(ValueError, match="parts, more than 1,000; choose a larger part size"):
        export_study(FINISHED.run_dir(home).parent, tmp_path / "study.tar", part_mb=0.0001)
    assert not list(tmp_path.iterdir())


def test_an_archive_larger_than_any_study_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import resnet.transfer

    _archive(tmp_path / "big.tar", "s", {}, manifest={"format": 1})
    monkeypatch.setattr(resnet.transfer, "MAX_ARCHIVE_BYTES", 100)
    with pytest.raises(ValueError, match="larger than any study archive"):
        import_study(tmp_path / "big.tar", tmp_path / "results")


def test_export_reads_a_run_being_trained_and_writes_nothing_in_the_study(trained, tmp_path):
    # no lock taken: a run may train meanwhile, and a read-only study folder exports as any other
    import shutil

    from resnet.results import run_lock

    home, _, _ = trained
    study = tmp_path / "copy" / FINISHED.run_dir(home).parent.name
    shutil.copytree(FINISHED.run_dir(home).parent, study, ignore=shutil.ignore_patterns("train.lock"))
    before = {p: p.read_bytes() for p in study.rglob("*") if p.is_file()}
    [archive] = export_study(study, tmp_path / "s.tar", unfinished=True)
    assert {p: p.read_bytes() for p in study.rglob("*") if p.is_file()} == before
    with run_lock(study / UNFINISHED.name):  # a process trains it
        [archive] = export_study(study, tmp_path / "while-training.tar", unfinished=True)
    assert set(import_study(archive, tmp_path / "away")) == {FINISHED.name, UNFINISHED.name}


def test_export_waits_out_a_run_caught_between_its_checkpoint_and_its_run_json(trained, tmp_path, monkeypatch):
    import resnet.transfer

    home, _, _ = trained
    run_dir = UNFINISHED.run_dir(home)
    reads, real = [], resnet.transfer.trainer.read_checkpoint

    def checkpoint_ahead_once(source, name=None):  # the trainer wrote the next checkpoint, not yet its run.json
        state = real(source, name)
        reads.append(name)
        return state | {"iteration": state["iteration"] + 10} if len(reads) == 1 else state

    monkeypatch.setattr(resnet.transfer.trainer, "read_checkpoint", checkpoint_ahead_once)
    [archive] = export_study(run_dir.parent, tmp_path / "s.tar", unfinished=True, names=[UNFINISHED.name])
    assert len(reads) == 2  # read again, consistent the second time
    monkeypatch.undo()
    assert import_study(archive, tmp_path / "away") == {UNFINISHED.name: "added"}


def test_a_run_checkpointed_before_its_first_evaluation_travels_without_a_log_and_resumes_as_uninterrupted(
        tmp_path, small_data):
    early = tiny_config(seed=3, eval_every=20, checkpoint_every=20)
    uninterrupted = train(early, tmp_path / "reference", data=small_data, progress=False)
    stopped = train(early, tmp_path / "home", data=small_data, time_limit=0, progress=False)  # at its first update
    assert stopped["status"] == "running" and 0 < stopped["iterations_done"] < early.eval_every
    assert not (early.run_dir(tmp_path / "home") / "log.csv").exists()
    [archive] = export_study(early.run_dir(tmp_path / "home").parent, tmp_path / "s.tar", unfinished=True)
    manifest = json.loads(tarfile.open(archive).extractfile("manifest.json").read())
    assert sorted(manifest["runs"][early.name]["files"]) == ["checkpoint.pt", "run.json"]
    # resumed and evaluated since, not yet checkpointed again: that log is of evaluations the resume makes again
    reference_log = (early.run_dir(tmp_path / "reference") / "log.csv").read_bytes().splitlines(keepends=True)
    (early.run_dir(tmp_path / "home") / "log.csv").write_bytes(b"".join(reference_log[:2]))
    [again] = export_study(early.run_dir(tmp_path / "home").parent, tmp_path / "again.tar", unfinished=True)
    assert tarfile.open(again).getnames() == tarfile.open(archive).getnames()
    assert import_study(archive, tmp_path / "away") == {early.name: "added"}
    resumed = train(early, tmp_path / "away", data=small_data, progress=False)
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]


def test_a_running_run_whose_log_is_lost_is_named_by_export(trained, tmp_path):
    import shutil

    from resnet.results import ResultsError

    home, _, _ = trained
    study = tmp_path / "copy" / UNFINISHED.run_dir(home).parent.name
    shutil.copytree(UNFINISHED.run_dir(home), study / UNFINISHED.name, ignore=shutil.ignore_patterns("train.lock"))
    (study / UNFINISHED.name / "log.csv").unlink()
    with pytest.raises(ResultsError, match="running run without log.csv, though its checkpoint has logged 2"):
        export_study(study, tmp_path / "s.tar", unfinished=True)
    assert not (tmp_path / "s.tar").exists()


def test_a_run_between_checkpoints_travels_as_of_its_checkpoint_and_resumes_as_uninterrupted(
        trained, tmp_path, small_data):
    # log.csv is written at each evaluation, the checkpoint every few: most of a run's time its log is ahead
    import shutil

    home, uninterrupted, reference = trained
    study = tmp_path / "copy" / UNFINISHED.run_dir(home).parent.name
    shutil.copytree(UNFINISHED.run_dir(home), study / UNFINISHED.name, ignore=shutil.ignore_patterns("train.lock"))
    log = study / UNFINISHED.name / "log.csv"
    at_checkpoint = log.read_bytes()
    since = (UNFINISHED.run_dir(reference) / "log.csv").read_bytes().splitlines(keepends=True)[3:]  # 30 and 40
    log.write_bytes(at_checkpoint + since[0])
    [archive] = export_study(study, tmp_path / "s.tar", unfinished=True)
    assert tarfile.open(archive).extractfile(f"{study.name}/{UNFINISHED.name}/log.csv").read() == at_checkpoint
    assert log.read_bytes() == at_checkpoint + since[0]  # the study itself is left as it is
    assert import_study(archive, tmp_path / "away") == {UNFINISHED.name: "added"}
    resumed = train(UNFINISHED, tmp_path / "away", data=small_data, progress=False)
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]
