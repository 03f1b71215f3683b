"""The generated sections of README.md (the headline study, the findings, the peer table) and of docs/results.md
(every study), made from the files in the repo: no number in them is typed by hand.

``python -m resnet report`` rewrites the parts of each file between its sections' markers (``markers``); a test
checks that the committed files match what the committed results and measurements generate.
"""
from __future__ import annotations

from pathlib import Path

from .config import TrainConfig, comparable, network_label, paper_protocol, schedule_label, study_label
from .compare import (DEEPER_RESNETS, DEGRADATION, OFFICIAL_COLUMN, claims, error_table,
                      errors_by_depth, in_trend, paired_difference, paper_gaps)
from .files import write_atomic
from .results import CHECKPOINT_FILE, by_study, load_runs

def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a GitHub markdown table."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _in_progress(runs) -> list[str]:
    """One line per unfinished run: how far its checkpoint is, and its last logged errors."""
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
            state = (f"its checkpoint at {done:,} of {cfg.total_iterations:,} iterations is missing: it restarts "
                     "from the beginning when trained next")
        else:
            state = f"checkpoint at {done:,} of {cfg.total_iterations:,} iterations{ahead}"
        lines.append(f"- {run.meta['name']}: {state}{so_far}")
    return lines


def cost_markdown(benchmarks: str | Path = "benchmarks", link: str = "") -> str:
    """What the ten-network study costs, as measured by benchmarks/study_cost.py (its JSON summaries)."""
    import json

    rows = []
    for path in sorted(Path(benchmarks).glob("study_cost_*.json")):
        s = json.loads(path.read_text())
        rows.append({"device": s["device"], "precision": s["precision"], "networks": s["networks"],
                     "hours, paper's schedule": f"{s['hours_paper_schedule']:.1f}",
                     "hours, 1/8 schedule": f"{s['hours_1of8_schedule']:.1f}",
                     "measured": f"{s['date']}, torch {s['torch']}, [details]({link}{Path(benchmarks).name}/{s['details']})"})
    if not rows:
        return ""
    return ("What the study costs, one network at a time (`python -m benchmarks.study_cost`: a few timed iterations "
            "and a timed evaluation per network, as the notebook prints before its sweep):\n\n" + markdown_table(rows))


def results_markdown(results_dir: str | Path = "results", assets: str | Path = "assets",
                     benchmarks: str | Path = "benchmarks", link: str = "") -> str:
    """What the study costs, then every study under ``results_dir``: its Figure 6, error table, the paper's claims
    checked, its Figure 7, runs in progress. Figures are linked as ``link`` + their path (``"../"`` from docs/)."""
    cost = cost_markdown(benchmarks, link)
    every = load_runs(results_dir, finished_only=False)
    parts = [cost] if cost else []
    if not every:
        return "\n\n".join(parts + ["No run has been trained yet."])
    for study, runs in by_study(every).items():
        finished = [r for r in runs if r.meta["status"] == "finished"]
        devices = sorted({d for r in finished or runs for d in r.devices})  # what the results shown came from
        parts.append(f"### {study_label(runs[0].config)}\n\n"
                     f"`{Path(results_dir).name}/{study}/`, data source `{runs[0].meta['data_source']}`, "
                     f"{'finished runs ' if finished else ''}trained on {', '.join(devices)}.")
        if finished:
            parts[-1] += (f" Its {len(finished)} finished run{'s' if len(finished) > 1 else ''} trained for "
                          f"{_duration(sum(r.meta['wall_s'] for r in finished))} in all (`wall_s` summed).")
            if not any(paper_protocol(r.config) for r in finished):
                parts[-1] += " Not the paper's protocol: its claims are checked, its numbers are not compared."
            figure = Path(assets) / f"figure6-{study}.png"
            parts.append(f"![Figure 6, {study}]({link}{figure.as_posix()})\n\n"
                         + markdown_table(_table(finished, benchmarks=benchmarks)))
            claims = _claims_table([r for r in finished if comparable(r.config)])
            if claims:
                parts.append(claims)
            peers = _beside_peers(finished, benchmarks) + official_comparisons(finished, benchmarks)
            if peers:
                parts.append("\n".join(f"- {line}" for line in peers))
            figure7 = Path(assets) / f"figure7-{study}.png"
            if figure7.exists():
                parts.append(f"![Figure 7, {study}]({link}{figure7.as_posix()})\n\nFigure 7: the std of each 3x3 "
                             "layer's responses on the test images, after BN and before the addition and ReLU."
                             + "".join(f"\n- {line}" for line in _figure7_lines(figure7, finished)))
        progress = _in_progress(runs)
        if progress:
            parts.append("In progress:\n\n" + "\n".join(progress))
    return "\n\n".join(parts)


def _table(finished, peers: bool = False, benchmarks: str | Path = "benchmarks") -> list[dict]:
    """The error table's rows for markdown, without the columns the study's heading already says; with each
    network's error on official test images 0–999 where it is measured."""
    table = error_table(finished, peers=peers, official=official_errors(finished, benchmarks)).drop(
        columns=["schedule", "iterations", "precision", "data"])
    unused = [c for c in ("paper", "vs paper, points", OFFICIAL_COLUMN) if c in table and not table[c].any()]
    return table.drop(columns=unused).to_dict("records")


def _claims_table(finished) -> str:
    """The paper's depth claims, checked on test and training error, as a table."""
    rows: dict[str, dict] = {}
    for c in claims(finished).itertuples():
        rows.setdefault(c.claim, {"the paper's claim": c.claim})[f"{c.error} error"] = (
            f"{'holds' if c.holds else 'does not hold'} ({errors_by_depth(c)})")
    return markdown_table(list(rows.values())) if rows else ""


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
    peers = peers_on_jpeg(benchmarks)
    by_depth = {(p["net"], p["depth"]): p for p in (peers or {}).get("peers", [])}
    lines = []
    for run in runs:
        c = run.config
        peer = by_depth.get((c["net"], c["depth"]))
        if run.meta["data_source"] != "official" and peer and paper_protocol(c):
            lines.append(f"for scale: the peer's ResNet-{c['depth']} ({peer['weights']}), trained on the official "
                         f"images ({peer['reported']}% reported), scores {peer['error']:.2f}% on these "
                         f"{run.meta['data_source']} test images (benchmarks/peer_on_jpeg.md): a shift between data "
                         "sets, trained on one and tested on the other, not what training and testing on this data costs")
    return sorted(set(lines))


OFFICIAL_IMAGES = "official_images.json"  # benchmarks/official_images.py: every committed run on official test images


def _benchmark_json(benchmarks: str | Path, name: str) -> dict | None:
    """A benchmark's JSON summary under ``benchmarks``, or None before it is measured."""
    import json

    path = Path(benchmarks) / name
    return json.loads(path.read_text()) if path.exists() else None


def official_images(benchmarks: str | Path = "benchmarks") -> dict | None:
    """What benchmarks/official_images.py measured (the committed runs and the peer's networks on official test
    images 0–999, each with its error and wrong images), or None before it is measured."""
    return _benchmark_json(benchmarks, OFFICIAL_IMAGES)


def _scored(runs, benchmarks) -> tuple[dict | None, dict[str, dict]]:
    """The official-images measurement and its entries for ``runs``, by "study/name", of the weights now saved
    (a run retrained since it was scored is left out: scored again by ``python -m benchmarks.official_images``)."""
    scores = official_images(benchmarks)
    if scores is None:
        return None, {}
    saved = {f"{r.study}/{r.path.name}": r.meta.get("weights_sha256") for r in runs}
    return scores, {e["run"]: e for e in scores["runs"] if saved.get(e["run"]) == e["weights_sha256"]}


def official_errors(runs, benchmarks: str | Path = "benchmarks") -> dict[str, float]:
    """Each run's error on official test images 0–999, by "study/name", where it is measured of its weights."""
    return {key: entry["error"] for key, entry in _scored(runs, benchmarks)[1].items()}


def official_comparisons(runs, benchmarks: str | Path = "benchmarks") -> list[str]:
    """For each ResNet of the paper's protocol at a depth of the peer's networks: it and the peer's network,
    trained on the official images, on the same official test images 0–999, paired over the images."""
    scores, scored = _scored(runs, benchmarks)
    if scores is None:
        return []
    n, lines = scores["images"]["n"], []
    for run in sorted(runs, key=lambda r: (r.config["depth"], r.config["seed"])):
        c, entry = run.config, scored.get(f"{run.study}/{run.path.name}")
        peer = next((p for p in scores["peers"] if (p["net"], p["depth"]) == (c["net"], c["depth"])), None)
        if entry is None or peer is None or not paper_protocol(c):
            continue
        d = paired_difference(entry["wrong"], peer["wrong"], n)
        verdict = "distinguishable" if d["low"] > 0 or d["high"] < 0 else "not distinguishable"
        lines.append(
            f"on {scores['images']['what']} (n = {n:,}): {run.meta['name']} (trained on {run.meta['data_source']}) "
            f"{entry['error']:.1f}%, the peer's ResNet-{c['depth']} ({peer['weights']}, trained on the official "
            f"images) {peer['error']:.1f}%: {d['difference']:+.1f} points (95% interval {d['low']:+.1f} to "
            f"{d['high']:+.1f}, paired over the images; McNemar p = {d['p']:.2g}), {verdict} "
            "(benchmarks/official_images.md)")
    return lines


def _short_label(config: dict) -> str:
    """A study in a few words: "the paper's schedule (cifar10-jpeg, bf16)", "the 1/8 schedule (official, fp32)"."""
    cfg = TrainConfig.from_dict(config)
    sched = "the paper's schedule" if schedule_label(cfg.schedule) == "full" else f"the {schedule_label(cfg.schedule)} schedule"
    return f"{sched} ({study_label(config).split(', ', 1)[0].removeprefix('data ')}, {cfg.precision})"


def summary_markdown(results_dir: str | Path = "results", benchmarks: str | Path = "benchmarks") -> str:
    """The findings a reader of a reproduction looks for first, in a few sentences, from every study's finished
    runs (final test errors, mean over seeds): the degradation problem, deeper ResNets better, the distance to the
    paper with what the data says about it, and how many seeds stand behind them; each marked open while it is."""
    finished = [r for r in load_runs(results_dir) if comparable(r.config)]
    checked, gaps = claims(finished), paper_gaps(finished)
    labels = {study: _short_label(runs[0].config) for study, runs in by_study(finished).items()}
    degradation, deeper, distance, seeds = [], [], [], set()
    for study, label in labels.items():
        own = checked[checked.study == study].set_index(["claim", "error"])
        if (DEGRADATION, "test") in own.index:
            test, training = own.loc[(DEGRADATION, "test")], own.loc[(DEGRADATION, "training")]
            verdict = "yes" if test.holds and training.holds else "no" if not (test.holds or training.holds) else "in part"
            degradation.append(f"{verdict} at {label}, training error " + ", ".join(
                f"{e:.2f}% for plain-{d}" for d, e in zip(training.depths, training.errors)) + ", test error "
                + ", ".join(f"{e:.2f}%" for e in test.errors))
            seeds.add(test.seeds)
        if (DEEPER_RESNETS, "test") in own.index:
            test = own.loc[(DEEPER_RESNETS, "test")]
            deeper.append(f"{'yes' if test.holds else 'not at every step'} at {label}, test error " + ", ".join(
                f"{e:.2f}% for ResNet-{d}" for d, e in zip(test.depths, test.errors)))
            seeds.add(test.seeds)
        own_gaps = gaps[(gaps.study == study) & gaps.paper.notna()]
        if not own_gaps.empty:
            distance.append(f"at {label}: " + ", ".join(
                f"{g.network} {g.difference:+.2f}" for g in own_gaps.itertuples()) + " points")
            seeds.update(own_gaps.seeds)
    sentences = [
        "**The degradation problem** (deeper plain nets train worse): "
        + ("; ".join(degradation) if degradation else "not measured yet, no study has finished two plain depths")
        + ".",
        "**Deeper ResNets do better**: "
        + ("; ".join(deeper) if deeper else "not measured yet, no study has finished two ResNet depths") + ".",
        "**Distance to the paper** (final test error minus the paper's): "
        + ("; ".join(distance) if distance else "not measured yet, no run of the paper's protocol (its full "
                                                 "schedule) has finished") + "."]
    stand_in = sorted({r.meta["data_source"] for r in finished if r.meta["data_source"] != "official"
                       and paper_protocol(r.config)})
    official = official_comparisons(finished, benchmarks)
    if distance and stand_in:
        peer = [line for line in _beside_peers([r for r in finished if r.config["depth"] == 20
                                                and r.meta["data_source"] in stand_in], benchmarks)]
        sentences.append(
            f"**The data**: these runs trained and were tested on {', '.join(stand_in)}, not the official images, so "
            "a gap to the paper mixes what the data loses with what the reproduction may miss; only a run trained on "
            "the official data separates the two" + (", though the same networks on official test images (below) "
                                                     "show what the test images alone account for" if official else "")
            + "." + (f" For scale, {peer[0].removeprefix('for scale: ')}." if peer else ""))
    if official:
        sentences.append("**On official test images** (0–999, lossless, n = 1,000; scored, never trained on): "
                         + "; ".join(line.split(": ", 1)[1].removesuffix(" (benchmarks/official_images.md)")
                                     for line in official) + ".")
    if seeds:
        spread = _seed_spread(finished, labels)
        if min(seeds) > 1:
            sentences.append(f"**Seeds**: means of {min(seeds)} seeds or more per network" + (": " if spread else "")
                             + "; ".join(spread) + ".")
        elif spread:
            sentences.append("**Seeds**: " + "; ".join(spread) + "; every other network one seed: its spread between "
                             "seeds is not measured yet.")
        else:
            sentences.append("**Seeds**: one seed for at least one of these networks: the spread between seeds is "
                             "not measured yet.")
    return "\n".join(f"- {sentence}" for sentence in sentences)


def _seed_spread(finished, labels: dict[str, str]) -> list[str]:
    """Each network trained with two seeds or more, study by study: how far apart its seeds' final test errors are
    (mean ± sample std, lowest to highest)."""
    import statistics

    lines = []
    for study, runs in by_study(finished).items():
        errors: dict[tuple[str, int], tuple[str, list[float]]] = {}
        for run in runs:
            key = (run.config["net"] != "resnet", run.config["depth"])
            errors.setdefault(key, (network_label(run.config), []))[1].append(run.meta["final_test_error"])
        lines += [f"{name} at {labels[study]}, {len(e)} seeds, final test error {statistics.mean(e):.2f} ± "
                  f"{statistics.stdev(e):.2f}% (mean ± std; {min(e):.2f} to {max(e):.2f}%)"
                  for _, (name, e) in sorted(errors.items()) if len(e) > 1]
    return lines


def headline_study(results_dir: str | Path = "results") -> str | None:
    """The study the README leads with: of those with finished runs of the paper's protocol, the one on the
    official data if any, else the one with the most such runs; None before any has finished."""
    finished = [r for r in load_runs(results_dir) if paper_protocol(r.config)]
    studies = by_study(finished)
    if not studies:
        return None
    return max(studies, key=lambda s: (studies[s][0].meta["data_source"] == "official", len(studies[s]), s))


def headline_markdown(results_dir: str | Path = "results", assets: str | Path = "assets",
                      benchmarks: str | Path = "benchmarks") -> str:
    """The README's lead: the headline study's Figure 6 and its error table beside the paper and the peers, and
    its runs still training."""
    study = headline_study(results_dir)
    if study is None:
        return "No run of the paper's protocol has finished yet: see [docs/results.md](docs/results.md)."
    every = by_study(load_runs(results_dir, finished_only=False))[study]
    finished = [r for r in every if r.meta["status"] == "finished"]
    cfg = TrainConfig.from_dict(finished[0].config)
    source = finished[0].meta["data_source"]
    data = "the official CIFAR-10 images" if source == "official" else f"`{source}` (a lossy stand-in, see *The data*)"
    rows = [{k: v for k, v in row.items() if k != "params"} for row in _table(finished, True, benchmarks)]
    official = (f" The column *{OFFICIAL_COLUMN}*: the same weights on the only official CIFAR-10 pixels this "
                "project has, official test images 0–999 (lossless, n = 1,000; scored, never trained on; "
                "[benchmarks/official_images.md](benchmarks/official_images.md)).") if OFFICIAL_COLUMN in rows[0] else ""
    apart = (" Figure 6 leaves plain-110 out, as the paper does; the table gives it."
             if any(r.config["net"] == "plain" and not in_trend("plain", r.config["depth"]) for r in finished) else "")
    running = [r for r in every if r.meta["status"] != "finished"]
    progress = ("Still training: " + ", ".join(f"{r.meta['name']} ({r.meta['iterations_done']:,} of "
                                               f"{TrainConfig.from_dict(r.config).total_iterations:,} iterations)"
                                               for r in running) + ".\n\n") if running else ""
    return (f"The paper's schedule ({cfg.total_iterations:,} iterations), {cfg.precision}, trained and tested on "
            f"{data}: {len(finished)} run{'s' if len(finished) > 1 else ''} finished (`results/{study}/`).\n\n"
            f"![Figure 6, {study}]({Path(assets).as_posix()}/figure6-{study}.png)\n\n{markdown_table(rows)}\n\n"
            "Final test error in %; over several seeds, mean ± std and the best seed's, as the paper gives "
            "ResNet-110's; the peers' as they report them on the official test images (the first two at "
            f"their best epoch).{official}{apart} {progress}Every study, its claims checked, Figure 7 and what it "
            "costs: [docs/results.md](docs/results.md).")


def peers_on_jpeg(benchmarks: str | Path = "benchmarks") -> dict | None:
    """What benchmarks/peer_on_jpeg.py measured (the peer's networks on the JPEG stand-in's test images), or None
    before it is measured."""
    return _benchmark_json(benchmarks, "peer_on_jpeg.json")


def peer_rows(summary: dict) -> list[dict]:
    """The peer table's rows: each network's reported error on the official test set and its error measured."""
    data = summary["data"]
    return [{"weights": p["weights"], "reported error % (official test set)": p["reported"],
             f"measured error % ({data['source']}, {data['n']} images)": f"{p['error']:.2f}"} for p in summary["peers"]]


def peer_markdown(benchmarks: str | Path = "benchmarks") -> str:
    """The peer's weights on the JPEG test set, as measured by benchmarks/peer_on_jpeg.py."""
    peers = peers_on_jpeg(benchmarks)
    return markdown_table(peer_rows(peers)) if peers else "Not measured yet (`python -m benchmarks.peer_on_jpeg`)."


def markers(section: str) -> tuple[str, str]:
    """A generated section's start and end markers."""
    return f"<!-- {section}:start (python -m resnet report) -->", f"<!-- {section}:end -->"


README, RESULTS_PAGE = "README.md", "docs/results.md"
SECTION_FILES = {"headline": README, "summary": README, "peers": README, "results": RESULTS_PAGE}


def sections(results_dir: str | Path = "results", assets: str | Path = "assets",
             benchmarks: str | Path = "benchmarks") -> dict[str, str]:
    """Every generated section, by name (``SECTION_FILES`` says in which file)."""
    return {"headline": headline_markdown(results_dir, assets, benchmarks), "summary": summary_markdown(results_dir, benchmarks),
            "peers": peer_markdown(benchmarks), "results": results_markdown(results_dir, assets, benchmarks, "../")}


def update_reports(root: str | Path = ".", results_dir: str | Path = "results", assets: str | Path = "assets",
                   benchmarks: str | Path = "benchmarks") -> list[Path]:
    """Rewrite the generated sections of README.md and docs/results.md under ``root``, each file whole; return
    the files that changed."""
    bodies = sections(results_dir, assets, benchmarks)
    changed = []
    for name in dict.fromkeys(SECTION_FILES.values()):
        path = Path(root) / name
        text = new = path.read_text()
        for section, file in SECTION_FILES.items():
            if file != name:
                continue
            start, end = markers(section)
            if start not in new or end not in new:
                raise ValueError(f"{path}: the markers {start!r} and {end!r} are missing")
            head, rest = new.split(start, 1)
            _, tail = rest.split(end, 1)
            new = f"{head}{start}\n{bodies[section]}\n{end}{tail}"
        if new != text:
            write_atomic(new, path)
            changed.append(path)
    return changed
