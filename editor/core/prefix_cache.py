"""Replay the layers an edit cannot change: a sweep whose edits all sit at or after layer ``s`` reuses layers 0..s-1.

A sweep scores one model under many edits on the same inputs (perplexity
windows, held-out prompts, neutral prompts). When every edit of a point sits
in layer ``s`` or later, the outputs of layers ``0..s-1`` are those of the
unedited model, so they are recorded once per input and replayed: a replayed
layer returns its recorded output without computing. The replay is exact
(the recorded tensors are what those layers computed on the same input).

Only plain forward passes are cached: a call that brings a KV cache
(generation) or embeddings instead of token ids runs every layer, because a
skipped layer would leave its KV-cache entry empty for the next step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from editor.core.model_info import ModelInfo

DEFAULT_MAX_BYTES = 2 << 30  # recorded activations kept at most; beyond it new inputs simply run in full


def _input_key(kwargs: dict[str, Any]) -> str | None:
    """A digest of the token ids, attention mask and positions, or None for a call that must run in full."""
    ids = kwargs.get("input_ids")
    if ids is None or kwargs.get("inputs_embeds") is not None:
        return None
    if kwargs.get("past_key_values") is not None or kwargs.get("use_cache"):
        return None  # the caller will read the KV cache, which replayed layers would leave empty
    digest = hashlib.sha1()
    for name in ("input_ids", "attention_mask", "position_ids"):
        value = kwargs.get(name)
        if value is not None:
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _clone(output: Any) -> Any:
    """A copy that a later in-place update in the next layer cannot reach back into."""
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, tuple):
        return tuple(_clone(item) for item in output)
    return output


def _nbytes(output: Any) -> int:
    if isinstance(output, torch.Tensor):
        return output.numel() * output.element_size()
    if isinstance(output, tuple):
        return sum(_nbytes(item) for item in output)
    return 0


class PrefixCache:
    """Records each decoder layer's output per input; inside ``clean_below(s)`` layers ``0..s-1`` are replayed."""

    def __init__(self, model: torch.nn.Module, info: ModelInfo, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.model = model
        self.layers = [model.get_submodule(f"{info.arch.layers}.{i}") for i in range(info.num_layers)]
        self.max_bytes = max_bytes
        self.bytes = 0
        self.replayed = 0  # forward calls that skipped at least one layer (for tests and progress notes)
        self._records: dict[str, list[Any]] = {}  # input key -> outputs of layers 0..len-1
        self._clean = 0  # layers below this index are not touched by the current edits
        self._key: str | None = None
        self._replay = False  # decided once per forward call: replay layers 0..clean-1, or run and record them

    @contextmanager
    def clean_below(self, start: int) -> Iterator[None]:
        """Declare that the edits in force touch no layer below ``start`` (the caller's promise; 0 turns replay off)."""
        previous = self._clean
        self._clean = max(0, min(start, len(self.layers)))
        handle = self.model.register_forward_pre_hook(self._on_call, with_kwargs=True)
        originals = [layer.forward for layer in self.layers[: self._clean]]
        for index, layer in enumerate(self.layers[: self._clean]):
            layer.forward = self._wrap(index, layer.forward)
        try:
            yield
        finally:
            for layer, original in zip(self.layers, originals, strict=False):
                layer.forward = original
            handle.remove()
            self._clean, self._key, self._replay = previous, None, False

    def _on_call(self, _module, args, kwargs):
        merged = dict(kwargs)
        if args:
            merged.setdefault("input_ids", args[0])
        self._key = _input_key(merged)
        recorded = self._records.get(self._key) if self._key is not None else None
        self._replay = recorded is not None and len(recorded) >= self._clean > 0
        self.replayed += self._replay
        return None

    def _wrap(self, index: int, forward):
        def replay_or_record(*args, **kwargs):
            key = self._key
            if key is None:
                return forward(*args, **kwargs)
            if self._replay:
                return _clone(self._records[key][index])
            output = forward(*args, **kwargs)
            recorded = self._records.setdefault(key, [])
            if len(recorded) == index and self.bytes + _nbytes(output) <= self.max_bytes:
                recorded.append(_clone(output))
                self.bytes += _nbytes(output)
            return output

        return replay_or_record
