"""Broken and hostile inputs against every command: one line on stderr, exit status 2, no output, inputs unchanged.

One class per section: a damaged checkpoint refused by every command that reads one; `wedit fetch` refusing
what it used to copy blindly; shapes against config.json; NaN/Inf weights; the review's other paths to a
traceback; pickle never loaded; atomic writes. Commands run in this process (tests.hostile.cli); the autouse
``no_pickle`` fixture fails any test in which something unpickles.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from editor.errors import EditorError
from tests.hostile import assert_refused, cli, hostile_pickle, no_pickle, tree  # noqa: F401 (autouse fixture)

O_PROJ = "model.layers.1.self_attn.o_proj.weight"  # edited by PLAN (head 0 = columns 0..7)
UNTOUCHED = "model.layers.0.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def base(tiny_checkpoint) -> Path:
    return tiny_checkpoint("llama")


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    path.write_text(json.dumps([{"kind": "zero_heads", "layer": 1, "heads": [0]}]))
    return path


@pytest.fixture(scope="module")
def export(tmp_path_factory, base, plan) -> Path:
    out = tmp_path_factory.mktemp("export") / "edited"
    assert cli("export", "--model", base, "--plan", plan, "--out", out).rc == 0
    return out


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite(path: Path, edit) -> Path:
    """Apply ``edit`` to the tensors of path/model.safetensors (loaded, changed, saved again)."""
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def huge_header_length(path: Path) -> Path:
    """The 8-byte length field says 2^62: it once ended in MemoryError and a traceback."""
    shard = path / "model.safetensors"
    shard.write_bytes((2**62).to_bytes(8, "little") + shard.read_bytes()[8:])
    return path


# ---- 1. one validator, every reader -----------------------------------------------------------------------
READERS = {
    "fetch": lambda bad, good, out, plan: ["fetch", bad, "--out", out],
    "export": lambda bad, good, out, plan: ["export", "--model", bad, "--plan", plan, "--out", out],
    "diff": lambda bad, good, out, plan: ["diff", good, bad],
    "eval": lambda bad, good, out, plan: ["eval", bad, "--out", out],
    "attribute": lambda bad, good, out, plan: ["attribute", "--model", bad, "--bias", "always_late", "--out", out],
    "steer": lambda bad, good, out, plan: ["steer", "--model", bad, "--out", out],
    "inject": lambda bad, good, out, plan: ["inject", "--model", bad, "--bias", "always_late", "--out", out],
    "import-vectors": lambda bad, good, out, plan: ["import-vectors", "v.safetensors", "--model", bad, "--out", out],
}


@pytest.mark.parametrize("command", sorted(READERS))
def test_every_reader_refuses_a_damaged_checkpoint(tmp_path, base, plan, command):
    bad = huge_header_length(copy(base, tmp_path / "bad"))
    before, out = tree(bad), tmp_path / "out"
    result = cli(*READERS[command](bad, base, out, plan))
    assert_refused(result, out, "model.safetensors", "over safetensors' limit")
    assert tree(bad) == before


def test_verify_refuses_a_damaged_export(tmp_path, export):
    bad = huge_header_length(copy(export, tmp_path / "bad"))
    before = tree(bad)
    assert_refused(cli("verify", bad), None, "over safetensors' limit")
    assert tree(bad) == before


# ---- fetch no longer copies without reading ---------------------------------------------------------------
def _truncated(p: Path) -> None:
    shard = p / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])


def _not_json(p: Path) -> None:
    shard = p / "model.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:8] + b"[" + data[9:])


def _offsets_past_end(p: Path) -> None:
    shard = p / "model.safetensors"
    data = shard.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["model.norm.weight"]["data_offsets"][1] += 10**6
    blob = json.dumps(header).encode()
    shard.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + length :])


def _index_names_missing(p: Path) -> None:
    (p / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}})
    )


def _unknown_model_type(p: Path) -> None:
    config = json.loads((p / "config.json").read_text())
    (p / "config.json").write_text(json.dumps(config | {"model_type": "bananallm"}))


def _narrow_w_o(p: Path) -> None:
    rewrite(p, lambda t: t.update({O_PROJ: t[O_PROJ][:, :16].contiguous()}))


FETCH_DAMAGE = {
    "truncated shard": (_truncated, "truncated"),
    "header not JSON": (_not_json, "not JSON"),
    "offsets past the end": (_offsets_past_end, "model.norm.weight"),
    "index names a missing shard": (_index_names_missing, "missing"),
    "unknown model_type": (_unknown_model_type, "unknown model_type 'bananallm'"),
    "W_O half as wide as config.json": (_narrow_w_o, O_PROJ),
}


@pytest.mark.parametrize("case", sorted(FETCH_DAMAGE))
def test_fetch_reads_before_it_copies(tmp_path, base, case):
    damage, needle = FETCH_DAMAGE[case]
    src = copy(base, tmp_path / "src")
    damage(src)
    before, out = tree(src), tmp_path / "out"
    assert_refused(cli("fetch", src, "--out", out), out, needle)
    assert tree(src) == before


# ---- 2. shapes against config.json ------------------------------------------------------------------------
def test_w_o_shape_names_tensor_and_both_shapes(tmp_path, base, plan):
    src = _narrow_w_o(copy(base, tmp_path / "src")) or tmp_path / "src"
    before, out = tree(src), tmp_path / "out"
    line = assert_refused(cli("export", "--model", src, "--plan", plan, "--out", out), out, O_PROJ)
    assert "[32, 16]" in line and "implies [32, 32]" in line
    assert tree(src) == before


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"num_attention_heads": None}, "no 'num_attention_heads'"),
        ({"hidden_size": "32"}, "hidden_size is '32', not a positive whole number"),
        ({"num_hidden_layers": 0}, "num_hidden_layers is 0"),
        ({"intermediate_size": None}, "no 'intermediate_size'"),
        ({"vocab_size": 95}, "model.embed_tokens.weight has shape [96, 32], but config.json implies [95, 32]"),
    ],
    ids=["missing key", "string", "zero", "missing intermediate", "vocab"],
)
def test_config_key_errors_are_one_line(tmp_path, base, plan, change, needle):
    src = copy(base, tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    (src / "config.json").write_text(json.dumps(config))
    before, out = tree(src), tmp_path / "out"
    assert_refused(cli("export", "--model", src, "--plan", plan, "--out", out), out, needle)
    assert tree(src) == before


# ---- 3. non-finite weights ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nan_base(tmp_path_factory, base) -> Path:
    def poison(tensors):
        tensors[UNTOUCHED][3, 5] = float("nan")
        tensors["model.norm.weight"][0] = float("inf")

    return rewrite(copy(base, tmp_path_factory.mktemp("nan") / "base"), poison)


def test_export_refuses_a_nan_base_and_writes_nothing(tmp_path, nan_base, plan):
    before, out = tree(nan_base), tmp_path / "out"
    result = cli("export", "--model", nan_base, "--plan", plan, "--out", out)
    line = assert_refused(result, out, f"{nan_base}/model.safetensors", UNTOUCHED, "--allow-non-finite")
    assert "holds 1 NaN/Inf value (2 tensors hold 2 in all)" in line, line
    assert result.stdout == ""
    assert sorted(os.listdir(tmp_path)) == [], "the export left something beside its --out"
    assert tree(nan_base) == before


def test_export_refusal_keeps_an_existing_output(tmp_path, nan_base, plan, export):
    out = copy(export, tmp_path / "out")
    before = tree(out)
    assert_refused(cli("export", "--model", nan_base, "--plan", plan, "--out", out, "--force"), None, UNTOUCHED)
    assert tree(out) == before and sorted(os.listdir(tmp_path)) == ["out"]


def test_allow_non_finite_copies_warns_once_and_records_it(tmp_path, nan_base, plan):
    before, out = tree(nan_base), tmp_path / "out"
    result = cli("export", "--model", nan_base, "--plan", plan, "--out", out, "--allow-non-finite")
    assert result.rc == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wedit: warning: "), result.stderr
    assert UNTOUCHED in lines[0] and "--allow-non-finite" in lines[0] and "editor_manifest.json" in lines[0]
    assert tree(nan_base) == before
    exported, source = load_file(out / "model.safetensors"), load_file(nan_base / "model.safetensors")
    assert exported[UNTOUCHED].view(torch.int32).equal(source[UNTOUCHED].view(torch.int32))  # the NaN, bit for bit
    manifest = json.loads((out / "editor_manifest.json").read_text())
    assert manifest["non_finite_base"] == {
        "allowed": True,
        "tensors": 2,
        "values": 2,
        "counts": {UNTOUCHED: 1, "model.norm.weight": 1},
    }
    assert list(manifest).index("non_finite_base") == list(manifest).index("base_model") + 1
    assert "NaN/Inf" in (out / "README.md").read_text()  # the card says so too
    assert_refused(cli("verify", out), None, "NaN/Inf", "model.")  # verify still refuses it


def test_a_clean_export_records_no_non_finite_field(export):
    manifest = json.loads((export / "editor_manifest.json").read_text())
    assert "non_finite_base" not in manifest
    assert "NaN" not in (export / "README.md").read_text()


def test_fetch_warns_about_non_finite(tmp_path, nan_base):
    out = tmp_path / "out"
    result = cli("fetch", nan_base, "--out", out)
    assert result.rc == 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wedit: warning: "), result.stderr
    assert f"{out}/model.safetensors: tensor {UNTOUCHED} holds 1 NaN/Inf value" in lines[0], lines[0]
    assert "(2 tensors hold 2 in all)" in lines[0]
    assert "`wedit export` refuses this base unless --allow-non-finite is given" in lines[0]


def test_diff_reports_non_finite_instead_of_crashing(tmp_path, base, nan_base):
    changed = rewrite(copy(base, tmp_path / "b"), lambda t: t[O_PROJ].__setitem__((0, 0), float("nan")))
    for a, b in ((base, nan_base), (base, changed), (nan_base, nan_base)):
        result = cli("diff", a, b, "--json")
        assert result.rc == 0 and "Traceback" not in result.stderr, result.stderr
        report = json.loads(result.stdout)
        assert report["non_finite"], report
    text = cli("diff", base, changed)
    assert text.rc == 0 and f"changed {O_PROJ} [32, 32]: holds NaN/Inf (A 0, B 1)" in text.stdout, text.stdout


def test_nan_in_edited_tensor_is_refused(tmp_path, base, plan):
    src = rewrite(copy(base, tmp_path / "src"), lambda t: t[O_PROJ].__setitem__((0, 20), float("nan")))
    before, out = tree(src), tmp_path / "out"
    assert_refused(cli("export", "--model", src, "--plan", plan, "--out", out), out, "NaN/Inf", O_PROJ)
    # Allowed, the NaN still reaches the bake (column 20 is outside the zeroed head), which refuses its result.
    argv = ("export", "--model", src, "--plan", plan, "--out", out, "--allow-non-finite")
    assert_refused(cli(*argv), out, "produced NaN or Inf", O_PROJ)
    assert tree(src) == before


def test_allowed_nan_that_the_edit_overwrites_bakes_clean(tmp_path, base, plan):
    src = rewrite(copy(base, tmp_path / "src"), lambda t: t[O_PROJ].__setitem__((0, 3), float("nan")))
    out = tmp_path / "out"
    result = cli("export", "--model", src, "--plan", plan, "--out", out, "--allow-non-finite")
    assert result.rc == 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert torch.isfinite(load_file(out / "model.safetensors")[O_PROJ]).all()
    assert json.loads((out / "editor_manifest.json").read_text())["non_finite_base"]["counts"] == {O_PROJ: 1}


# ---- 4. the review's other paths to a traceback -------------------------------------------------------------
@pytest.fixture(scope="module")
def broken_manifest(tmp_path_factory, export) -> Path:
    bad = copy(export, tmp_path_factory.mktemp("manifest") / "edited")
    (bad / "editor_manifest.json").write_text('{"base_model": {"source": ')
    return bad


@pytest.mark.parametrize(
    "argv",
    [
        lambda bad, base, out: ["verify", bad],
        lambda bad, base, out: ["diff", base, bad],
        lambda bad, base, out: ["push", bad, "--repo", "me/edited", "--dry-run"],
        lambda bad, base, out: ["eval", bad, "--out", out],
        lambda bad, base, out: ["gguf", bad, "--out", f"{out}.gguf"],
    ],
    ids=["verify", "diff", "push", "eval", "gguf"],
)
def test_manifest_not_json(tmp_path, broken_manifest, base, argv):
    before, out = tree(broken_manifest), tmp_path / "out"
    assert_refused(cli(*argv(broken_manifest, base, out)), out, "editor_manifest.json", "not valid JSON")
    assert tree(broken_manifest) == before


def test_manifest_of_the_wrong_shape(tmp_path, export):
    bad = copy(export, tmp_path / "edited")
    manifest = json.loads((bad / "editor_manifest.json").read_text())
    (bad / "editor_manifest.json").write_text(json.dumps(manifest | {"verification": ["passed"]}))
    assert_refused(cli("push", bad, "--repo", "me/edited", "--dry-run"), None, "verification")


def test_set_value_not_yaml(tmp_path):
    out = tmp_path / "run"
    assert_refused(
        cli("run", "smollm2-always_late", "--out", out, "--set", "attribute.seeds=[1,"), out, "not valid YAML"
    )


def test_comma_list_with_a_word(tmp_path, base):
    out = tmp_path / "out"
    assert_refused(cli("steer", "--model", base, "--alphas", "0.5,lots", "--out", out), out, "--alphas")


def test_layer_range_with_unicode_digits(tmp_path, base):
    out = tmp_path / "plan.json"
    assert_refused(cli("import-vectors", "v.gguf", "--model", base, "--layers", "²-3", "--out", out), out, "--layers")


def test_vllm_timeout_is_one_line_and_stops_the_engine(tmp_path, monkeypatch):
    from editor.engines import vllm_worker

    pids = tmp_path / "pids"
    engine = f"import os, subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(pids)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    monkeypatch.setattr(vllm_worker, "vllm_available", lambda: True)
    monkeypatch.setattr(vllm_worker, "_worker_command", lambda req, resp: [sys.executable, "-c", engine])
    with pytest.raises(EditorError) as err:
        vllm_worker.run_vllm({"model": "m", "prompts": []}, what="wedit verify --vllm", timeout=3)
    assert "did not finish" in str(err.value) and "\n" not in str(err.value)
    worker = int(pids.read_text())
    with pytest.raises(ProcessLookupError):  # the engine's own child went with it
        for _ in range(50):
            os.kill(worker, 0)
            subprocess.run(["sleep", "0.1"], check=False)


def test_unexpected_exception_is_one_line_and_debug_shows_the_traceback(monkeypatch):
    from editor.cli import archs

    def boom(args):
        raise ValueError("boom")

    monkeypatch.setattr(archs, "run", boom)
    line = assert_refused(cli("archs"), None, "internal error in archs: ValueError: boom", "--debug", status=1)
    assert re.search(r"rerun with --debug for the traceback", line)
    debug = cli("--debug", "archs")
    assert debug.rc == 1 and "Traceback" in debug.stderr and 'raise ValueError("boom")' in debug.stderr


# ---- pickle is never loaded ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["fetch", "export", "eval", "inject"])
def test_pickle_only_checkpoint_never_loaded(tmp_path, base, plan, command):
    src = tmp_path / "old"
    src.mkdir()
    shutil.copy(base / "config.json", src)
    marker = tmp_path / "pwned"
    hostile_pickle(src / "pytorch_model.bin", marker)
    before, out = tree(src), tmp_path / "out"
    assert_refused(cli(*READERS[command](src, base, out, plan)), out, "pickle", "never loads")
    assert not marker.exists() and tree(src) == before


def test_pickle_beside_safetensors_is_ignored(tmp_path, base):
    from editor.engines.loading import load_model

    src = copy(base, tmp_path / "both")
    marker = tmp_path / "pwned"
    hostile_pickle(src / "pytorch_model.bin", marker)
    load_model(src)
    assert not marker.exists()


# ---- 5. atomic writes -----------------------------------------------------------------------------------------
def test_failed_force_keeps_the_old_output(tmp_path):
    from editor.io.atomic import staged_directory

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_directory(out, force=True) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("killed mid-build")
    assert tree(out) == tree(out) and (out / "old.txt").read_text() == "old" and not (out / "new.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_next_run_puts_back_an_old_output_left_hidden(tmp_path):
    """The fallback swap killed between its renames leaves .NAME.old-PID; the next run restores it first."""
    from editor.io.atomic import staged_directory

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hidden = tmp_path / f".out.old-{dead.pid}"
    hidden.mkdir()
    (hidden / "old.txt").write_text("old")
    out = tmp_path / "out"
    with pytest.raises(EditorError, match="already exists"), staged_directory(out, force=False):
        pass
    assert (out / "old.txt").read_text() == "old" and not hidden.exists()


def test_replace_file_keeps_the_old_file_when_writing_fails(tmp_path):
    from editor.io.atomic import replace_file

    path = tmp_path / "README.md"
    path.write_text("old card")

    def fail(tmp):
        tmp.write_text("half a ca")
        raise OSError("disk full")

    with pytest.raises(OSError):
        replace_file(path, fail)
    assert path.read_text() == "old card" and [p.name for p in tmp_path.iterdir()] == ["README.md"]


def test_user_facing_files_go_through_the_atomic_writer():
    """No `.write_text(` outside editor/io/atomic.py, but for the vLLM worker's private temp files."""
    editor = Path(__file__).resolve().parent.parent / "editor"
    found = [
        f"{path.relative_to(editor)}:{n}"
        for path in editor.rglob("*.py")
        if path.name not in ("atomic.py", "vllm_worker.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if ".write_text(" in line or ".write_bytes(" in line
    ]
    assert not found, found
