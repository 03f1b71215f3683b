#!/usr/bin/env bash
# The end of a CPU-campaign session (tools/cpu_campaign.py): wait for the campaign to stop at its checkpoints, redraw
# the figures, regenerate the notebook's stored outputs and the README from results/, and stage all of it for a
# commit, the checkpoints of the runs still in progress included.
#
#   (nohup tools/campaign_end.sh > .campaign/end.log 2>&1 &)    # then: git commit
#
# checkpoint.pt is ignored (.gitignore), so a running run's checkpoint is added by force: committed, a long run
# survives the loss of the machine that trains it (the next session resumes it from the clone). Once tracked, the
# trainer's removal of it when the run finishes is staged like any change under results/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${RESNET_DATA:-../shared/data/cifar10-jpeg.tar.gz}
PY=.venv/bin

while pgrep -f "tools/cpu_campaign.py" > /dev/null; do sleep 20; done
echo "$(date +%T) the campaign has stopped"
$PY/python -m resnet plot
RESNET_QUICK=1 RESNET_DATA=$DATA RESNET_TEST_DATA=$DATA \
    $PY/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 main.ipynb
$PY/jupytext --sync main.ipynb
$PY/python -m resnet report
git add -A results assets README.md main.ipynb main.py
# the running runs' checkpoints (a run's status is in its run.json)
$PY/python - <<'EOF' | xargs -r git add -f
from pathlib import Path
from resnet.results import read_meta
for meta in sorted(Path("results").glob("*/*/run.json")):
    if read_meta(meta)["status"] == "running" and (meta.parent / "checkpoint.pt").exists():
        print(meta.parent / "checkpoint.pt")
EOF
git status --short
echo "$(date +%T) staged: commit it"
