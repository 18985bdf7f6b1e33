# fer_hf: set up with `make install`, check with `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RECIPE ?= recipes/cnn.yaml
DIST ?= dist
# make dist's ONNX exports, shipped in the wheel (fer_hf/assets/onnx/), parity-checked on the real FER2013 validation
# split when ../shared has it, else on the bundled sample. The ensemble's (54 MB in fp32) would take the light venv
# past 500 MB: `make dist DIST_MODELS="default lite0 ensemble"` ships it too.
DIST_MODELS ?= default lite0
SHARED_FER ?= ../shared/fer2013
CHECK_DATA ?= $(if $(wildcard $(SHARED_FER)/validation.parquet),$(SHARED_FER),bundled)
ONNX_DIR := fer_hf/assets/onnx

.PHONY: install test quality format smoke train app bench bench-gpu dist

install:  ## virtual environment with the package (editable) and its test tools
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	# Test photos only: insightface's wheel carries a real six-person photo (data/images/t1.jpg). Its code is never
	# imported, so none of its dependencies (onnxruntime, the non-headless opencv-python) are installed.
	$(PY) -m pip install --no-deps "insightface==2.1"
	# The app's browser test drives Debian's headless Chromium: installed here when root with apt, else named.
	@if dpkg -s $$(cat .ci/apt-packages.txt) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$(cat .ci/apt-packages.txt); \
	else echo "make install: the browser test needs: sudo apt-get install -y $$(cat .ci/apt-packages.txt)"; fi

dist:  ## the wheel in dist/: `pip install fer_hf-*.whl` is the light, torch-free install, exports inside
	# Exported into build/ first, moved into the package only when every model passed its parity check.
	rm -rf build && mkdir -p build/onnx
	for model in $(DIST_MODELS); do \
		$(PY) -m fer_hf.export $$model --output build/onnx/$$model --check-data $(CHECK_DATA) || exit 1; \
	done
	rm -rf $(ONNX_DIR) && mv build/onnx $(ONNX_DIR)
	# setuptools builds in build/ (removed first, else files deleted from the package would stay in the wheel).
	rm -rf build && $(PY) -m pip wheel --no-deps --wheel-dir $(DIST) . && rm -rf build

test:  ## the whole test suite (CPU, offline, real FER2013 from ../shared)
	$(PY) -m pytest -q

quality:  ## formatting and lint
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

smoke:  ## a one-minute CPU training run on the bundled sample
	$(PY) -m fer_hf.train recipes/smoke.yaml

train:  ## make train RECIPE=recipes/cnn.yaml
	$(PY) -m fer_hf.train $(RECIPE)

app:  ## the Gradio app on http://127.0.0.1:7860
	$(PY) spaces_app/app.py

bench:  ## data-pipeline and training-step benchmarks
	$(PY) -m fer_hf.bench data --source $(SHARED_FER)
	$(PY) -m fer_hf.bench train

bench-gpu:  ## on a CUDA machine: ViT-base and ResNet-50 steps in bf16, batch transform in the step (on the GPU) vs in the CPU collator
	$(PY) -m fer_hf.bench train --families vit,resnet --device cuda --precision bf16 --steps 30 --transform step
	$(PY) -m fer_hf.bench train --families vit,resnet --device cuda --precision bf16 --steps 30 --transform collator --workers 2
