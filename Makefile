# Ferry's commands. Each target installs what it needs into .venv first (quick when it is there).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ferry-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-unit up down status logs lint docs install clean image image-smoke

$(STAMP): pyproject.toml constraints.txt examples/recipes/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q -c constraints.txt -e examples/recipes
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Ferry with its pinned dependencies

demo: $(STAMP) ## 'make up', then run the whole loop; everything keeps running ('make down' stops it)
	$(BIN)/ferry demo

# pytest exits 5 when it collects no test; make fails on that as on any non-zero status (so does .ci/run).
# helm, kube-apiserver and etcd (built once from their Go modules) and the pinned Kubernetes, CRD and Compose
# schemas are cached outside the checkout before the tests run: the chart's, the Compose file's and the
# trainer's PyTorchJob tests use them.
# Two pytest workers (PYTEST_WORKERS), a test file each at a time: each worker starts its own broker, database
# and S3 store on free ports under .ferry-test/<its pid>, so the two never share a port or a topic.
PYTEST_WORKERS ?= 2

test: $(STAMP) ## run every test (starts its own Kafka and PostgreSQL)
	bash tools/system-packages.sh
	bash tools/helm.sh
	bash tools/kube-apiserver.sh
	$(BIN)/python -m tools.kube_schemas
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

up: $(STAMP) ## start Kafka, PostgreSQL and every installed service (under supervisord) in the background
	$(BIN)/ferry up

down: ## stop everything 'make up' started
	@if test -x $(BIN)/ferry; then $(BIN)/ferry down; fi

status: $(STAMP) ## each part's pid, port, state, health and last restart
	$(BIN)/ferry status

logs: $(STAMP) ## follow one service's log (make logs SERVICE=gateway), or every log under .ferry/logs
	$(BIN)/ferry logs $(SERVICE)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services

docs: $(STAMP) ## build the docs site (docs/, its reference generated from the code) into .ferry/site
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --quiet

# Opt-in, never in CI: the image is several GB. VARIANT=cpu|cuda, BASE_IMAGE=... (tools/base-image.sh makes one).
image: ## build the one image of every service (Containerfile) with podman or docker
	bash tools/image.sh

image-smoke: ## inside the built image: ferry --help and every service's modules import
	bash tools/image-smoke.sh

clean: down
	rm -rf .ferry .ferry-test
