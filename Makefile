# Two commands for a fresh machine (both do the whole set-up first; a second run skips what is installed):
#   make demo   train a small classifier on scikit-learn's handwritten digits, evaluate the checkpoint
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint bench-kernels clean
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

# GPU only: Triton kernels vs PyTorch paths for the three sparse mixers, 224 and 512, fp32 and fp16, forward and
# training step; one CSV + plot per (size, dtype) in runs/bench-kernels/.
KERNEL_MODELS ?= biformer_small transnext_tiny halonet_h1
bench-kernels: setup
	@mkdir -p runs/bench-kernels
	@for size in 224 512; do for dtype in fp32 fp16; do \
		$(PY) tools/benchmark.py $(KERNEL_MODELS) --device cuda --kernels torch triton --mode both \
			--img-size $$size --dtype $$dtype --batch-size 8 --repeats 20 \
			--csv runs/bench-kernels/$${size}_$${dtype}.csv --plot runs/bench-kernels/$${size}_$${dtype}.png \
			|| exit 1; \
	done; done

clean:
	rm -rf runs .pytest_cache
