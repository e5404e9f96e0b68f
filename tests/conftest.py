from __future__ import annotations

import os

import pytest

# Tests never reach the Hub; a source that needs it must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Factory: ``tiny_checkpoint(case="llama", *, seed=0, shard=None, tokenizer=False)`` is the path of a tiny
    random checkpoint of one architecture case of tests/tiny.py, saved once per session (``shard``: a
    max_shard_size such as "20KB"; ``tokenizer``: tiny.char_tokenizer saved beside it). Shared between tests:
    copy it before changing it."""
    from tests.tiny import build_model, char_tokenizer, tiny_configs

    made = {}

    def make(case: str = "llama", *, seed: int = 0, shard: str | None = None, tokenizer: bool = False):
        key = (case, seed, shard, tokenizer)
        if key not in made:
            path = tmp_path_factory.mktemp(f"tiny-{case}") / case
            extra = {"max_shard_size": shard} if shard else {}
            build_model(tiny_configs()[case], seed).save_pretrained(path, **extra)
            if tokenizer:
                char_tokenizer().save_pretrained(path)
            made[key] = path
        return made[key]

    return make


@pytest.fixture(scope="session")
def smollm2_dir():
    """The built-in SmolLM2 as a plain checkpoint (converted once, then cached)."""
    from editor.io.sources import DEFAULT_BUILTIN, resolve_source

    return resolve_source(DEFAULT_BUILTIN, progress=False)


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    """The built-in SmolLM2 loaded (float32): model, tokenizer and its ModelInfo, once per test module."""
    from editor.engines.loading import load_model, load_tokenizer
    from editor.io.checkpoint import Checkpoint

    return load_model(smollm2_dir), load_tokenizer(smollm2_dir), Checkpoint.open(smollm2_dir).info()


@pytest.fixture(scope="module")
def vllm_server(smollm2_dir, tmp_path_factory):
    """A real `vllm` OpenAI-compatible server on loopback serving the built-in model as "smollm2".

    One per test module, stopped when the module's tests are done: a live vLLM CPU engine keeps a core busy, and
    `make test` gives each module to one worker (``--dist loadfile``), so a session-wide server would hold a
    core for the rest of the run."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(smollm2_dir),
        "--served-model-name",
        "smollm2",
        "--dtype",
        "float32",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        "--enforce-eager",  # no torch.compile: minutes on CI's two cores, for a handful of short replies
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited early:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/models", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vLLM server did not start in 600 s:\n{log.read_text()[-3000:]}")
                time.sleep(3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread_per_worker():
    """Two xdist workers on two cores: one torch thread each (OpenMP threads fighting over cores stall).

    The commands the tests start (`wedit steer`, `wedit attribute`, ...) get one thread too, through the
    environment they inherit: on CI, `wedit steer` and `wedit attribute` side by side with two OpenMP threads each
    (four on two cores) captured at 13 s a batch and the steer run overran its 1500 s timeout.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/*.json from this run")


def pytest_collection_modifyitems(config, items):
    """The lanes mean something: a test is marked ``slow`` exactly when it loads the built-in SmolLM2 (through the
    ``smollm2_dir`` fixture, which every such test requests), so ``-m "not slow"`` is the fast lane."""
    wrong = []
    for item in items:
        loads = "smollm2_dir" in getattr(item, "fixturenames", ())
        marked = item.get_closest_marker("slow") is not None
        if loads != marked:
            wrong.append(
                f"{item.nodeid}: {'loads SmolLM2 but is not' if loads else 'is marked slow but does not load SmolLM2 (smollm2_dir)'} marked slow"
            )
    if wrong:
        raise pytest.UsageError("slow marker out of step with SmolLM2 use:\n" + "\n".join(wrong))
