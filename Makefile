# The two sacred commands: `make run` and `make test`. Everything they need is installed here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)

.PHONY: install install-test run test lint typecheck browser docs gallery bench clean image check-image

# `make run` needs the server and the faces extra (consistency scores): runtime dependencies
# only. The dev and test tools come with `make test` (install-test), which builds on this.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[faces]'
	rm -f $(VENV)/.installed-[0-9]*
	touch $(STAMP)

# The test suite also exercises the diffusers engine on tiny CPU models of both families.
# Qwen-Image-Edit's processor needs torchvision, and the only torch/torchvision pair that
# imports together here is torch 2.14.1 + torchvision 0.29.1 (PyPI's torchvision does not load
# beside the CPU-only torch 2.13.0). Both lie on this machine's disk; pinning them exactly,
# before anything else, means pip never resolves (or downloads) any other torch.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev,faces,diffusers,qwen]'
	rm -f $(VENV)/.installed-test-*
	touch $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

run: install
	$(BIN)/castframe migrate
	$(BIN)/castframe dev-key
	$(BIN)/castframe serve

lint: install-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

typecheck: install-test
	$(BIN)/mypy

# The playground's browser test drives Debian's Chromium (Playwright's own browser downloads
# cannot work here): install it once if missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  (apt-get update -q && apt-get install -y -q chromium) >/dev/null; }

test: install-test lint typecheck browser
	$(BIN)/python -m pytest -q

docs: install
	$(BIN)/python scripts/gen_docs.py

gallery: install-test
	$(BIN)/python scripts/make_gallery.py

bench: install-test
	$(BIN)/python benchmarks/sandbox.py

# The container image (Containerfile; podman or docker). `make check-image` proves it: build,
# a real journey, SIGTERM mid-job, compose up/down (minutes; not part of `make test`).
IMAGE ?= localhost/castframe:latest
image:
	IMAGE=$(IMAGE) scripts/build_image.sh

check-image:
	IMAGE=$(IMAGE) scripts/check_image.sh

clean:
	rm -rf $(VENV) .castframe .pytest_cache .mypy_cache .ruff_cache
