# The two commands the README promises: `make demo` and `make test`.
# Both set up .venv first (torch from `pip install torch==2.13.0`, then the
# project with its extras), so they work on a fresh machine.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.mnistkit-installed
# Real MNIST for development and CI lives in ../shared/data when present.
SHARED_DATA := $(abspath ../shared/data)
export MNISTKIT_DATA ?= $(if $(wildcard $(SHARED_DATA)/MNIST/raw),$(SHARED_DATA),)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup system-deps demo notebook check test test-fast test-hostile bench bench-quick bench-seeds bench-serve bench-photos bench-numbers bench-real bench-tune bench-tune-quick bundled-model bundled-reader clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP)

# Chromium (browser tests), Fashion-MNIST and PostgreSQL from Debian, when we are root on Debian;
# there a failed install stops `make test` (in CI those tests fail rather than skip). Elsewhere they skip.
system-deps:
	@bash scripts/system-deps.sh

demo: setup
	@bash scripts/demo.sh $(PY)

# Re-run examples/tutorial.ipynb (real MNIST, 1 epoch, 2 tuning trials) and store it with its outputs.
notebook: setup
	$(PY) scripts/run_notebook.py

# Style and types, settled by tools (configured in pyproject.toml): seconds once mypy's cache is warm.
check: setup
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy

# Two pytest workers: much of the suite waits on child processes, servers and the database,
# so two workers keep both cores busy (TEST_WORKERS=0 runs in one process).
TEST_WORKERS ?= 2

test: setup system-deps check
	$(PY) -m pytest -q -p no:cacheprovider --timeout=600 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

# The edit-run loop, under a minute on 2 cores: no slow or browser tests, and not the modules that mostly
# start servers, child processes or a database, or run long trainings and scikit-learn's checks (all run in `make test`).
FAST_SKIP := hostile serve_uvicorn tune tune_postgres distributed faults notebook photos signals \
	bundled estimators export determinism
test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider --timeout=300 -n 2 -m "not slow and not browser" \
		$(foreach m,$(FAST_SKIP),--ignore=tests/test_$(m).py)

# The hostile-input corpus alone (also part of `make test`): files, inputs, secrets and the server's
# fair shares; full-disk cases need root for a tmpfs.
test-hostile: setup
	$(PY) -m pytest -q -p no:cacheprovider --timeout=600 tests/test_hostile*.py tests/test_serve_fair.py

bench: setup
	$(PY) bench/run.py

bench-quick: setup
	$(PY) bench/run.py --quick

bench-seeds: setup
	$(PY) bench/recipe_seeds.py

# The server alone, then under attack (hostile uploads, deep JSON, slowloris) beside it; ~1 minute.
bench-serve: setup
	$(PY) bench/load_test.py --requests 2000 --concurrency 8 --payload mixed
	$(PY) bench/load_test.py --requests 2000 --concurrency 8 --payload mixed --attack

# Photographed digits and numbers, read by `mnistkit predict` (bundled model; MODEL=ckpt to choose).
bench-photos: setup system-deps
	$(PY) bench/photos.py --timing $(if $(MODEL),--model $(MODEL),)

# Written numbers read by recognition beside the geometric grouping alone, and preprocessing timings (quiet machine).
bench-numbers: setup
	$(PY) bench/photo_numbers.py --timing

# mnistkit tune --model mlp on a 15-minute budget beside the best-mlp preset (BUDGET=seconds to change it)
bench-tune: setup
	$(PY) bench/tune.py --budget $(or $(BUDGET),900)

# the same pipeline on mnist-sample with a 2-minute budget: does it all work?
bench-tune-quick: setup
	$(PY) bench/tune.py --quick

# Retrain the pretrained model shipped in the package (mnistkit/bundled/digits-cnn.safetensors) with its
# recorded command (`mnistkit train --preset digits-bundled`), write its model card, replace the file.
bundled-model: setup
	$(PY) scripts/build_bundled_model.py --choose-min-confidence

# Retrain the line reader shipped in the package (mnistkit/bundled/digit-lines-crnn.safetensors) with its recorded
# command (`mnistkit train --preset lines-bundled`), choose its unsure threshold on synthetic validation lines, replace the file.
bundled-reader: setup
	$(PY) scripts/build_line_reader.py $(if $(REAL),--real-benchmark $(REAL),)

# Real handwritten numbers (../shared/data/realworld-dev) read by the digit reader, the line reader and Tesseract.
bench-real: setup
	$(PY) bench/real_numbers.py

clean:
	rm -rf $(VENV) runs test-artifacts .pytest_cache
