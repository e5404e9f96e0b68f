"""The checkpoint validator, rule by rule, against what `safetensors.safe_open` itself accepts or refuses.

Every case that breaks a rule is refused by safe_open and by editor; every edge case safe_open accepts
(whitespace after the JSON, a null ``__metadata__``, a zero-size tensor, extra fields) editor accepts too.
A hypothesis property then mutates real headers at random: editor never accepts a file safe_open refuses.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from editor.errors import EditorError
from editor.io.checkpoint import Checkpoint
from editor.io.safetensors_header import HEADER_LIMIT, read_header
from tests.hostile import join_file, no_pickle  # noqa: F401 (autouse fixture)
from tests.tiny import build_model, save_model, tiny_configs

DATA = np.arange(4, dtype=np.float32).tobytes()
A = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}


def safetensors_accepts(path: Path) -> bool:
    try:
        with safe_open(path, framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                fh.get_tensor(key)
        return True
    except Exception:  # any refusal: SafetensorError, or a dtype torch lacks
        return False


def editor_accepts(path: Path) -> bool:
    try:
        read_header(path)
        return True
    except EditorError as err:
        assert "\n" not in str(err)
        return False


def raw(text: str) -> bytes:
    return text.encode()


# (case, file bytes, what editor's one line says): every one is refused by safe_open too.
REFUSED = [
    ("shorter than 8 bytes", b"\x01\x00", "too short"),
    ("header length over 100 MB", join_file({"a": A}, DATA, length=HEADER_LIMIT + 1), "over safetensors' limit"),
    ("header length 2^62", join_file({"a": A}, DATA, length=2**62), "over safetensors' limit"),
    ("header length past the end", join_file({"a": A}, DATA, length=1000), "runs past the end"),
    ("header length 0", join_file({"a": A}, DATA, length=0), "not JSON"),
    (
        "header not UTF-8",
        join_file(b'{"__metadata__":{"x":"\xff"},"a":' + json.dumps(A).encode() + b"}", DATA),
        "UTF-8",
    ),
    ("header not JSON", join_file(raw('{"a": {"dtype": "F32",'), DATA), "not JSON"),
    ("trailing NUL after the JSON", join_file(json.dumps({"a": A}).encode() + b"\0", DATA), "not JSON"),
    ("UTF-8 byte order mark", join_file(b"\xef\xbb\xbf" + json.dumps({"a": A}).encode(), DATA), "not JSON"),
    ("header a list", join_file(raw("[]"), b""), "not an object"),
    ("NaN literal", join_file(raw('{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 16]}}'), DATA), "NaN"),
    ("lone surrogate", join_file(raw('{"\\ud800": ' + json.dumps(A) + "}"), DATA), "surrogate"),
    ("metadata not strings", join_file({"__metadata__": {"x": 1}, "a": A}, DATA), "__metadata__"),
    ("metadata a list", join_file({"__metadata__": [], "a": A}, DATA), "__metadata__"),
    ("tensor missing shape", join_file({"a": {"dtype": "F32", "data_offsets": [0, 16]}}, DATA), "lacks"),
    ("tensor null", join_file({"a": None}, DATA), "lacks"),
    ("unknown dtype", join_file({"a": {**A, "dtype": "F33"}}, DATA), "unknown dtype"),
    ("lower-case dtype", join_file({"a": {**A, "dtype": "f32"}}, DATA), "unknown dtype"),
    ("float shape", join_file({"a": {**A, "shape": [4.0]}}, DATA), "unsigned integers"),
    ("negative shape", join_file({"a": {**A, "shape": [-4]}}, DATA), "negative"),
    ("boolean shape", join_file({"a": {**A, "shape": [True, 4]}}, DATA), "unsigned integers"),
    ("shape beyond 64 bits", join_file({"a": {**A, "shape": [2**64, 0]}, "b": A}, DATA), "unsigned integers"),
    (
        "shape product overflows",
        join_file({"z": {"dtype": "F32", "shape": [2**32, 2**32, 0], "data_offsets": [0, 0]}, "a": A}, DATA),
        "overflows",
    ),
    ("three offsets", join_file({"a": {**A, "data_offsets": [0, 16, 16]}}, DATA), "two unsigned"),
    ("float offset", join_file({"a": {**A, "data_offsets": [0, 16.0]}}, DATA), "two unsigned"),
    ("size disagrees with shape", join_file({"a": {**A, "shape": [3]}}, DATA), "needs 12"),
    ("end before start", join_file({"a": {**A, "data_offsets": [16, 0]}}, DATA), "span"),
    ("gap before the first tensor", join_file({"a": {**A, "shape": [3], "data_offsets": [4, 16]}}, DATA), "gap"),
    ("two tensors overlap", join_file({"a": A, "b": A}, DATA), "overlap"),
    ("data longer than the tensors", join_file({"a": A}, DATA + b"\0"), "1 bytes after the last tensor"),
    ("data shorter than the tensors", join_file({"a": A}, DATA[:-4]), "truncated"),
    ("empty header, some data", join_file({}, DATA), "bytes after the last tensor"),
    (
        "leading-zero number",
        join_file(raw('{"a": {"dtype": "F32", "shape": [04], "data_offsets": [0, 16]}}'), DATA),
        "not JSON",
    ),
    (
        "exponent number",
        join_file(raw('{"a": {"dtype": "F32", "shape": [4e0], "data_offsets": [0, 16]}}'), DATA),
        "unsigned",
    ),
    ("minus zero", join_file(raw('{"a": {"dtype": "F32", "shape": [-0], "data_offsets": [0, 16]}}'), DATA), "negative"),
    (
        "sub-byte dtype",
        join_file({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, DATA[:2]),
        "unknown dtype",
    ),
]

# Edge cases safe_open accepts; editor must accept them too.
ACCEPTED = [
    ("plain", join_file({"a": A}, DATA)),
    ("spaces after the JSON", join_file(json.dumps({"a": A}).encode() + b"    ", DATA)),
    ("spaces before the JSON", join_file(b"  " + json.dumps({"a": A}).encode(), DATA)),
    ("null metadata", join_file({"__metadata__": None, "a": A}, DATA)),
    ("string metadata", join_file({"__metadata__": {"format": "pt"}, "a": A}, DATA)),
    ("extra field in a tensor", join_file({"a": {**A, "note": "x"}}, DATA)),
    ("empty file body", join_file({}, b"")),
    ("zero-size tensors", join_file({"z": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": A}, DATA)),
    (
        "scalar",
        join_file(
            {
                "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
                "a": {**A, "shape": [3], "data_offsets": [4, 16]},
            },
            DATA,
        ),
    ),
    ("empty tensor name", join_file({"": A}, DATA)),
    ("FP8 tensor", join_file({"a": {"dtype": "F8_E4M3", "shape": [16], "data_offsets": [0, 16]}}, DATA)),
]


@pytest.mark.parametrize("case,data,needle", REFUSED, ids=[c[0] for c in REFUSED])
def test_rule_refused_like_safetensors(tmp_path, case, data, needle):
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert not safetensors_accepts(path), f"safe_open accepts {case}: the rule is not safetensors'"
    with pytest.raises(EditorError) as err:
        read_header(path)
    assert needle in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("case,data", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_edge_accepted_like_safetensors(tmp_path, case, data):
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert safetensors_accepts(path)
    metas, _ = read_header(path)
    with safe_open(path, framework="pt") as fh:
        assert set(metas) == set(fh.keys())


def test_duplicate_key_refused_though_safetensors_keeps_the_last(tmp_path):
    """Stricter than safetensors on purpose: two entries for one tensor is a damaged file, whichever wins."""
    path = tmp_path / "model.safetensors"
    small = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    path.write_bytes(join_file(raw('{"a": ' + json.dumps(small) + ', "a": ' + json.dumps(A) + "}"), DATA))
    assert safetensors_accepts(path)
    with pytest.raises(EditorError, match="appears twice"):
        read_header(path)


@pytest.fixture(scope="module")
def tiny_file(tiny_checkpoint) -> bytes:
    return (tiny_checkpoint("llama") / "model.safetensors").read_bytes()


@st.composite
def mutated_file(draw, original: bytes) -> bytes:
    """A tiny checkpoint's file with one to three random byte edits in its length field, header or data."""
    (length,) = struct.unpack("<Q", original[:8])
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["length", "header", "header", "header", "cut", "append"]))
        if where == "length":
            new = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(max(0, length - 16), length + 16)))
            data[:8] = struct.pack("<Q", new)
        elif where == "header":
            pos = draw(st.integers(8, 8 + length - 1))
            data[pos] = draw(st.sampled_from(b'0123456789[]{},:" -eE.\\\x00\xff'))
        elif where == "cut":
            del data[len(data) - draw(st.integers(1, 64)) :]
        else:
            data += bytes(draw(st.integers(1, 8)))
    return bytes(data)


@settings(max_examples=400, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_never_accepts_what_safetensors_refuses(tiny_file, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("mut", numbered=True) / "model.safetensors"
    path.write_bytes(data.draw(mutated_file(tiny_file)))
    ours, theirs = editor_accepts(path), safetensors_accepts(path)
    event(f"editor {'accepts' if ours else 'refuses'}, safetensors {'accepts' if theirs else 'refuses'}")
    assert not (ours and not theirs), "editor accepted a file safetensors refuses"
    if ours:
        metas, _ = read_header(path)
        with safe_open(path, framework="pt") as fh:
            assert set(metas) == set(fh.keys())
    shutil.rmtree(path.parent)


def _sharded(tmp_path: Path) -> Path:
    path = tmp_path / "sharded"
    build_model(tiny_configs()["llama"]).save_pretrained(path, max_shard_size="20KB")
    return path


def _rewrite_index(path: Path, edit) -> None:
    index = path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    edit(data)
    index.write_text(json.dumps(data))


INDEX_CASES = {
    "not JSON": (lambda p: (p / "model.safetensors.index.json").write_text("{not json"), "not valid JSON"),
    "no weight_map": (lambda p: _rewrite_index(p, lambda d: d.pop("weight_map")), "no weight_map"),
    "weight_map a list": (lambda p: _rewrite_index(p, lambda d: d.update(weight_map=[])), "no weight_map"),
    "shard outside the folder": (
        lambda p: _rewrite_index(p, lambda d: d["weight_map"].update({"model.norm.weight": "../x.safetensors"})),
        "not a .safetensors file in this folder",
    ),
    "tensor the shards lack": (
        lambda p: _rewrite_index(
            p, lambda d: d["weight_map"].update({"ghost.weight": next(iter(d["weight_map"].values()))})
        ),
        "ghost.weight",
    ),
    "tensor the index omits": (
        lambda p: _rewrite_index(p, lambda d: d["weight_map"].pop("model.norm.weight")),
        "does not name it",
    ),
    "tensor in the wrong shard": (
        lambda p: _rewrite_index(
            p,
            lambda d: d["weight_map"].update(
                {"model.norm.weight": sorted(set(d["weight_map"].values()) - {d["weight_map"]["model.norm.weight"]})[0]}
            ),
        ),
        "places it in",
    ),
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_index_and_headers_agree(tmp_path, case):
    path = _sharded(tmp_path)
    damage, needle = INDEX_CASES[case]
    damage(path)
    with pytest.raises(EditorError) as err:
        Checkpoint.open(path)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_config_not_an_object(tmp_path):
    path = save_model(build_model(tiny_configs()["llama"]), tmp_path / "m")
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(EditorError, match="not an object"):
        Checkpoint.open(path)
