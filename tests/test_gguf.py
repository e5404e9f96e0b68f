"""GGUF without the built-in model: the llama.cpp rules against llama.cpp's own source, the archs column, refusals
before converting, output names, fetching the converter and its one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from editor.core.capabilities import LLAMA_CPP, matrix, matrix_markdown
from editor.core.gguf_rules import CONVERTER_ARCH, EXTRAS, GRAPHS, llama_cpp_verdict
from editor.errors import EditorError
from editor.pipeline.gguf.build import output_paths
from editor.pipeline.gguf.converter import PINNED, converter_dir, unpack_converter
from tests.test_cli_errors import wedit

# LLM_TENSOR_* of llama.cpp's source -> the GGUF tensor kind (src/llama-arch.cpp's names)
_KINDS = {
    "ATTN_OUT": "attn_output",
    "ATTN_QKV": "attn_qkv",
    "ATTN_Q": "attn_q",
    "ATTN_K": "attn_k",
    "ATTN_V": "attn_v",
    "FFN_GATE": "ffn_gate",
    "FFN_DOWN": "ffn_down",
    "FFN_UP": "ffn_up",
    "OUTPUT": "output",
}
_CREATE = re.compile(r'create_tensor\(tn\(LLM_TENSOR_(\w+),\s*"(weight|bias)"[^;]*?,\s*([\w |]+)\);')


def graph_from_source(source: str) -> tuple[set[str], set[str]]:
    """(optional, required) extra tensors a llama.cpp model file creates, read from its create_tensor calls."""
    optional, required = set(), set()
    for kind, param, flags in _CREATE.findall(source):
        name = f"{_KINDS.get(kind, kind.lower())}.{param}"
        if name in EXTRAS:
            (optional if "TENSOR_NOT_REQUIRED" in flags else required).add(name)
    if "create_tensor_qkv(" in source:  # llama-model.cpp: q/k/v (or fused qkv) biases, all TENSOR_NOT_REQUIRED
        optional |= {"attn_qkv.bias", "attn_q.bias", "attn_k.bias", "attn_v.bias"}
    return optional, required


@pytest.mark.parametrize("gguf_arch", sorted(GRAPHS))
def test_graph_table_is_what_the_llama_cpp_source_creates(gguf_arch):
    graph = GRAPHS[gguf_arch]
    source = (converter_dir() / "src" / "models" / graph.source).read_text()
    optional, required = graph_from_source(source)
    assert (set(graph.optional), set(graph.required)) == (optional, required), graph.source


def test_converter_table_is_what_the_converter_picks():
    """The converter's own class registry, asked in a process where its vendored gguf-py comes first."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import convert_hf_to_gguf, gguf\n"
        "from conversion import get_model_class\n"
        "print(json.dumps({a: gguf.MODEL_ARCH_NAMES[get_model_class(a).model_arch] for a in json.loads(sys.argv[2])}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(converter_dir()), json.dumps(sorted(CONVERTER_ARCH))],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == CONVERTER_ARCH


def test_archs_llama_cpp_column():
    rows = matrix()
    # mean_heads carries the heads' means in an o_proj bias, which these graphs have no place for
    no_attn_bias = {"gemma2", "gemma3", "gemma3_text", "olmo2", "qwen3", "qwen3_moe"}
    assert all(rows[mt][LLAMA_CPP].status == "all" for mt in rows if mt not in no_attn_bias), {
        mt: rows[mt][LLAMA_CPP].render() for mt in rows
    }
    for mt in no_attn_bias:
        serving = rows[mt][LLAMA_CPP]
        wanted = ["mean_heads", "residual_add attn"] if mt.startswith("qwen3") else ["mean_heads"]
        assert serving.status == "some" and [c for c, _ in serving.refused] == wanted, serving.render()
        assert all("attn_output.bias" in why and "src/models/" in why for _, why in serving.refused)
    assert "re-declar" not in rows["mistral"][LLAMA_CPP].render() and "llama" in rows["mistral"][LLAMA_CPP].render()
    assert "| llama.cpp |" in matrix_markdown().splitlines()[0]


def test_verdicts_on_whole_checkpoints():
    # A Pythia without attention biases cannot load in llama.cpp at all; a GPT-NeoX with them can.
    layer = "gpt_neox.layers.0"
    plain = [f"{layer}.attention.dense.weight", f"{layer}.mlp.dense_4h_to_h.bias", "embed_out.weight"]
    biased = plain + [f"{layer}.attention.dense.bias", f"{layer}.attention.query_key_value.bias"]
    biased.append(f"{layer}.mlp.dense_h_to_4h.bias")
    assert not llama_cpp_verdict("GPTNeoXForCausalLM", plain, 1, whole=True).serves
    assert llama_cpp_verdict("GPTNeoXForCausalLM", biased, 1, whole=True).serves
    # Gemma-2's converter drops lm_head.weight: a model with its own would silently lose it.
    verdict = llama_cpp_verdict("Gemma2ForCausalLM", ["lm_head.weight"], 1, whole=True, lm_head="lm_head.weight")
    assert not verdict.serves and "output.weight" in verdict.reason
    assert not llama_cpp_verdict("FalconForCausalLM", [], 1, whole=True).serves
    # llama.cpp's qwen3moe always renormalises the picked experts' weights; transformers only with norm_topk_prob
    moe = ["lm_head.weight"]
    assert llama_cpp_verdict("Qwen3MoeForCausalLM", moe, 1, whole=True, config={"norm_topk_prob": True}).serves
    for config in ({}, {"norm_topk_prob": False}):
        verdict = llama_cpp_verdict("Qwen3MoeForCausalLM", moe, 1, whole=True, config=config)
        assert not verdict.serves and "norm_topk_prob is false" in verdict.reason
    assert "when norm_topk_prob is true" in matrix()["qwen3_moe"][LLAMA_CPP].render()


def test_output_paths(tmp_path):
    export = tmp_path / "m"
    assert output_paths(export, ["q8_0"], None) == {"q8_0": export / "m-q8_0.gguf"}
    assert output_paths(export, ["q8_0"], tmp_path / "x.gguf") == {"q8_0": tmp_path / "x.gguf"}
    assert output_paths(export, ["f32", "q8_0"], tmp_path / "x.gguf") == {
        "f32": tmp_path / "x-f32.gguf",
        "q8_0": tmp_path / "x-q8_0.gguf",
    }
    with pytest.raises(EditorError, match="name a .gguf file"):
        output_paths(export, ["q8_0"], tmp_path / "x")


def _tiny_export(tmp_path: Path, model_type: str, plan: list[dict]) -> Path:
    from tests.tiny import build_model, save_model, tiny_configs

    base = save_model(build_model(tiny_configs()[model_type]), tmp_path / f"base-{model_type}")
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / f"export-{model_type}"
    result = wedit("export", "--model", str(base), "--plan", str(tmp_path / "plan.json"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_gguf_refuses_before_converting(tmp_path):
    vector = [0.5] * 32
    export = _tiny_export(tmp_path, "qwen3", [{"kind": "residual_add", "layer": 1, "site": "attn", "vector": vector}])
    result = wedit("gguf", str(export), "--type", "f32")
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "llama.cpp cannot serve this export" in line and "attn_output.bias" in line
    assert "nothing was converted" in line and not list(tmp_path.rglob("*.gguf"))
    # `wedit export --gguf` refuses before it bakes anything.
    out = tmp_path / "with-gguf"
    args = ["export", "--model", str(tmp_path / "base-qwen3"), "--plan", str(tmp_path / "plan.json")]
    result = wedit(*args, "--out", str(out), "--gguf", "q8_0")
    assert result.returncode == 2 and "attn_output.bias" in result.stderr and not out.exists()
    result = wedit(*args, "--out", str(out), "--gguf", "q3_x")
    assert result.returncode == 2 and "--gguf q3_x" in result.stderr and not out.exists()


def test_gguf_flags_come_from_the_settings(tmp_path):
    export = _tiny_export(tmp_path, "llama", [{"kind": "zero_heads", "layer": 0, "heads": [1]}])
    result = wedit("gguf", str(export), "--type", "q9_9")
    assert result.returncode == 2 and result.stderr.startswith("wedit: error: --types:")
    result = wedit("gguf", str(export), "--out", str(tmp_path / "x.bin"))
    assert result.returncode == 2 and "name a .gguf file" in result.stderr


def _fake_sdist(path: Path) -> Path:
    root = path / "src" / "llama_cpp_python-9.9.9"
    files = {
        "vendor/llama.cpp/convert_hf_to_gguf.py": "print('converter')\n",
        "vendor/llama.cpp/conversion/__init__.py": "",
        "vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
        "vendor/llama.cpp/src/models/llama.cpp": "// graph\n",
        "vendor/llama.cpp/ggml/src/ggml.c": "// not kept\n",
        "llama_cpp/__init__.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    sdist = path / "llama_cpp_python-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return sdist


def test_unpack_keeps_only_the_converter(tmp_path):
    target = unpack_converter(_fake_sdist(tmp_path), tmp_path / "cache" / "llama.cpp-9.9.9")
    kept = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert kept == [
        "conversion/__init__.py",
        "convert_hf_to_gguf.py",
        "gguf-py/gguf/__init__.py",
        "src/models/llama.cpp",
    ]


def test_converter_fetch_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDITOR_LLAMA_CPP", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # what pip does without a network: no index to ask
    with pytest.raises(EditorError) as err:
        converter_dir()
    message = str(err.value)
    assert "cannot fetch llama.cpp's converter" in message and "EDITOR_LLAMA_CPP" in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    monkeypatch.setenv("EDITOR_LLAMA_CPP", str(tmp_path))
    with pytest.raises(EditorError, match="no convert_hf_to_gguf.py there"):
        converter_dir()


def test_one_llama_cpp_python_pin():
    """The version the error messages name is the one the gguf extra (and so the Makefile's setup) installs."""
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert f"llama-cpp-python=={PINNED}" in project["project"]["optional-dependencies"]["gguf"]
    assert "'.[gguf]'" in (Path(__file__).parents[1] / "Makefile").read_text()


def test_verify_gguf_file_needs_its_export(tmp_path):
    result = wedit("verify", str(tmp_path / "missing.gguf"), "--base", str(tmp_path))
    assert result.returncode == 2 and "no such GGUF file" in result.stderr
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    result = wedit("verify", str(tmp_path / "m.gguf"))
    assert result.returncode == 2 and "needs --base EXPORT_DIR" in result.stderr and "\n" not in result.stderr.strip()
