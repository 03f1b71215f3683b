"""Studies that travel: export, import, resume after import, and archives that must be refused."""
import io
import json
import tarfile

import pytest

from resnet import RunConflict, train
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
