"""A GPU session in a device call or two: stage it here, run it there, bring it home.

    python tools/gpu_session.py prepare            # here: stages .gpu/, prints the device calls to make
    (device call) python3 tools/gpu_session.py device --out $OUT 2>&1 | tee $OUT/session.log
    python tools/gpu_session.py finish DIR [DIR...]  # here: each call's files_at, in order; imports, puts back

A session is lent 15 minutes of device time (the machine's start, each call's transfers and the idle time between
calls included), and a command may run 10; so the session is one command of about 9 minutes (--seconds), then, on
the machine while it is still warm, the same command again for what is left (--seconds: budget_left_s less a
minute):
  device  1. facts: the GPU, driver, torch, CUDA and cuDNN, any official CIFAR-10 copy on the machine;
          2. the CUDA check, quick (benchmarks/gpu_check.py --quick: the checks and each network's eager and
             graphed step, a couple of minutes), and what the study costs in bf16 (benchmarks/study_cost.py, a
             minute), both into $OUT/benchmarks.tar; a call on a machine that measured them at this commit
             already (the repeat) takes their verdict from there (.gpu/bench/measured.json) and trains at once;
          3. the training (tools/gpu_round.py) for the rest of the time, with the graphed step if every check
             passed and it is at least MIN_SPEEDUP times the eager one on the median network; every run comes
             back through $OUT, unfinished ones as checkpoints. The repeat trains on from the runs the machine
             holds (newer than those carried in: the import keeps the further one).
What travels is at most 64 MiB: the tree, the JPEG archive (19 MB) and the unfinished runs. The committed
weights do not need to (the round reads run.json to know what is finished), so `prepare` takes them out of the
index and ignores them for the call (they stay in place, and in HEAD), and `finish` puts them back.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import gpu_round  # noqa: E402

from resnet.files import write_atomic  # noqa: E402
from resnet.results import META_FILE, read_meta  # noqa: E402
from resnet.runfolder import RunLocked  # noqa: E402
from resnet.trainer import CHECKPOINT_FILE  # noqa: E402
from resnet.transfer import export_study, import_study  # noqa: E402

GPU = ROOT / ".gpu"
DATA_NAME = "cifar10-jpeg.tar.gz"
TRAVEL_LIMIT_MB = 64 * 2**20 / 1e6  # the device call's limit on what travels (64 MiB)
MIN_SPEEDUP = 1.2  # the graphed step is used when it is at least this much faster (median network)
EXPORT_MARGIN_S = 45  # the round's export and the end of the command, after its training stops
COST_SECONDS = 120  # benchmarks/study_cost.py's share at most
BENCHMARKS_TAR = "benchmarks.tar"
BENCHMARK_FILES = ("gpu_check.md", "gpu_check.json", "study_cost_cuda_bf16.md", "study_cost_cuda_bf16.json")
MEASURED_FILE = "measured.json"  # on the machine, in --bench: the commit its check and cost were measured at
FIRST_CALL_S = 550  # the first call's --seconds: the command's 600 s limit, less the round's overrun and a margin
CHANGED = ("added", "updated")  # import_study's verdicts that write the run here
REPEAT_MARGIN_S = 60  # a repeat's --seconds is budget_left_s less this: its transfers, and the gap before it
EXCLUDE_START, EXCLUDE_END = "# gpu_session: weights set aside (start)", "# gpu_session: weights set aside (end)"


# --- here, before the call ----------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def studies(data: str | Path) -> list[str]:
    """The studies a GPU session trains in, in order (named after the data, as on the device)."""
    return list(dict.fromkeys(c.study for c in gpu_round.study_runs(str(data))))


def set_weights_aside(root: Path) -> list[str]:
    """Take the committed weights and checkpoints (of the CPU campaign's runs in progress: the carry brings those)
    out of the index and ignore them (.git/info/exclude), so the device call leaves them behind; they stay on disk
    and in HEAD. Returns their paths. Refused when already set aside."""
    exclude = root / ".git" / "info" / "exclude"
    if exclude.exists() and EXCLUDE_START in exclude.read_text():
        raise SystemExit(f"weights are already set aside ({exclude}): run `finish` first")
    paths = [p for p in _git(root, "ls-files", "-z", "--", "results").split("\0")
             if p.endswith(("/weights.pt", "/" + CHECKPOINT_FILE))]
    if paths:
        _git(root, "rm", "-q", "--cached", "--", *paths)
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a") as f:
            f.write("\n".join([EXCLUDE_START, *("/" + p for p in paths), EXCLUDE_END]) + "\n")
    return paths


def put_weights_back(root: Path) -> list[str]:
    """Undo set_weights_aside: the weights and checkpoints back in the index as HEAD has them, the exclude lines
    gone. The weights on disk must be HEAD's; a checkpoint may have moved on (a run the session trained further or
    finished): that is a change to commit."""
    exclude = root / ".git" / "info" / "exclude"
    text = exclude.read_text() if exclude.exists() else ""
    if EXCLUDE_START not in text:
        return []
    head, rest = text.split(EXCLUDE_START, 1)
    block, tail = rest.split(EXCLUDE_END, 1)
    paths = [line[1:] for line in block.splitlines() if line.startswith("/")]
    _git(root, "reset", "-q", "HEAD", "--", *paths)
    exclude.write_text(head.rstrip("\n") + ("\n" if head.strip() else "") + tail.lstrip("\n"))
    weights = [p for p in paths if p.endswith("/weights.pt")]
    changed = _git(root, "status", "--porcelain", "--", *weights).strip() if weights else ""
    if changed:
        raise SystemExit(f"committed weights differ from HEAD after putting them back:\n{changed}")
    return paths


def travelling_mb(root: Path, carried: list[Path]) -> float:
    """What the device call sends (MB): tracked and untracked files git does not ignore, and the carried paths."""
    files = [root / p for p in _git(root, "ls-files", "-z", "-co", "--exclude-standard").split("\0") if p]
    files += [f for c in carried for f in ([c] if c.is_file() else c.rglob("*"))]
    return sum(f.stat().st_size for f in files if f.is_file()) / 1e6


def prepare(data: Path, results: Path = ROOT / "results", root: Path = ROOT, gpu: Path = GPU) -> list[str]:
    """Stage a session: the data and the studies' unfinished runs under ``gpu``, the weights set aside. Returns
    the carry list of the device call."""
    (gpu / "data").mkdir(parents=True, exist_ok=True)
    if not (gpu / "data" / DATA_NAME).exists() or (gpu / "data" / DATA_NAME).stat().st_size != data.stat().st_size:
        shutil.copyfile(data, gpu / "data" / DATA_NAME)
    shutil.rmtree(gpu / "carry", ignore_errors=True)
    (gpu / "carry").mkdir()
    for study in studies(data):
        running = [m.parent for m in sorted((results / study).glob(f"*/{META_FILE}")) if read_meta(m)["status"] == "running"]
        for run_dir in (r for r in running if not (r / CHECKPOINT_FILE).exists()):
            print(f"{run_dir}: running, but its checkpoint is not here: it starts afresh there (`finish` records "
                  "the restart in its run.json)")
        unfinished = [r.name for r in running if (r / CHECKPOINT_FILE).exists()]
        if unfinished:
            export_study(results / study, gpu / "carry" / f"{study}.tar", unfinished=True, names=unfinished)
            print(f"carry {study}: {', '.join(unfinished)}")
    aside = set_weights_aside(root)
    print(f"set aside (out of the index, ignored, still on disk): {len(aside)} committed weights")
    carry = [gpu / "data", gpu / "carry"]
    mb = travelling_mb(root, carry)
    if mb > TRAVEL_LIMIT_MB - 1:
        put_weights_back(root)
        raise SystemExit(f"{mb:.1f} MB would travel, over the device call's {TRAVEL_LIMIT_MB:.1f}: nothing staged")
    print(f"{mb:.1f} MB will travel (limit {TRAVEL_LIMIT_MB:.1f})")
    return [str(c.relative_to(root)) for c in carry]


def finish(returned: Path | list[Path], data: Path, results: Path = ROOT / "results", root: Path = ROOT) -> dict:
    """Bring a session home: the weights back, the returned studies imported, the CUDA check into benchmarks/.
    ``returned`` is each call's files_at, in the order of the calls: a run comes home at the furthest iteration any
    of them reached (the import keeps the further one), so a call whose machine was lost costs nothing."""
    put_weights_back(root)
    outcome = {}
    for files_at in [returned] if isinstance(returned, Path) else returned:
        if not files_at.is_dir():
            raise SystemExit(f"{files_at}: no such folder (a device call's files_at)")
        for study in studies(data):
            for archive in (files_at / f"{study}.tar", files_at / f"{study}.tar.part000"):
                if archive.exists():
                    for run, what in import_study(archive, results).items():
                        print(f"{files_at}: {study}/{run}: {what}")
                        before = outcome.setdefault(study, {}).get(run)
                        if before is None or (what in CHANGED and before not in CHANGED):
                            outcome[study][run] = what  # what happened to the run here: a change outranks none
        if (files_at / BENCHMARKS_TAR).exists():
            with tarfile.open(files_at / BENCHMARKS_TAR) as tar:
                for member in tar.getmembers():
                    if member.isfile() and member.name in BENCHMARK_FILES:  # no other name is ever written
                        write_atomic(tar.extractfile(member).read(), root / "benchmarks" / member.name)
                        print(f"benchmarks/{member.name} updated")
    return outcome


# --- there, in the call ---------------------------------------------------------------------------------------

def use_graph(check_json: Path) -> tuple[bool, str]:
    """Whether the round trains with the graphed step, and why: every check passed and the graphed step is at
    least MIN_SPEEDUP times the eager one on the median network."""
    if not check_json.exists():
        return False, "eager: the CUDA check wrote nothing"
    summary = json.loads(check_json.read_text())
    failed = [c["check"] for c in summary["checks"] if c["result"] != "passed"]
    if failed:
        return False, f"eager: checks failed ({', '.join(failed)})"
    speedups = [float(r["speed-up"].rstrip("x")) for r in summary["speed"]]
    if not speedups:
        return False, "eager: no speed measured"
    median = statistics.median(speedups)
    if median < MIN_SPEEDUP:
        return False, f"eager: the graphed step is only {median:.2f}x the eager one (median network)"
    return True, f"graphed: every check passed and it is {median:.2f}x the eager step (median network)"


def run_benchmark(args: list[str], seconds: float) -> int | str:
    """``python -m benchmarks.<args>`` in its own process, stopped after ``seconds``."""
    try:
        return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, timeout=seconds).returncode
    except subprocess.TimeoutExpired:
        return f"stopped after {seconds:.0f} s"


def run_check(bench: Path, data: str, seconds: float, smoke: bool) -> int | str:
    """benchmarks/gpu_check.py --quick, into ``bench``."""
    return run_benchmark(["benchmarks.gpu_check", "--quick", "--data", data, "--out", str(bench),
                          *(["--smoke", "--device", "cpu"] if smoke else [])], seconds)


def run_cost(bench: Path, data: str, seconds: float, smoke: bool) -> int | str:
    """benchmarks/study_cost.py in the studies' precision (bf16), into ``bench``: the README's cost table's GPU row."""
    kind = "cpu" if smoke else "cuda"
    return run_benchmark(["benchmarks.study_cost", "--precision", "bf16", "--device", kind, "--data", data,
                          "--iterations", "1" if smoke else "10", *(["--depths", "8"] if smoke else []),
                          "--out", str(bench / f"study_cost_{kind}_bf16.md")], seconds)


def pack(bench: Path, archive: Path) -> list[str]:
    """The benchmarks' files in one archive (the call returns 8 files at most); returns their names."""
    names = sorted(f.name for f in bench.iterdir() if f.name in BENCHMARK_FILES)
    with tarfile.open(archive.with_suffix(".tmp"), "w") as tar:
        for name in names:
            tar.add(bench / name, arcname=name)
    archive.with_suffix(".tmp").replace(archive)
    return names


def facts() -> None:
    """What the machine is: printed into the session's log."""
    for cmd in (["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                [sys.executable, "-c", "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, "
                                       "'cudnn', torch.backends.cudnn.version(), 'gpus', torch.cuda.device_count())"]):
        try:
            print(subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip(), flush=True)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"{cmd[0]}: {e}", flush=True)
    try:
        found = subprocess.run(["find", "/", "-xdev", "-iname", "*cifar*", "-size", "+100M"], capture_output=True,
                               text=True, timeout=30).stdout.split()
    except subprocess.TimeoutExpired:
        found = ["(find stopped after 30 s)"]
    print(f"official CIFAR-10 copies (files over 100 MB named *cifar*): {found or 'none'}", flush=True)


def measured_earlier(bench: Path, commit: str | None) -> dict | None:
    """What this machine's earlier call at ``commit`` measured (check and cost exits), or None: a machine is
    fresh, or measured other code, or the commit is unknown."""
    marker = bench / MEASURED_FILE
    if not commit or not marker.exists():
        return None
    try:
        earlier = json.loads(marker.read_text())
    except ValueError:
        return None
    return earlier if earlier.get("git_commit") == commit else None


def device(out: Path, data: str, seconds: float, check_seconds: float, smoke: bool = False,
           bench: Path = GPU / "bench") -> int:
    start = time.monotonic()

    def say(line: str):
        print(f"[{time.monotonic() - start:5.0f} s] {line}", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    bench.mkdir(parents=True, exist_ok=True)
    commit = os.environ.get("RESNET_GIT_COMMIT")
    earlier = measured_earlier(bench, commit)
    if earlier is None:
        facts()
        (bench / MEASURED_FILE).unlink(missing_ok=True)
        check = run_check(bench, data, check_seconds, smoke)
        cost = run_cost(bench, data, COST_SECONDS, smoke)
        say(f"returned: {pack(bench, out / BENCHMARKS_TAR)}")
        if commit:
            write_atomic(json.dumps({"git_commit": commit, "check": check, "cost": cost}).encode(), bench / MEASURED_FILE)
    else:
        check, cost = earlier["check"], earlier["cost"]
        say(f"this machine measured commit {commit[:10]} earlier in this session: the check and the cost are not "
            "run again (their files came back then)")
    graph, why = use_graph(bench / "gpu_check.json")
    say(f"CUDA check: {'passed' if check == 0 else f'exit {check}'}; study cost: "
        f"{'measured' if cost == 0 else f'exit {cost}'}; training with the {why}")
    minutes = (seconds - (time.monotonic() - start) - EXPORT_MARGIN_S) / 60
    if minutes <= 0.5:
        say(f"no time left to train ({minutes:.1f} min)")
        return 1
    rc = gpu_round.main(["--data", data, "--out", str(out), "--minutes", f"{minutes:.2f}",
                         *(["--cuda-graph"] if graph else [])])
    say(f"round: exit {rc}")
    return rc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("prepare", help="here: stage .gpu/ and print the device call")
    s.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / DATA_NAME))
    s = sub.add_parser("device", help="there: the session's command (and its repeat)")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--data", default=f".gpu/data/{DATA_NAME}")
    s.add_argument("--seconds", type=float, default=FIRST_CALL_S, help="the whole command's time (a repeat's: "
                   f"budget_left_s less {REPEAT_MARGIN_S})")
    s.add_argument("--check-seconds", type=float, default=210, help="the CUDA check's share at most")
    s.add_argument("--smoke", action="store_true", help="the benchmarks in their CPU smoke mode (tests)")
    s.add_argument("--bench", type=Path, default=GPU / "bench", help="where the benchmarks write, before packing")
    s = sub.add_parser("finish", help="here: import what the calls returned, put the weights back")
    s.add_argument("returned", type=Path, nargs="+", help="each call's files_at, in the order of the calls")
    s.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / DATA_NAME))
    args = p.parse_args(argv)
    if args.command == "prepare":
        try:
            carry = prepare(Path(args.data))
        except RunLocked as e:
            raise SystemExit(f"error: {e}. A session carries the studies' unfinished runs: prepare it while the CPU "
                             "campaign is not running (it stops at a checkpoint at its --until)") from None
        commit = _git(ROOT, "rev-parse", "HEAD").strip()
        command = (f"export RESNET_GIT_COMMIT={commit}; set -o pipefail; "
                   f"python3 tools/gpu_session.py device --out $OUT 2>&1 | tee $OUT/session.log")
        repeat = command.replace("--out $OUT", "--out $OUT --seconds <S>")
        print(f"\nthe device call: run(command={command!r}, carry={carry}, timeout_s=600)\n"
              f"then at once, while the machine is warm and budget_left_s (B) is at least 150: the repeat, "
              f"S = B - {REPEAT_MARGIN_S}:\n  run(command={repeat!r}, carry={carry}, timeout_s=<S + 20>)\n"
              f"(where status says the machine is no longer warm, run `finish` on the first call's files_at and "
              f"`prepare` again before any other call: a fresh machine would train again from the runs carried in)\n"
              f"then: python tools/gpu_session.py finish <files_at of each call, in order>")
    elif args.command == "device":
        return device(args.out, args.data, args.seconds, args.check_seconds, args.smoke, args.bench)
    else:
        finish(args.returned, Path(args.data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
