# Two commands for a fresh machine (both do the whole set-up first; a second run skips what is installed):
#   make demo   train a small classifier on scikit-learn's handwritten digits, evaluate the checkpoint
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint clean
setup:
	@VENV=$(VENV) bash tools/setup_env.sh

demo: setup
	$(PY) tools/train.py configs/cls/digits_focalnet_nano.yaml --output runs/demo
	$(PY) tools/validate.py configs/cls/digits_focalnet_nano.yaml --checkpoint runs/demo/model_best.pth.tar

test: setup
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf runs .pytest_cache
