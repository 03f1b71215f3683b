# Two commands for a newcomer (see README.md):
#   make study   set up, then run main.ipynb top to bottom (trains what is missing in results/, redraws figures)
#   make test    set up, then run the test suite and the notebook's check (its stored report, redrawn from results/)
#   make report  redraw the figures, the notebook's stored outputs, README.md's and docs/results.md's results
# After editing main.ipynb or its plain-text twin main.py outside a jupytext-aware Jupyter: make sync
PYTHON ?= python3
VENV ?= .venv

.PHONY: study test report setup sync
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	touch $@

# The study's data is checked first (one line if it is missing or cannot be downloaded); then the notebook runs in
# place, its output streamed to the terminal as it comes (the cost estimate, a progress bar per run, each result).
study: setup
	$(VENV)/bin/python -m resnet check-study
	RESNET_PROGRESS=text $(VENV)/bin/papermill main.ipynb main.ipynb --no-progress-bar \
		--stdout-file /dev/stdout --stderr-file /dev/stderr

# The tests that need CIFAR-10 itself take RESNET_TEST_DATA, else the JPEG stand-in at ../shared/data, else the
# official download; without any they are skipped, saying so (RESNET_REQUIRE_DATA=1 fails them instead).
# The notebook is checked as its outputs are stored: the report of the committed results (RESNET_TRAIN=0).
# The tests run side by side, one worker per core (at most 4); then the notebook, its cells in order in one kernel.
test: setup
	RESNET_TRAIN=0 $(VENV)/bin/python -m pytest -n auto --maxprocesses 4 --dist worksteal tests
	RESNET_TRAIN=0 $(VENV)/bin/python -m pytest main.ipynb --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg

report: setup
	$(VENV)/bin/python -m resnet plot
	RESNET_TRAIN=0 $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace main.ipynb
	$(VENV)/bin/jupytext --sync main.ipynb
	$(VENV)/bin/python -m resnet report

sync: setup
	$(VENV)/bin/jupytext --sync main.ipynb
