# Two commands for a newcomer (see README.md):
#   make study   set up, then run main.ipynb top to bottom (trains what is missing in results/, redraws figures)
#   make test    set up, then run the test suite and the notebook's regression check (quick mode, CPU)
# After editing main.ipynb or its plain-text twin main.py outside a jupytext-aware Jupyter: make sync
PYTHON ?= python3
VENV ?= .venv
# Data for the tests and the quick notebook run: the JPEG stand-in beside the checkout (no network here).
RESNET_TEST_DATA ?= ../shared/data/cifar10-jpeg.tar.gz

.PHONY: study test setup sync
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	touch $@

study: setup
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 main.ipynb

test: setup
	RESNET_QUICK=1 RESNET_DATA=$(RESNET_TEST_DATA) RESNET_TEST_DATA=$(RESNET_TEST_DATA) \
	$(VENV)/bin/python -m pytest tests main.ipynb --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg

sync: setup
	$(VENV)/bin/jupytext --sync main.ipynb
