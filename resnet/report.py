"""The README's generated sections (results, peer table), made from the files in the repo: no number in them is
typed by hand.

``python -m resnet report`` rewrites the parts of README.md between each section's markers (``markers``); a test
checks that the committed README matches what the committed results and measurements generate.
"""
from __future__ import annotations

from pathlib import Path

from .config import TrainConfig, study_label
from .compare import error_table, findings
from .results import by_study, load_runs
from .trainer import CHECKPOINT_FILE

START, END = "<!-- results:start (python -m resnet report) -->", "<!-- results:end -->"  # see markers()


def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a GitHub markdown table."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def device_history(meta: dict) -> str | None:
    """Where a run that moved between devices trained, from run.json's ``reseeded`` ('cpu to iteration 15,640,
    cuda to 39,882, then cpu'); None for a run that trained on one kind of device."""
    moves = meta.get("reseeded") or []
    if not moves:
        return None
    legs = [f"{m['from']} to {'iteration ' if i == 0 else ''}{m['iteration']:,}" for i, m in enumerate(moves)]
    return f"{', '.join(legs)}, then {moves[-1]['to']}"


def restart_history(meta: dict) -> str | None:
    """A run's restarts from the beginning after its checkpoint was lost, from run.json's ``restarted`` ('restarted
    from the beginning on 2026-11-26, its checkpoint at iteration 48,484 lost'); None for a run never restarted."""
    restarts = meta.get("restarted") or []
    return "; ".join(f"restarted from the beginning on {r['restarted'][:10]}, its checkpoint at iteration "
                     f"{r['lost_iteration']:,} lost" for r in restarts) or None


def _in_progress(runs) -> list[str]:
    lines = []
    for run in runs:
        if run.meta["status"] == "finished":
            continue
        cfg = TrainConfig.from_dict(run.config)
        done = run.meta["iterations_done"]  # at the last checkpoint; log.csv may run ahead of it
        last = run.log.iloc[-1] if len(run.log) else None
        logged = done if last is None else int(last["iteration"])
        so_far = "" if last is None else (f"; test error {last['test_error']:.2f}%, training error "
                                          f"{last['train_error']:.2f}% at iteration {logged:,}")
        ahead = "" if logged == done else f" (logged up to {logged:,})"
        if done and not (run.path / CHECKPOINT_FILE).exists():
            state = (f"its checkpoint at {done:,} of {cfg.total_iterations:,} iterations is not here (lost with the "
                     "machine that held it): it restarts from the beginning when trained next")
        else:
            state = f"checkpoint at {done:,} of {cfg.total_iterations:,} iterations{ahead}"
        moved, restarted = device_history(run.meta), restart_history(run.meta)
        lines.append(f"- {run.meta['name']}: {run.meta['status']}, {state}{so_far}"
                     + (f"; trained on {moved}" if moved else "") + (f"; {restarted}" if restarted else ""))
    return lines


def cost_markdown(benchmarks: str | Path = "benchmarks") -> str:
    """What the ten-network study costs, as measured by benchmarks/study_cost.py (its JSON summaries)."""
    import json

    rows = []
    for path in sorted(Path(benchmarks).glob("study_cost_*.json")):
        s = json.loads(path.read_text())
        rows.append({"device": s["device"], "precision": s["precision"], "networks": s["networks"],
                     "hours, paper's schedule": f"{s['hours_paper_schedule']:.1f}",
                     "hours, 1/8 schedule": f"{s['hours_1of8_schedule']:.1f}",
                     "measured": f"{s['date']}, torch {s['torch']}, [details]({Path(benchmarks).name}/{s['details']})"})
    if not rows:
        return ""
    return ("What the study costs, one network at a time (`python -m benchmarks.study_cost`: a few timed iterations "
            "and a timed evaluation per network, as the notebook prints before its sweep):\n\n" + markdown_table(rows))


def results_markdown(results_dir: str | Path = "results", assets: str | Path = "assets",
                     benchmarks: str | Path = "benchmarks") -> str:
    """What the study costs, then every study under ``results_dir``: its Figure 6, error table, the paper's claims
    checked, runs in progress."""
    cost = cost_markdown(benchmarks)
    every = load_runs(results_dir, finished_only=False)
    parts = [cost] if cost else []
    if not every:
        return "\n\n".join(parts + ["No run has been trained yet."])
    for study, runs in by_study(every).items():
        finished = [r for r in runs if r.meta["status"] == "finished"]
        devices = sorted({r.meta["device_name"] for r in finished or runs})  # what the results shown came from
        parts.append(f"### {study_label(runs[0].config)}\n\n"
                     f"`{Path(results_dir).name}/{study}/`, data source `{runs[0].meta['data_source']}`, "
                     f"{'finished runs ' if finished else ''}trained on {', '.join(devices)}.")
        if finished:
            parts[-1] += (f" Its {len(finished)} finished run{'s' if len(finished) > 1 else ''} trained for "
                          f"{_duration(sum(r.meta['wall_s'] for r in finished))} in all (`wall_s` in run.json, summed: "
                          "runs that trained at the same time, sharing a device, each count their whole time).")
            figure = Path(assets) / f"figure6-{study}.png"
            table = error_table(finished).drop(columns=["schedule", "iterations", "precision", "data"])
            lines = [line.strip() for line in findings(finished)[1:]] + _beside_peers(finished, benchmarks)
            lines += [f"{r.meta['name']} trained on {device_history(r.meta)} (each move re-seeds its sampler: "
                      "`reseeded` in its run.json)" for r in finished if device_history(r.meta)]
            lines += [f"{r.meta['name']} {restart_history(r.meta)}" for r in finished if restart_history(r.meta)]
            parts.append(f"![Figure 6, {study}]({figure.as_posix()})\n\n{markdown_table(table.to_dict('records'))}\n\n"
                         + "\n".join(f"- {line}" for line in lines))
            figure7 = Path(assets) / f"figure7-{study}.png"
            if figure7.exists():
                parts.append(f"![Figure 7, {study}]({figure7.as_posix()})\n\nFigure 7 (`python -m resnet plot`): the "
                             "std of each 3x3 layer's responses on the test images, after BN and before the addition "
                             "and ReLU, for the networks of the paper's Figure 7 finished in this study."
                             + "".join(f"\n- {line}" for line in _figure7_lines(figure7, finished)))
        progress = _in_progress(runs)
        if progress:
            parts.append("In progress:\n\n" + "\n".join(progress))
    return "\n\n".join(parts)


def _figure7_lines(figure: Path, finished) -> list[str]:
    """The paper's Figure 7 findings, checked on the numbers saved beside the figure, if they are of the finished
    runs' weights as run.json records them; otherwise what is wrong with them."""
    from .compare import response_findings
    from .figures import figure7_runs, read_figure7_numbers

    numbers_path = figure.with_suffix(".json")
    if not numbers_path.exists():
        return [f"its numbers are not saved ({numbers_path.name} is missing): run `python -m resnet plot`"]
    networks = read_figure7_numbers(numbers_path)["networks"]
    runs = {n["run"]: n["weights_sha256"] for n in networks}
    weights = {f"{r.path.parent.name}/{r.path.name}": r.meta.get("weights_sha256") for r in finished}
    drawn = [f"{p.parent.name}/{p.name}" for p in figure7_runs(finished)[1]]
    stale = sorted(run for run, sha in runs.items() if weights.get(run) != sha)
    if stale:
        return [f"its numbers ({numbers_path.name}) are not of the weights now saved for {', '.join(stale)}: "
                "run `python -m resnet plot`"]
    if list(runs) != drawn:
        return [f"its numbers ({numbers_path.name}) are of {', '.join(runs)}, not of the runs it now draws "
                f"({', '.join(drawn)}): run `python -m resnet plot`"]
    return response_findings(networks)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def _beside_peers(runs, benchmarks: str | Path) -> list[str]:
    """For runs of the paper's protocol on a stand-in for the official images: what the peer's network, trained on
    the official images, scores on the same stand-in's test images (benchmarks/peer_on_jpeg.md), for scale."""
    import re

    from .compare import paper_protocol

    measured = {}
    for line in peer_markdown(benchmarks).splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        depth = re.search(r"resnet(\d+)", cells[0]) if len(cells) == 3 else None
        if depth:
            measured[int(depth.group(1))] = cells
    lines = []
    for run in runs:
        c = run.config
        if run.meta["data_source"] != "official" and c["net"] == "resnet" and paper_protocol(c) and c["depth"] in measured:
            name, reported, jpeg = measured[c["depth"]]
            lines.append(f"for scale: the peer's ResNet-{c['depth']} ({name}), trained on the official images "
                         f"({reported}% reported), scores {jpeg}% on these {run.meta['data_source']} test images "
                         "(benchmarks/peer_on_jpeg.md): a shift between data sets, trained on one and tested on the "
                         "other, not what training and testing on this data costs")
    return sorted(set(lines))


QUESTIONS = (  # the README's first questions, and why one is open while it is
    ("Does plain-56 train worse than plain-20 (the degradation problem)?",
     "no study has finished both plain-20 and plain-56"),
    ("Do deeper ResNets do better?", "no study has finished two ResNet depths"),
    ("How far is ResNet-20 from the paper's 8.75%?", "no ResNet-20 of the paper's protocol (its full schedule) has finished"))


def summary_markdown(results_dir: str | Path = "results", benchmarks: str | Path = "benchmarks") -> str:
    """The three questions a reader of a reproduction asks first, each answered from the finished runs of every
    study (final test errors, mean over seeds) or marked as not measured yet."""
    from .compare import PAPER_TEST_ERROR, comparable, paper_protocol

    finished = [r for r in load_runs(results_dir) if comparable(r.config)]
    degradation, deeper, resnet20 = answers = [], [], []
    for study, runs in by_study(finished).items():
        label = study_label(runs[0].config)
        errors: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for r in runs:
            errors.setdefault((r.config["net"], r.config["depth"]), []).append(
                (r.meta["final_test_error"], r.meta["final_train_error"]))
        mean = {k: tuple(sum(v) / len(v) for v in zip(*pairs)) for k, pairs in errors.items()}
        if ("plain", 20) in mean and ("plain", 56) in mean:
            (t20, tr20), (t56, tr56) = mean[("plain", 20)], mean[("plain", 56)]
            verdict = "yes" if tr56 > tr20 and t56 > t20 else "no" if tr56 <= tr20 and t56 <= t20 else "in part"
            degradation.append(f"{verdict}, in {label}: training error {tr20:.2f}% (plain-20) and {tr56:.2f}% "
                               f"(plain-56), test error {t20:.2f}% and {t56:.2f}% "
                               f"({_seeds(errors, [('plain', 20), ('plain', 56)])})")
        depths = sorted(d for n, d in mean if n == "resnet" and d != 1202)
        if len(depths) >= 2:
            tests = [mean[("resnet", d)][0] for d in depths]
            verdict = "yes" if all(a > b for a, b in zip(tests, tests[1:])) else "not at every step"
            deeper.append(f"{verdict}, in {label}: test error " + ", ".join(
                f"{t:.2f}% (ResNet-{d})" for d, t in zip(depths, tests))
                + f" ({_seeds(errors, [('resnet', d) for d in depths])})")
        for r in runs:
            if (r.config["net"], r.config["depth"]) == ("resnet", 20) and paper_protocol(r.config):
                gap = r.meta["final_test_error"] - PAPER_TEST_ERROR[("resnet", 20)]
                resnet20.append(f"{gap:+.2f} points, in {label} (seed {r.config['seed']}): "
                                f"{r.meta['final_test_error']:.2f}% on the {r.meta['data_source']} test images")
    resnet20 += [line.replace("for scale: ", "for scale, ") for line in _beside_peers(
        [r for r in finished if r.meta["data_source"] != "official" and r.config["depth"] == 20], benchmarks)]
    return "\n".join(f"- **{question}** " + ("; ".join(a) if a else f"not measured yet: {why}") + "."
                     for (question, why), a in zip(QUESTIONS, answers))


def _seeds(errors: dict, networks: list) -> str:
    """How many seeds stand behind a comparison: with one, its size cannot be told from seed noise here."""
    fewest = min(len(errors[n]) for n in networks)
    if fewest == 1:
        return "at least one network of a single seed: the spread between seeds is not measured here"
    return f"means of {fewest} seeds or more each"


def peer_markdown(benchmarks: str | Path = "benchmarks") -> str:
    """The peer's weights on the JPEG test set: the table measured by benchmarks/peer_on_jpeg.py."""
    path = Path(benchmarks) / "peer_on_jpeg.md"
    if not path.exists():
        return "Not measured yet (`python -m benchmarks.peer_on_jpeg`)."
    return "\n".join(line for line in path.read_text().splitlines() if line.startswith("|"))


def markers(section: str) -> tuple[str, str]:
    """The README's start and end markers of a generated section."""
    return f"<!-- {section}:start (python -m resnet report) -->", f"<!-- {section}:end -->"


def sections(results_dir: str | Path = "results", assets: str | Path = "assets",
             benchmarks: str | Path = "benchmarks") -> dict[str, str]:
    """Every generated section of the README, by name."""
    return {"summary": summary_markdown(results_dir, benchmarks), "peers": peer_markdown(benchmarks),
            "results": results_markdown(results_dir, assets, benchmarks)}


def update_readme(readme: str | Path = "README.md", results_dir: str | Path = "results",
                  assets: str | Path = "assets", benchmarks: str | Path = "benchmarks") -> bool:
    """Rewrite the generated sections of ``readme``; True when it changed."""
    path = Path(readme)
    text = new = path.read_text()
    for section, body in sections(results_dir, assets, benchmarks).items():
        start, end = markers(section)
        if start not in new or end not in new:
            raise ValueError(f"{path}: the markers {start!r} and {end!r} are missing")
        head, rest = new.split(start, 1)
        _, tail = rest.split(end, 1)
        new = f"{head}{start}\n{body}\n{end}{tail}"
    if new != text:
        path.write_text(new)
    return new != text
