# Two commands for a fresh machine (both do their set-up first; a second run skips what is installed):
#   make demo   train a small classifier on scikit-learn's handwritten digits, evaluate the checkpoint
#               (timm side only: torch, timm, this package; a few minutes on a first run)
#   make test   run the test suite, CI's command (`make test-all` adds the longest capture cases; also the OpenMMLab stack, whose mmcv is built from source once,
#               about 30-40 min on 2 cores, unless a prebuilt wheel is at hand)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
SETUP := VENV="$(VENV)" bash tools/setup_env.sh

.PHONY: setup setup-mm setup-dev demo test test-all test-fast lint bench-kernels clean
setup:      # timm side: create_model, tools/train.py (classification), validate, benchmark, export
	@$(SETUP)
setup-mm:   # + mmengine, mmcv (compiled ops), mmdet, mmseg: what configs/det and configs/seg need
	@$(SETUP) mm
setup-dev:  # + the OpenMMLab stack and the test / lint tools
	@$(SETUP) mm dev

demo: setup
	$(PY) tools/train.py configs/cls/digits_focalnet_nano.yaml --output runs/demo
	$(PY) tools/validate.py configs/cls/digits_focalnet_nano.yaml --checkpoint runs/demo/model_best.pth.tar

# --dist worksteal: an idle worker takes tests queued on the other one (the capture cases of minutes each would
# otherwise pile up on one worker at the end)
test: setup-dev
	$(PY) -m pytest -n 2 --dist worksteal -m "not exhaustive" --durations=25 $(PYTEST_ARGS)

test-all: setup-dev  # also the exhaustive capture cases (about 15 min more on 2 cores)
	$(PY) -m pytest -n 2 --dist worksteal --durations=25 $(PYTEST_ARGS)

test-fast: setup-dev
	$(PY) -m pytest -n 2 --dist worksteal -m "not slow and not exhaustive" $(PYTEST_ARGS)

lint:
	@$(SETUP) dev
	$(PY) -m ruff check .
	$(VENV)/bin/shellcheck tools/setup_env.sh .ci/run

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
