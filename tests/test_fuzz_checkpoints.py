"""Property-based fuzzing: `wedit fetch`, `export` and `diff` on randomly damaged tiny checkpoints.

Each example mutates a tiny Llama checkpoint (single file or sharded): the header's bytes, its length
field, tensors' offsets, dtypes, shapes and names, ``__metadata__``, the file's length, a NaN written into
the data, or the shard index. For every example the command either succeeds with output identical to
what safetensors reads from the input, or fails with exit status 2 and one line on stderr, no traceback,
no output folder; the input's bytes never change and nothing is unpickled (tests.hostile.no_pickle).
Exit status 1 (an unexpected exception) fails the test.

Profile (``FUZZ``): 300 examples per command (``EDITOR_FUZZ_EXAMPLES=N`` for more), ``derandomize=True``
(a fixed seed: the same examples on every run and machine), no deadline, no example database. Commands
run in this process through ``editor.cli.main`` and write to tmpfs where there is one; the three commands
take about a minute together on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from tests.hostile import assert_refused, cli, fast_tmp, join_file, no_pickle, split_file, tree  # noqa: F401
from tests.tiny import build_model, tiny_configs

EXAMPLES = int(os.environ.get("EDITOR_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
INDEX = "model.safetensors.index.json"
EDITED = "model.layers.1.self_attn.o_proj.weight"  # the plan zeroes head 0 (columns 0..7) of this tensor
HEAD_DIM = 8
DTYPES = ["F32", "F16", "BF16", "F64", "I32", "U32", "I8", "U8", "BOOL", "F8_E4M3", "C64", "F4", "X32", 7, None]


@pytest.fixture(scope="module")
def bases():
    root = fast_tmp()
    model = build_model(tiny_configs()["llama"])
    model.save_pretrained(root / "single")
    model.save_pretrained(root / "sharded", max_shard_size="40KB")
    (root / "plan.json").write_text(json.dumps([{"kind": "zero_heads", "layer": 1, "heads": [0]}]))
    yield root
    shutil.rmtree(root, ignore_errors=True)


# ---- mutations ------------------------------------------------------------------------------------------
def _names(header: dict) -> list[str]:
    return sorted(k for k in header if k != "__metadata__")


def _mutate_entry(data, header: dict) -> None:
    """One change to the parsed header: offsets, dtype, shape, metadata, a name, or a whole entry."""
    names = _names(header)
    if not names:  # an earlier mutation dropped the shard's only tensor
        return
    name = data.draw(st.sampled_from(names))
    entry = header[name]
    kind = data.draw(st.sampled_from(["offset", "swap", "dtype", "shape", "metadata", "rename", "drop"]))
    if kind == "offset":
        i = data.draw(st.integers(0, 1))
        entry["data_offsets"][i] += data.draw(st.sampled_from([-4, -1, 1, 4, 64, 2**40, -(10**6)]))
    elif kind == "swap":  # valid when both tensors have the same byte size: safetensors then reads them swapped
        other = header[data.draw(st.sampled_from(names))]
        entry["data_offsets"], other["data_offsets"] = other["data_offsets"], entry["data_offsets"]
    elif kind == "dtype":
        entry["dtype"] = data.draw(st.sampled_from(DTYPES))
    elif kind == "shape":
        shape = list(entry["shape"])
        change = data.draw(st.sampled_from(["dim", "append", "drop", "reverse", "negative", "float", "half"]))
        if change == "dim" and shape:
            shape[data.draw(st.integers(0, len(shape) - 1))] += data.draw(st.sampled_from([-1, 1, 16]))
        elif change == "append":
            shape.append(1)
        elif change == "drop" and shape:
            shape.pop()
        elif change == "reverse":
            shape.reverse()
        elif change == "negative" and shape:
            shape[0] = -shape[0]
        elif change == "float" and shape:
            shape[0] = float(shape[0])
        elif change == "half" and shape:  # half as many columns, twice as many bytes each: the same byte size
            shape[-1] //= 2
            entry["dtype"] = "F64" if entry["dtype"] == "F32" else entry["dtype"]
        entry["shape"] = shape
    elif kind == "metadata":
        header["__metadata__"] = data.draw(
            st.sampled_from([None, {}, {"format": "pt"}, {"format": "np", "x": "y"}, {"x": 1}, [], "pt"])
        )
    elif kind == "rename":
        header[data.draw(st.sampled_from([*names, name + ".x", "", "lm_head.bias"]))] = header.pop(name)
    else:
        del header[name]


def _mutate_bytes(data, blob: bytes) -> bytes:
    """One change to the file's bytes: a header byte, the length field, the length of the data, or a NaN."""
    length, head, body = split_file(blob)
    kind = data.draw(st.sampled_from(["byte", "length", "cut", "append", "nan", "spaces"]))
    if kind == "byte":
        pos = data.draw(st.integers(0, len(head) - 1))
        head = head[:pos] + bytes([data.draw(st.sampled_from(b'0123456789[]{},:" -eE.\\\x00\xff'))]) + head[pos + 1 :]
    elif kind == "length":
        length = data.draw(st.sampled_from([0, 1, length - 1, length + 1, length + 8, 2**62, 2**64 - 1, 10**8 + 1]))
    elif kind == "cut":
        body = body[: len(body) - data.draw(st.integers(1, 64))]
    elif kind == "append":
        body += bytes(data.draw(st.integers(1, 16)))
    elif kind == "nan" and len(body) >= 4:  # a valid file whose F32 data holds a NaN (or, in another dtype, noise)
        pos = 4 * data.draw(st.integers(0, len(body) // 4 - 1))
        body = body[:pos] + bytes.fromhex("0000c07f") + body[pos + 4 :]
    elif kind == "spaces":  # valid: whitespace after the JSON
        head += b" " * data.draw(st.integers(1, 9))
        length = len(head)
    return join_file(head, body, length)


def _mutate_file(data, blob: bytes) -> bytes:
    for _ in range(data.draw(st.integers(0, 2))):
        _, head, body = split_file(blob)
        header = json.loads(head)
        _mutate_entry(data, header)
        indent = data.draw(st.sampled_from([None, None, 1]))
        blob = join_file(json.dumps(header, indent=indent).encode(), body)
    if data.draw(st.booleans()):
        blob = _mutate_bytes(data, blob)
    return blob


def _mutate_index(data, path: Path) -> None:
    text = path.read_text()
    index = json.loads(text)
    weight_map = index["weight_map"]
    shards = sorted(set(weight_map.values()))
    name = data.draw(st.sampled_from(sorted(weight_map)))
    kind = data.draw(st.sampled_from(["cut", "no_map", "move", "forget", "ghost", "outside", "number", "list"]))
    if kind == "cut":
        path.write_text(text[: data.draw(st.integers(0, len(text) - 1))])
        return
    if kind == "no_map":
        del index["weight_map"]
    elif kind == "move":
        weight_map[name] = data.draw(st.sampled_from(shards))
    elif kind == "forget":
        del weight_map[name]
    elif kind == "ghost":
        weight_map["ghost.weight"] = data.draw(st.sampled_from(shards))
    elif kind == "outside":
        weight_map[name] = data.draw(st.sampled_from(["../" + weight_map[name], "/etc/passwd", "missing.safetensors"]))
    elif kind == "number":
        weight_map[name] = 3
    else:
        index = [index]
    path.write_text(json.dumps(index))


def _damaged(data, bases: Path, root: Path) -> tuple[Path, Path]:
    """A damaged copy of one of the tiny checkpoints under ``root``; returns it and its pristine original."""
    variant = data.draw(st.sampled_from(["single", "single", "sharded"]))
    original = bases / variant
    src = root / "src"
    shutil.copytree(original, src)
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    if variant == "sharded" and data.draw(st.booleans()):
        _mutate_index(data, src / INDEX)
    else:
        victim = src / data.draw(st.sampled_from(shards))
        victim.write_bytes(_mutate_file(data, victim.read_bytes()))
    return src, original


# ---- what safetensors reads -------------------------------------------------------------------------------
def read_all(path: Path) -> dict[str, torch.Tensor] | None:
    """Every tensor as safetensors reads it from the shards the index names (transformers reads no others), or
    from model.safetensors; None when the index is unreadable or safetensors refuses a shard."""
    try:
        if (Path(path) / INDEX).is_file():
            files = sorted(
                {Path(path) / f for f in json.loads((Path(path) / INDEX).read_text())["weight_map"].values()}
            )
        else:
            files = [Path(path) / "model.safetensors"]
        tensors: dict[str, torch.Tensor] = {}
        for file in files:
            with safe_open(file, framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                    tensors[key] = fh.get_tensor(key)
    except Exception:
        return None
    return tensors


def bits(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and bits(a[k]) == bits(b[k]) for k in a
    )


def _non_finite(tensor: torch.Tensor) -> bool:
    if tensor.is_complex():
        return not bool(torch.isfinite(tensor).all())
    return tensor.is_floating_point() and not bool(torch.isfinite(tensor.float()).all())


# ---- the properties ---------------------------------------------------------------------------------------
def _accepted(result, out: Path | None, command: str, *sources: Path) -> list[dict] | None:
    """None when the command refused cleanly; else it succeeded, and safetensors must read every source too
    (their tensors are returned for the command's own comparison)."""
    if result.rc == 2:
        assert_refused(result, out)
        return None
    assert result.rc == 0, result.stderr
    tensors = [read_all(src) for src in sources]
    assert all(t is not None for t in tensors), f"{command} accepted a checkpoint safetensors refuses"
    return tensors


def _check_fetch(src: Path, original: Path, out: Path, bases: Path) -> str:
    result = cli("fetch", src, "--out", out)
    if (accepted := _accepted(result, out, "fetch", src)) is None:
        return "refused"
    (reference,) = accepted
    copied = read_all(out)
    assert copied is not None and same(copied, reference)
    bad = {k for k, t in reference.items() if _non_finite(t)}
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == (1 if bad else 0), result.stderr
    if bad:  # one line: the first tensor holding NaN/Inf, and how many do
        assert warnings[0].split("tensor ")[1].split(" holds")[0] in bad, warnings[0]
        assert len(bad) == 1 or f"({len(bad)} tensors hold" in warnings[0], warnings[0]
    return "ok"


def _check_export(src: Path, original: Path, out: Path, bases: Path) -> str:
    argv = ["export", "--model", src, "--plan", bases / "plan.json", "--out", out]
    result = cli(*argv)
    if result.rc == 2 and "--allow-non-finite" in result.stderr:  # a base holding NaN/Inf: refused, writing nothing
        assert_refused(result, out)
        reference = read_all(src)
        assert reference is not None and any(_non_finite(t) for t in reference.values()), result.stderr
        result = cli(*argv, "--allow-non-finite")  # copied knowingly: the export must then be exact
    if (accepted := _accepted(result, out, "export", src)) is None:
        return "refused"
    (expected,) = accepted
    bad = {k for k, t in expected.items() if _non_finite(t)}
    assert ("non_finite_base" in json.loads((out / "editor_manifest.json").read_text())) == bool(bad)
    expected[EDITED] = expected[EDITED].clone()
    expected[EDITED][:, :HEAD_DIM] = 0
    exported = read_all(out)
    assert exported is not None and same(exported, expected)
    return "ok"


def _check_diff(src: Path, original: Path, out: Path, bases: Path) -> str:
    result = cli("diff", original, src, "--json")
    if (accepted := _accepted(result, None, "diff", original, src)) is None:
        return "refused"
    a, b = accepted
    report = json.loads(result.stdout)
    status = {t["name"]: t["status"] for t in report["tensors"]}
    expected = {n: "added" for n in b.keys() - a.keys()} | {n: "removed" for n in a.keys() - b.keys()}
    for name in a.keys() & b.keys():
        if a[name].shape != b[name].shape:
            expected[name] = "reshaped"
        elif a[name].dtype != b[name].dtype or bits(a[name]) != bits(b[name]):
            expected[name] = "changed"
    assert status == expected
    flagged = {line.rsplit(": ", 1)[0] for line in report["non_finite"]}
    assert flagged == {n for side in (a, b) for n, t in side.items() if _non_finite(t)}
    return "ok"


def _fuzz(check, bases: Path) -> Counter:
    outcomes: Counter = Counter()

    @FUZZ
    @given(st.data())
    def example(data):
        root = fast_tmp()
        try:
            src, original = _damaged(data, bases, root)
            before = tree(src)
            outcomes[check(src, original, root / "out", bases)] += 1
            assert tree(src) == before, "the input changed"
        finally:
            shutil.rmtree(root, ignore_errors=True)

    example()
    return outcomes


@pytest.mark.parametrize("check", [_check_fetch, _check_export, _check_diff], ids=["fetch", "export", "diff"])
def test_fuzz(bases, check):
    outcomes = _fuzz(check, bases)
    print(f"{check.__name__}: {dict(outcomes)}")  # shown with -s
    total = sum(outcomes.values())
    assert total >= EXAMPLES
    # Both outcomes are exercised: some damage is harmless (whitespace, metadata, swapped equal-size tensors).
    assert outcomes["ok"] >= total // 20 and outcomes["refused"] >= total // 3, outcomes
