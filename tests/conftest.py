from __future__ import annotations

import os

import pytest

# Tests never reach the Hub; a source that needs it must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir():
    """The built-in SmolLM2 as a plain checkpoint (converted once, then cached)."""
    from editor.io.sources import DEFAULT_BUILTIN, resolve_source

    return resolve_source(DEFAULT_BUILTIN, progress=False)


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir, tmp_path_factory):
    """A real `vllm` OpenAI-compatible server on loopback serving the built-in model as "smollm2"."""
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


def pytest_collection_modifyitems(config, items):
    """Group tests for the two CI workers (pytest-xdist ``--dist loadgroup``), and run the vLLM server's last.

    A module's tests stay together, so module-scoped fixtures (a training run, an export) are built once.
    Every test that uses the session's vLLM server goes to one worker, so one server starts; its worker keeps
    a core busy while it lives, so those tests run last.
    """
    for item in items:
        group = "vllm-server" if "vllm_server" in getattr(item, "fixturenames", ()) else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: "vllm_server" in getattr(item, "fixturenames", ()))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread_per_worker():
    """Two xdist workers on two cores: one torch thread each (OpenMP threads fighting over cores stall)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/*.json from this run")
