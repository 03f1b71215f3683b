"""Our runs beside the paper's: its numbers and protocol, which runs are comparable, the error table (Table 6)
and the paper's claims checked, study by study."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .config import (TrainConfig, comparable, identity_fields, network_label, paper_protocol, schedule_label,
                     study_label)
from .results import Run, by_study

if TYPE_CHECKING:  # pandas is imported where tables are made: loading a model needs torch alone
    import pandas as pd

# He et al. 2016, Table 6 (ResNets) and the plain-net final test errors read off Figure 6 (approximate; not printed
# in the paper). ResNet-110 is the only network the paper ran five times: its mean ± std of the five is what a mean
# over seeds is compared with, and its best run (6.43) what a best run is.
PAPER_TEST_ERROR = {("resnet", 20): 8.75, ("resnet", 32): 7.51, ("resnet", 44): 7.17, ("resnet", 56): 6.97,
                    ("resnet", 110): 6.61, ("resnet", 1202): 7.93,
                    ("plain", 20): 9.7, ("plain", 32): 10.1, ("plain", 44): 11.4, ("plain", 56): 13.2}
# Of plain-110 the paper says only that its error is above 60% (and leaves it out of Figure 6).
PAPER_TEST_ERROR_ABOVE = {("plain", 110): 60.0}
PAPER_STD = {("resnet", 110): 0.16}  # over its 5 runs
PAPER_BEST = {("resnet", 110): 6.43}  # the best of its 5 runs
# What peers report on official CIFAR-10 (../shared/PAPER.md); the first two pick the best test epoch.
PEER_TEST_ERROR = {
    "akamaster (best epoch, 200 ep.)": {("resnet", 20): 8.27, ("resnet", 32): 7.37, ("resnet", 44): 6.90,
                                        ("resnet", 56): 6.61, ("resnet", 110): 6.32},
    "a-martyn (best epoch, 164 ep.)": {("resnet", 20): 8.0, ("resnet", 32): 7.51, ("resnet", 44): 7.38,
                                       ("resnet", 56): 7.33, ("plain", 20): 9.5, ("plain", 32): 9.92,
                                       ("plain", 44): 11.35, ("plain", 56): 12.76},
    "nabla0001 (final, mean of 5)": {("resnet", 20): 8.51, ("resnet", 56): 7.40, ("resnet", 110): 7.14,
                                     ("plain", 20): 9.78, ("plain", 56): 12.95},
}


def in_trend(net: str, depth: int) -> bool:
    """Whether a network belongs to the paper's depth trends (Figure 6's plain and ResNet panels, the claims):
    not plain-110 (the paper leaves it out, above 60% error) nor ResNet-1202 (overfitting, its own panel)."""
    return not (net == "plain" and depth == 110) and not (net == "resnet" and depth == 1202)


def one_per_network(runs: list[Run], key: Callable[[dict], object] = lambda c: (c["net"], c["depth"])) -> dict:
    """One run per ``key`` of its settings (default: per network): the lowest seed, the one a figure draws."""
    chosen = {}
    for run in sorted(runs, key=lambda r: r.config["seed"]):
        chosen.setdefault(key(run.config), run)
    return chosen


def _mean_std(values: list[float]) -> str:
    import pandas as pd

    s = pd.Series(values)
    return f"{s.mean():.2f}" if len(s) == 1 else f"{s.mean():.2f} ± {s.std(ddof=1):.2f}"


def _mean_std_best(values: list[float]) -> str:
    """Final test errors as the paper gives ResNet-110's: '6.61 ± 0.16, best 6.43' (one seed: its error)."""
    return _mean_std(values) + (f", best {min(values):.2f}" if len(values) > 1 else "")


OFFICIAL_COLUMN = "test error % (official images 0–999)"


def error_table(runs: list[Run], peers: bool = False, official: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per network: final test error (mean ± std over seeds, and the best seed's), best-epoch error (labelled), the paper's
    number and the gap to it (runs of the paper's protocol only; ResNet-110's mean against the paper's mean).
    With ``official`` (a run's "study/name" to its error on official test images 0–999, as
    benchmarks/official_images.py measures it; see ``report.official_errors``), that error too, in a column of its
    own (mean over the seeds scored)."""
    import pandas as pd

    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        c, cfg = run.config, TrainConfig.from_dict(run.config)
        # seeds of one network: runs equal in every setting of their identity but the seed (and the data's path)
        same = repr([getattr(cfg, f) for f in identity_fields() if f not in ("seed", "data")])
        key = (run.study, c["net"] != "resnet", c["depth"], c["shortcut"], c.get("val_size", 0), same,
               run.meta["data_source"])
        groups.setdefault(key, []).append(run)
    records = []
    for key in sorted(groups):
        group = groups[key]
        c = group[0].config
        cfg = TrainConfig.from_dict(c)
        paper = PAPER_TEST_ERROR.get((c["net"], c["depth"])) if paper_protocol(c) else None
        above = PAPER_TEST_ERROR_ABOVE.get((c["net"], c["depth"])) if paper_protocol(c) else None
        record = {
            "network": network_label(c),
            "settings": own_settings(cfg),
            "params": group[0].meta["parameters"],
            "seeds": len(group),
            "schedule": schedule_label(cfg.schedule),
            "iterations": cfg.total_iterations,
            "precision": cfg.precision,
            "test error % (final)": _mean_std_best([r.meta["final_test_error"] for r in group]),
            "train error % (final)": _mean_std([r.meta["final_train_error"] for r in group]),
            "test error % (best epoch, test-picked)": _mean_std([r.meta["best_test_error"] for r in group]),
            "paper": (paper_number(c["net"], c["depth"]) if paper is not None
                      else f"> {above:.0f}" if above is not None else ""),
            "vs paper, points": "" if paper is None else (
                f"{sum(r.meta['final_test_error'] for r in group) / len(group) - paper:+.2f}"),
            "data": ", ".join(sorted({r.meta["data_source"] for r in group})),
        }
        if official:
            scored = [official[key] for r in group if (key := f"{r.study}/{r.path.name}") in official]
            record[OFFICIAL_COLUMN] = _mean_std(scored) if scored else ""
        if peers:
            for peer, values in PEER_TEST_ERROR.items():
                v = values.get((c["net"], c["depth"])) if paper is not None else None
                record[peer] = "" if v is None else f"{v:.2f}"
        records.append(record)
    table = pd.DataFrame.from_records(records)
    if not table.empty and not table["settings"].any():
        table = table.drop(columns="settings")  # all of the paper's: nothing to say
    return table


def paper_number(net: str, depth: int) -> str:
    """The paper's test error of a network as the table shows it: '13.20~' (read off Fig. 6), '6.61 ± 0.16, best 6.43'."""
    text = f"{PAPER_TEST_ERROR[(net, depth)]:.2f}" + ("~" if net == "plain" else "")
    if (net, depth) in PAPER_STD:
        text += f" ± {PAPER_STD[(net, depth)]:.2f}, best {PAPER_BEST[(net, depth)]:.2f}"
    return text


# shown elsewhere in a table row (network, seeds, schedule, precision, data) or not about what is trained
_SHOWN = ("net", "depth", "shortcut", "seed", "data", "schedule", "precision", "val_size")


def own_settings(cfg: TrainConfig) -> str:
    """The settings of a run's identity that differ from the paper's, e.g. 'lr 0.05, batch_size 64'."""
    paper = TrainConfig()
    return ", ".join(f"{f} {getattr(cfg, f)}" for f in identity_fields()
                     if f not in _SHOWN and getattr(cfg, f) != getattr(paper, f))


def format_table(df: pd.DataFrame) -> str:
    """Stable plain text for the notebook, the README and regression checks."""
    if df.empty:
        return "(no finished runs)"
    return df.to_string(index=False)


DEGRADATION, DEEPER_RESNETS = "deeper plain nets are worse (degradation)", "deeper ResNets are better"
CLAIM_COLUMNS = ["study", "claim", "error", "depths", "errors", "seeds", "holds"]
GAP_COLUMNS = ["study", "net", "depth", "network", "seeds", "error", "best", "paper", "difference", "paper_above"]


def claims(runs: list[Run]) -> pd.DataFrame:
    """The paper's depth claims checked, study by study, on the finished plain and option-A runs: one row per
    study, claim (``DEGRADATION``, ``DEEPER_RESNETS``) with two depths or more, and error ('test', 'training'),
    with the depths in order, their final errors (mean over seeds), the fewest seeds behind one of them, and
    whether the errors fall (ResNets) or rise (plain nets) at every step. The findings, the results page and the
    README render this table; nothing else checks a claim."""
    import pandas as pd

    rows = []
    for study, study_runs in by_study([r for r in runs if comparable(r.config)]).items():
        mean, seeds = _mean_errors(study_runs)
        for net, claim in (("plain", DEGRADATION), ("resnet", DEEPER_RESNETS)):
            depths = tuple(sorted(d for n, d in mean if n == net and in_trend(n, d)))
            if len(depths) < 2:
                continue
            for what, i in (("test", 0), ("training", 1)):
                errors = tuple(mean[(net, d)][i] for d in depths)
                pairs = list(zip(errors, errors[1:]))
                holds = all(a < b for a, b in pairs) if net == "plain" else all(a > b for a, b in pairs)
                rows.append([study, claim, what, depths, errors, min(seeds[(net, d)] for d in depths), holds])
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def paper_gaps(runs: list[Run]) -> pd.DataFrame:
    """Each network of the paper's protocol beside the paper's number, study by study: its final test error (mean
    over seeds) and best run, the paper's number (or, for plain-110, the error the paper says it is above) and the
    difference in points; networks the paper gives no number for are left out."""
    import pandas as pd

    rows = []
    for study, study_runs in by_study([r for r in runs if comparable(r.config) and paper_protocol(r.config)]).items():
        mean, seeds = _mean_errors(study_runs)
        for (net, depth), (test, _) in sorted(mean.items(), key=lambda kv: (kv[0][0] != "resnet", kv[0][1])):
            paper, above = PAPER_TEST_ERROR.get((net, depth)), PAPER_TEST_ERROR_ABOVE.get((net, depth))
            if paper is None and above is None:
                continue
            best = min(r.meta["final_test_error"] for r in study_runs if (r.config["net"], r.config["depth"]) == (net, depth))
            rows.append([study, net, depth, f"{'ResNet' if net == 'resnet' else 'plain'}-{depth}", seeds[(net, depth)],
                         test, best, paper, None if paper is None else test - paper, above])
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def _mean_errors(runs: list[Run]) -> tuple[dict[tuple[str, int], tuple[float, float]], dict[tuple[str, int], int]]:
    """(final test error, final training error) per (net, depth), each the mean over the network's seeds; and the
    number of seeds."""
    final: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for run in runs:
        final.setdefault((run.config["net"], run.config["depth"]), []).append(
            (run.meta["final_test_error"], run.meta["final_train_error"]))
    return ({k: (sum(t for t, _ in v) / len(v), sum(tr for _, tr in v) / len(v)) for k, v in final.items()},
            {k: len(v) for k, v in final.items()})


def errors_by_depth(row) -> str:
    """A claim's errors as '20: 13.59, 56: 16.58'."""
    return ", ".join(f"{d}: {e:.2f}" for d, e in zip(row.depths, row.errors))


def findings(runs: list[Run]) -> list[str]:
    """The paper's claims checked, study by study, against finished plain/option-A runs (final errors, mean over
    seeds); the difference from the paper's numbers only for runs of the paper's protocol (``claims`` and
    ``paper_gaps``, as lines)."""
    checked, gaps, lines = claims(runs), paper_gaps(runs), []
    for study, study_runs in by_study([r for r in runs if comparable(r.config)]).items():
        lines.append(f"{study_label(study_runs[0].config)}:")
        own = gaps[gaps.study == study]
        if own.empty:
            lines.append("  not the paper's protocol (its schedule, optimiser and data counts): its claims are "
                         "checked, its numbers are not compared")
        lines += ["  " + _gap_line(gap) for gap in own.sort_values(["net", "depth"]).itertuples()]
        lines += [f"  {c.claim}, {c.error} error: {'holds' if c.holds else 'does not hold'} ({errors_by_depth(c)})"
                  for c in checked[checked.study == study].itertuples()]
    return lines or ["no finished runs to compare with the paper"]


def _gap_line(gap) -> str:
    """One network against the paper's number: ResNet-110 as the paper's mean of 5 and best run, plain-110
    against the error the paper says it is above, the others against the paper's number."""
    import pandas as pd

    key = (gap.net, gap.depth)
    if pd.notna(gap.paper_above):  # the paper gives a bound only
        return (f"{gap.network}: {gap.error:.2f}%; the paper reports only that it is above {gap.paper_above:.0f}% "
                f"(left out of Fig. 6): {'holds' if gap.error > gap.paper_above else 'does not hold'}")
    if key in PAPER_BEST:
        several = gap.seeds > 1
        return (f"{gap.network}: {'mean of ' + str(gap.seeds) + ' runs ' if several else 'one run, '}{gap.error:.2f}% "
                f"vs the paper's mean of 5, {gap.paper:.2f} ± {PAPER_STD[key]:.2f}%, {gap.difference:+.2f} points"
                + (f"; best run {gap.best:.2f}% vs its best {PAPER_BEST[key]:.2f}%, {gap.best - PAPER_BEST[key]:+.2f} "
                   "points" if several else ""))
    approx = " (read off Fig. 6)" if gap.net == "plain" else ""
    return f"{gap.network}: {gap.error:.2f}% vs paper {gap.paper:.2f}%{approx}, {gap.difference:+.2f} points"


def paired_difference(wrong_a: list[int], wrong_b: list[int], n: int) -> dict:
    """Two networks scored on the same ``n`` images (each given by the positions of the images it gets wrong): the
    difference of their errors in points (a minus b) with a 95% interval from the paired differences (normal
    approximation), the images only one of them gets wrong, and McNemar's exact two-sided p-value."""
    import math

    a, b = set(wrong_a), set(wrong_b)
    only_a, only_b = len(a - b), len(b - a)
    diff = (only_a - only_b) / n
    var = ((only_a + only_b) - n * diff ** 2) / (n - 1)  # sample variance of the per-image differences in {-1, 0, 1}
    half = 1.96 * math.sqrt(max(var, 0.0) / n)
    k, m = min(only_a, only_b), only_a + only_b
    p = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m) if m else 1.0
    return {"difference": 100 * diff, "low": 100 * (diff - half), "high": 100 * (diff + half),
            "only_a": only_a, "only_b": only_b, "p": p}


def response_findings(networks: list[dict]) -> list[str]:
    """The paper's Figure 7 findings checked on each network's std per 3x3 layer (``figure7_data``'s "networks":
    net, depth, std), summarised by the mean over the layers: ResNets respond less than plain nets of their depth,
    and deeper ResNets respond less."""
    mean = {(n["net"], n["depth"]): sum(n["std"]) / len(n["std"]) for n in networks}
    measure = "Fig. 7, mean over the 3x3 layers of their responses' std"
    lines = []
    paired = sorted(d for net, d in mean if net == "resnet" and ("plain", d) in mean)
    if paired:
        holds = all(mean[("resnet", d)] < mean[("plain", d)] for d in paired)
        seq = "; ".join(f"{d}: plain {mean[('plain', d)]:.3f}, ResNet {mean[('resnet', d)]:.3f}" for d in paired)
        lines.append(f"ResNets respond less than plain nets of their depth ({measure}): "
                     f"{'holds' if holds else 'does not hold'} ({seq})")
    depths = sorted(d for net, d in mean if net == "resnet")
    if len(depths) > 1:
        holds = all(mean[("resnet", a)] > mean[("resnet", b)] for a, b in zip(depths, depths[1:]))
        seq = ", ".join(f"{d}: {mean[('resnet', d)]:.3f}" for d in depths)
        lines.append(f"deeper ResNets respond less ({measure}): {'holds' if holds else 'does not hold'} ({seq})")
    return lines
