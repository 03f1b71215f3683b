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
# tested there. Run top to bottom, it trains only the runs missing from `results/`. To train on another data source
# than the committed runs', point `RESNET_RESULTS` at another folder (a run of the same name on other data is
# refused). With `RESNET_QUICK=1` (CI) it instead trains two tiny networks on a data subset on the CPU, into a
# temporary folder, and re-plots the committed results.

# %%
import dataclasses
import os
import tempfile

import resnet

QUICK = os.environ.get("RESNET_QUICK") == "1"  # CI: tiny real runs on a data subset, on the CPU
DATA = os.environ.get("RESNET_DATA", "")  # "" = official CIFAR-10 (downloaded); or a path, e.g. ../shared/data/cifar10-jpeg.tar.gz
STUDY = os.environ.get("RESNET_RESULTS", "results")  # the study, drawn from here: committed, or yours on other data
DEPTHS, NETS, SEEDS = [20, 32, 44, 56, 110], ["plain", "resnet"], [0]
VAL_SIZE = 0  # 0: the paper's reported protocol (train on 50k, report test error); 5000: its 45k/5k split
PARALLEL = 1  # runs at once (separate processes), to fill one GPU with small networks
base = resnet.TrainConfig(data=DATA, val_size=VAL_SIZE, device="auto")  # all other settings: the paper's

RESULTS = STUDY
if QUICK:
    RESULTS, DEPTHS = tempfile.mkdtemp(prefix="resnet-quick-"), [8]
    base = dataclasses.replace(base, batch_size=32, iterations=30, milestones=(15, 25), eval_every=10,
                               checkpoint_every=10, train_subset=1000, test_subset=500, device="cpu")
configs = [dataclasses.replace(base, net=n, depth=d, seed=s) for n in NETS for d in DEPTHS for s in SEEDS]
print(f"{len(configs)} runs of {base.iterations} iterations, batch {base.batch_size}"
      + (" (quick mode: into a temporary folder)" if QUICK else f", into {RESULTS}/"))

# %% [markdown]
# ## The sweep
# Trains every run that is not finished in the results folder (an interrupted run resumes from its checkpoint).

# %%
metas = resnet.sweep(configs, RESULTS, parallel=PARALLEL, progress=not QUICK)
for m in metas:
    print(f"{m['name']:>18}: {m['status']}, {m['iterations_done']} iterations, data: {m['data_source']}")

# %% [markdown]
# ## Figure 6
# Left: plain networks; right: ResNets (and ResNet-110 beside ResNet-1202 when it exists). Dashed: training error
# (over the augmented batches since the previous point); bold: test error. Which data the curves were trained on is
# read from the runs' metadata.

# %%
runs = resnet.load_runs(STUDY)
print(f"runs in {STUDY}/:", ", ".join(r.meta["name"] for r in runs) or "none yet")
print("trained on:", ", ".join(sorted({f"{r.meta['data_source']} ({r.meta['device_name']})" for r in runs})) or "-")

# %%
figure = resnet.plot_figure6(runs, None if QUICK else "assets/figure6.png")

# %%
if QUICK:  # the quick runs, drawn the same way (not saved)
    quick_figure = resnet.plot_figure6(resnet.load_runs(RESULTS), note="quick mode: 30 iterations on 1,000 images",
                                      ylim=(0, 100))

# %% [markdown]
# ## The error table
# Ours (final test error, mean ± std over seeds; training error; best epoch picked on the test set, labelled — it
# flatters) beside the paper (Table 6; plain nets read off Figure 6, marked ~) and what peers report on the official
# data (../shared/PAPER.md).

# %%
print(resnet.format_table(resnet.error_table(runs, peers=True)))

# %%
# NBVAL_IGNORE_OUTPUT
# The quick runs' numbers: real, but float sums on another CPU may round differently, so not compared.
if QUICK:
    print(resnet.format_table(resnet.error_table(resnet.load_runs(RESULTS))))

# %% [markdown]
# ## Against the paper
# Computed from the committed results: each network's difference from the paper, and whether the paper's two
# claims hold — deeper plain nets are worse (the degradation problem, in training error as well as test error) and
# deeper ResNets are better.

# %%
print("\n".join(resnet.findings(runs)))

# %% [markdown]
# Why our numbers may differ from the paper's:
# - **Data.** Without a network here, runs are trained on a JPEG re-encoding of CIFAR-10 (quality 75, 4:2:0 chroma;
#   `data_source` says so for every run). It is lossy: the peer ResNet-20 in `../shared/peers`, trained on the
#   official images, loses much of its accuracy on these test images (see `benchmarks/peer_on_jpeg.md`). Runs on the
#   official archive (`RESNET_DATA` unset) are the comparison that counts.
# - **Reported statistic.** We report the model at the end of training, as the paper does; two of the peers report
#   the best test epoch, which is lower by construction.
# - **Seeds.** One seed per network unless the table says otherwise; the paper's ResNet-110 spread over five runs is
#   ±0.16 points.

# %% [markdown]
# ## Figure 7 — standard deviation of layer responses
# The output of every 3x3 layer after BN and before the addition/ReLU, over the test set, for the networks the paper
# shows (those of them that are committed). Top: in network order; bottom: sorted by magnitude. The paper finds that
# ResNets respond less than plain nets, and deeper ResNets less per layer.

# %%
fig7_names = {f"{n}-seed0" for n in ("plain20", "plain56", "resnet20", "resnet56", "resnet110")}
fig7_runs = [r.path for r in runs if r.meta["name"] in fig7_names]
if QUICK:  # the tiny quick runs, on their 500 test images
    fig7_runs += [r.path for r in resnet.load_runs(RESULTS)]
if fig7_runs:
    stds, note = resnet.response_stds(fig7_runs, data=DATA or None, device=base.device)
    figure7 = resnet.plot_figure7(stds, None if QUICK else "assets/figure7.png", note=note)
