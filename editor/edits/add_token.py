"""Add one token to the vocabulary: a tokenizer entry, an embedding row and (untied) an lm_head row.

The vectors are stored in the edit itself (as ``residual_add`` stores its
vector), so the manifest alone can rebuild or verify the export; ``source``
names the ``wedit inject`` artifact they came from. ``token_id`` is the id the
source tokenizer gives the token when it is added (its current length):
equal to the number of embedding rows, the row is appended; smaller (the
checkpoint already carries spare rows, as many padded vocabularies do), that
spare row is taken over. ``pad_to_multiple_of`` pads the vocabulary with zero
rows for engines that want a round size; a zero row has logit exactly 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from editor.core.bake import OUTPUT_SIDE, BakeProgram
from editor.core.model_info import ModelInfo
from editor.edits.base import Edit, as_array, check_vector
from editor.errors import EditorError, RefusedEdit


def _padded(rows: int, multiple: int | None) -> int:
    return rows if not multiple else -(-rows // multiple) * multiple


class AddToken(Edit):
    kind: Literal["add_token"] = "add_token"
    token: str = Field(min_length=1)
    token_id: int = Field(ge=0)
    embedding: list[float]
    lm_head: list[float] | None = None  # untied models only: the token's own readout row
    pad_to_multiple_of: int | None = Field(default=None, ge=1)
    source: str | None = None

    # ---- facts about the checkpoint ---------------------------------------------------------
    @staticmethod
    def _embedding_name(info: ModelInfo) -> str:
        return info.tensor_name(info.arch.embeddings[0])

    @staticmethod
    def _head_name(info: ModelInfo) -> str:
        return info.tensor_name(info.arch.lm_head, must_exist=info.has_tensor(info.arch.lm_head))

    def validate_for(self, info: ModelInfo) -> None:
        check_vector(self.embedding, info.hidden_size, f"add_token {self.token}: embedding")
        if info.tied and self.lm_head is not None:
            raise EditorError(
                f"add_token {self.token}: this model ties lm_head to the embedding, so drop the lm_head vector"
            )
        if not info.tied:
            if self.lm_head is None:
                raise EditorError(
                    f"add_token {self.token}: this model has its own lm_head; the edit needs an lm_head vector"
                )
            check_vector(self.lm_head, info.hidden_size, f"add_token {self.token}: lm_head")
        # token_id may exceed the rows when an earlier add_token in the plan appends first; the bake checks the count.

    def _rows_fn(self, vector: np.ndarray):
        # The exporter sizes the tensor first (program.resized; new rows start as zeros), so the op only writes
        # the token's row, block by block.
        def put(w: np.ndarray, first: int) -> np.ndarray:  # rows [first, first + len(w)) of the table
            if first <= self.token_id < first + len(w):
                w[self.token_id - first] = vector
            return w

        return put

    def _final_rows(self, program: BakeProgram, name: str) -> int:
        rows = program.resized[name][0] if name in program.resized else program.info.tensors[name].shape[0]
        if self.token_id > rows:
            raise RefusedEdit(
                f"add_token {self.token}: id {self.token_id} would leave a gap after {rows} rows; "
                "add tokens in id order in the plan"
            )
        return _padded(max(rows, self.token_id + 1), self.pad_to_multiple_of)

    def prepare(self, program: BakeProgram) -> None:
        # Runs before any bake: an edit that later unties lm_head must give the copy this row too.
        if program.info.tied:
            program.tied_row_ops.append((self._rows_fn(as_array(self.embedding)), self.describe()))  # row-wise

    def bake(self, program: BakeProgram) -> None:
        info = program.info
        emb = self._embedding_name(info)
        rows = self._final_rows(program, emb)
        hidden = info.hidden_size
        program.add_op(emb, OUTPUT_SIDE, self._rows_fn(as_array(self.embedding)), self.describe(), rowwise=True)
        program.resized[emb] = (rows, hidden)
        if not info.tied:
            head = self._head_name(info)
            put = self._rows_fn(as_array(self.lm_head or []))
            program.add_op(head, OUTPUT_SIDE, put, self.describe(), rowwise=True)
            program.resized[head] = (rows, hidden)
        elif (untied := info.stored_name(f"{info.arch.lm_head}.weight")) in program.new_tensors:  # by an earlier edit
            program.resized[untied] = (rows, hidden)
        vocab_key = "vocab_size"
        program.config_updates[vocab_key] = max(rows, int(program.config_updates.get(vocab_key, 0)))
        program.added_tokens.append((self.token, self.token_id))

    def hook(self, model, info: ModelInfo):
        import torch

        emb = model.get_input_embeddings()
        head = model.get_output_embeddings()
        rows = emb.weight.shape[0]
        token_id, multiple = self.token_id, self.pad_to_multiple_of
        # Round as the export stores them, so hooked and baked models see the very same rows.
        stored = {"BF16": torch.bfloat16, "F16": torch.float16}.get(
            info.tensors[self._embedding_name(info)].dtype, torch.float32
        )
        vector = torch.tensor(self.embedding).to(stored).float()
        readout = torch.tensor(self.lm_head if self.lm_head is not None else self.embedding).to(stored).float()
        state: dict[str, torch.Tensor] = {}

        def before_lookup(_module, args):
            ids = args[0]
            state["new"] = ids == token_id
            if token_id >= rows:  # the unedited table has no such row: look up any row, then replace it
                ids = ids.masked_fill(state["new"], 0)
            return (ids, *args[1:])

        def after_lookup(_module, _args, output):
            new = state.pop("new")
            return torch.where(new.unsqueeze(-1), vector.to(output.device, output.dtype), output)

        def extend_logits(_module, args, output):
            extra = args[0] @ readout.to(args[0].device, args[0].dtype)
            cols = output.shape[-1]
            if token_id < cols:
                output = output.clone()
                output[..., token_id] = extra
            else:
                fill = output.new_zeros(*output.shape[:-1], token_id - cols)
                output = torch.cat([output, fill, extra.unsqueeze(-1)], -1)
            target = _padded(output.shape[-1], multiple)
            if target > output.shape[-1]:
                output = torch.cat([output, output.new_zeros(*output.shape[:-1], target - output.shape[-1])], -1)
            return output

        return [
            emb.register_forward_pre_hook(before_lookup),
            emb.register_forward_hook(after_lookup),
            head.register_forward_hook(extend_logits),
        ]

    def describe(self) -> str:
        where = "embedding row" + ("" if self.lm_head is None else " and lm_head row")
        return f"token {self.token} added as id {self.token_id} (new {where})"


def write_tokenizer(source: Path, out: Path, tokens: list[tuple[str, int]]) -> None:
    """Save the source tokenizer with ``tokens`` added into ``out``, checking each gets its planned id."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    for token, token_id in tokens:
        if token in tokenizer.get_vocab():
            raise EditorError(f"{source}: the tokenizer already has {token}; export the injection onto the base model")
        if len(tokenizer) != token_id:
            raise EditorError(
                f"{source}: the tokenizer would give {token} id {len(tokenizer)}, the plan says {token_id}; "
                "re-run `wedit inject` on this model"
            )
        tokenizer.add_tokens([AddedToken(token, lstrip=True, rstrip=False, normalized=False, special=False)])
    tokenizer.save_pretrained(out)


class TokenizerWriter:
    """``write_tokenizer`` in a child process, started before the tensors are written and awaited after:
    transformers (and the torch it imports) stay out of the exporter, and the two run side by side."""

    def __init__(self, source: Path, out: Path, tokens: list[tuple[str, int]]):
        command = [sys.executable, "-m", "editor.edits.add_token", str(source), str(out), json.dumps(tokens)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(self) -> None:
        _, errors = self.proc.communicate()
        if self.proc.returncode:
            lines = errors.strip().splitlines()
            message = next((line.removeprefix(_ERROR) for line in reversed(lines) if line.startswith(_ERROR)), None)
            raise EditorError(message or f"writing the tokenizer failed: {lines[-1] if lines else 'no message'}")

    def stop(self) -> None:
        """Kill the child if the export failed before awaiting it (a no-op after ``wait``)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


_ERROR = "wedit-tokenizer-error: "

if __name__ == "__main__":
    try:
        write_tokenizer(Path(sys.argv[1]), Path(sys.argv[2]), [tuple(t) for t in json.loads(sys.argv[3])])
    except EditorError as err:
        print(_ERROR + str(err), file=sys.stderr)
        sys.exit(2)
