# `make serve` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  ?= models/export.pkl
# What serves MODEL: the live version named by live.json in its folder, else MODEL itself
# (trained by the rule below when missing). docs/training.md#outputs
SERVED := $(or $(wildcard $(dir $(MODEL))live.json),$(MODEL))

.PHONY: serve test test-fast lint train versions venv dev bench clean image settings-docs

serve: $(SERVED)
	$(BIN)/gunicorn -c gunicorn.conf.py "app:create_app()"

test: lint
	$(BIN)/python -m pytest

# Unit and app tests only: no gunicorn, browser or long runs (markers in pyproject.toml),
# on two processes, a test file each at a time (module fixtures are made once).
test-fast: dev
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow and not browser and not e2e" tests/app

lint: dev
	$(BIN)/ruff check .
	$(BIN)/vulture

# docs/serving.md's table of settings, made from app/config.py's Settings.
settings-docs: venv
	$(BIN)/python -c "from app.settings_docs import write_docs_table; write_docs_table()"

# The demo model: scikit-learn's handwritten digits through the same folder pipeline as user data.
$(MODEL): | venv
	$(BIN)/python -m training.train --out $(MODEL)

train: venv
	$(BIN)/python -m training.train $(ARGS)

# The model versions in MODEL's folder, the live one marked (docs/training.md#versions-compare-promote-roll-back).
versions: venv
	$(BIN)/python -m training.versions --models $(dir $(MODEL))

venv: $(VENV)/.installed
dev: $(VENV)/.dev-installed

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.installed
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

# The container image (docs/deploy.md): docker or buildah, whichever is here.
# TARGET=lean builds the torch-free image; TORCH_INDEX_URL=... picks torch's wheel index.
TARGET ?= default
image: $(SERVED)
	nice -n 10 scripts/build_image.sh $(TARGET) image-classifier:$(TARGET)

# Speed, memory and robustness figures (long runs, not tests): see docs/measurements.md.
bench: dev $(SERVED)
	$(BIN)/python -m benchmarks.serve_bench
	$(BIN)/python -m benchmarks.deploy_footprint --build
	$(BIN)/python -m benchmarks.load_test
	$(BIN)/python -m benchmarks.fuzz_long
	$(BIN)/python -m benchmarks.slow_clients

clean:
	rm -rf $(VENV) .pytest_cache
