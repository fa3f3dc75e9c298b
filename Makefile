# The two commands of the README: `make run` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned, so pip takes the CPU build on this machine's disk instead of a CUDA one
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

# Ray stays on loopback: node address 127.0.0.1, no auth prompts, no usage reporting.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test test-fast bench lint format install clean image-standin image image-test gpu-check

# The container image, built and run with podman (Debian's packages: podman, runc,
# debootstrap). The Ray image cannot be pulled here, so the default base is a stand-in built
# from Debian bookworm (deploy/image/standin.sh); BASE_IMAGE=rayproject/ray:2.60.0-py311-cpu
# where it can be.
IMAGE ?= localhost/tuneserve:0.1.0
STANDIN := localhost/tuneserve-standin:bookworm
BASE_IMAGE ?= $(STANDIN)
image image-test image-standin: export CONTAINERS_CONF := $(CURDIR)/deploy/image/containers.conf

image-standin:
	@if [ "$(BASE_IMAGE)" = "$(STANDIN)" ]; then deploy/image/standin.sh $(STANDIN); fi

image: image-standin
	deploy/image/build.sh $(IMAGE) $(BASE_IMAGE)

image-test: $(STAMP) image
	deploy/image/test.sh $(IMAGE)

# On a CUDA machine, with the project installed with the `gpu` extra in PY's environment:
# bf16 training on one GPU worker, the fp16 export served on CUDA, fp16 vs PyTorch fp32 timed.
PY ?= $(BIN)/python
gpu-check:
	$(PY) bench/gpu_check.py

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tuneserve run --config deploy/serve_config.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/runtime.py
	$(BIN)/python bench/zero_shot.py
	$(BIN)/python bench/train.py

lint: $(STAMP)
	$(BIN)/ruff check service training tests bench deploy
	$(BIN)/ruff format --check service training tests bench deploy
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold warning Dockerfile

format: $(STAMP)
	$(BIN)/ruff format service training tests bench deploy
	$(BIN)/ruff check --fix service training tests bench deploy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
