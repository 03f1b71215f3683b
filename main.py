# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Deep Residual Learning for Image Recognition — CIFAR-10, reproduced
#
# He, Zhang, Ren, Sun, *Deep Residual Learning for Image Recognition*, CVPR 2016 (arXiv 1512.03385), section 4.2:
# plain networks and option-A ResNets of depth 6n+2 (20, 32, 44, 56, 110) on CIFAR-10, redrawn as **Figure 6** and the
# error table (**Table 6**), plus **Figure 7** (std of layer responses).
#
# **Protocol** (the library's defaults, `resnet.TrainConfig`): per-pixel mean subtraction; training augmentation
# pad 4 + random 32x32 crop + horizontal flip, per sample on the device; SGD, momentum 0.9, weight decay 1e-4,
# batch 128; lr 0.1, divided by 10 at 32k and 48k iterations, stop at 64k; ResNet-110 warms up at lr 0.01 until the
# training error is below 80%, then goes back to 0.1. Reported: test error of the model at the end of training
# (the best epoch is shown too, labelled, since peers report it).
#
# This notebook holds settings, calls, figures and tables only; everything it computes lives in `resnet/` and is
# tested there. Run top to bottom, it trains only the runs missing from `results/`, then draws every study found
# there. A **study** is one data source, one schedule and one precision; each lives in its own folder,
# `results/<data>-<schedule>-<precision>/` (e.g. `cifar10-jpeg-1of8-bf16`), so a study on other data or at another
# schedule never collides with the committed ones. The settings below come from the environment: `RESNET_DATA`,
# `RESNET_SCHEDULE` (`1/8`: the paper's schedule scaled to 8k iterations, for machines without a big GPU),
# `RESNET_PRECISION`, `RESNET_RESULTS` and `RESNET_PARALLEL` (read by `resnet.study_from_environment`, which is
# tested). Before the sweep starts, it prints what the study will cost on this machine. With `RESNET_TRAIN=0` it is
# the report: it trains nothing and draws every committed study without the data (Figure 7 from its saved numbers,
# which are of the committed weights); the outputs stored in this notebook are the report's, and the tests check
# them. With `RESNET_QUICK=1` it trains two tiny networks on a data subset on the CPU, into a temporary folder. Every
# cell runs the same code in every mode.

# %%
import resnet

study = resnet.study_from_environment()  # RESNET_DATA, _SCHEDULE, _PRECISION, _RESULTS, _PARALLEL, _TRAIN, _QUICK
print(study.describe())

# %% [markdown]
# ## What the sweep will cost on this machine
# Measured before anything trains: a few timed training iterations and a timed evaluation of each network still to
# train, times what is left of it. Finished runs cost nothing and are not timed.

# %%
# NBVAL_IGNORE_OUTPUT
# Timings differ from machine to machine.
print(resnet.format_cost(resnet.estimate_cost(study.to_train, study.results)))

# %% [markdown]
# ## The sweep
# Trains every run that is not finished in the results folder (an interrupted run resumes from its checkpoint).

# %%
metas = resnet.sweep(study.to_train, study.results, parallel=study.parallel)
for m in metas:
    print(f"{m['name']:>18}: {m['status']}, {m['iterations_done']} iterations, data: {m['data_source']}")

# %% [markdown]
# ## Figure 6, one per study
# Left: plain networks; right: ResNets (and ResNet-110 beside ResNet-1202 when it exists). Dashed: training error
# (over the augmented batches since the previous point); bold: test error. Each figure's title names its study:
# the data the curves were trained on, the schedule and the precision, read from the runs' metadata.

# %%
runs = resnet.load_runs(study.shown)
for name, study_runs in resnet.by_study(runs).items():
    print(f"{study.shown}/{name}/:", ", ".join(r.meta["name"] for r in study_runs))
    print("  trained on:", ", ".join(sorted({f"{r.meta['data_source']} ({d})" for r in study_runs for d in r.devices})))
print("" if runs else f"no finished runs in {study.shown}/ yet")

# %%
figures = resnet.plot_studies(runs, study.assets)

# %% [markdown]
# ## The error table
# Ours, study by study (final test error, mean ± std over seeds; training error; best epoch picked on the test set,
# labelled — it flatters) beside the paper (Table 6; plain nets read off Figure 6, marked ~) and what peers report
# on the official data (../shared/PAPER.md). The paper's and the peers' numbers stand only beside runs of the
# paper's protocol: its full schedule, all training images, no validation split. The column *official images
# 0–999*: the committed networks scored on official test images 0–999, lossless, the only official CIFAR-10 pixels
# this project has (scored, never trained on; `benchmarks/official_images.md`).

# %%
from resnet.report import official_comparisons, official_errors

official = official_errors(runs)
print(resnet.format_table(resnet.error_table(runs, peers=True, official=official)))

# %% [markdown]
# ## Against the paper
# Computed from the committed results, study by study: whether the paper's two claims hold — deeper plain nets are
# worse (the degradation problem, in training error as well as test error) and deeper ResNets are better — and, for
# runs of the paper's full schedule only, each network's difference from the paper's number.

# %%
print("\n".join(resnet.findings(runs) + official_comparisons(runs)))

# %% [markdown]
# Why our numbers may differ from the paper's:
# - **Data.** Without a network here, runs are trained on a JPEG re-encoding of CIFAR-10 (quality 75, 4:2:0 chroma;
#   `data_source` says so for every run). It is lossy: the peer ResNet-20 in `../shared/peers`, trained on the
#   official images, loses much of its accuracy on these test images (see `benchmarks/peer_on_jpeg.md`). The
#   table's official-images column and the paired comparisons with the peer above show the same networks on real
#   CIFAR-10 test images. Runs on the official archive (`RESNET_DATA` unset) are the comparison that counts.
# - **Reported statistic.** We report the model at the end of training, as the paper does; two of the peers report
#   the best test epoch, which is lower by construction.
# - **Seeds.** One seed per network unless the table says otherwise; the paper's ResNet-110 spread over five runs is
#   ±0.16 points.

# %% [markdown]
# ## Figure 7 — standard deviation of layer responses
# The output of every 3x3 layer after BN and before the addition/ReLU, over the test set, for the networks the paper
# shows (those of them that are committed, from the study with the longest schedule). Top: in network order;
# bottom: sorted by magnitude. The paper finds that ResNets respond less than plain nets, and deeper ResNets less
# per layer; both are checked below on each network's mean std over its layers.

# %%
fig7_study, fig7_runs = resnet.figure7_runs(runs)
if fig7_runs:
    figure7, fig7_numbers = resnet.draw_figure7(fig7_runs, study.figure7_path(fig7_study), device=study.device,
                                                save=study.assets is not None)
    print("\n".join(resnet.response_findings(fig7_numbers["networks"])))
