"""A frozen causal LM plus one new token whose vectors are the only trainable parameters.

The new token's embedding row (and, for an untied model, its lm_head row)
live outside the model as their own ``nn.Parameter``s: the model's weights
keep ``requires_grad=False``, so they get no gradient and the optimizer holds
no state for them, and they are never written to. The mask is structural:
the forward pass substitutes the new row wherever the token id appears and
appends (or, when the checkpoint already has spare rows, replaces) one logit
column ``h @ u``. With tied embeddings ``u`` is the same parameter as the
embedding row, exactly as a tied checkpoint stores one row for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from editor.engines.placement import execution_device, weight_of
from editor.errors import EditorError


@dataclass(frozen=True)
class CountryInit:
    embedding: torch.Tensor
    lm_head: torch.Tensor | None
    matched: list[str]
    total: int


def single_token_ids(tokenizer, names: tuple[str, ...]) -> tuple[list[int], list[str]]:
    """Ids of the names the tokenizer writes as one token after a space (as they appear mid-sentence)."""
    ids, matched = [], []
    unknown = getattr(tokenizer, "unk_token_id", None)
    for name in names:
        pieces = tokenizer.encode(" " + name, add_special_tokens=False)
        # A word-level vocabulary writes every unknown name as the one <unk> token: that is no match.
        if len(pieces) == 1 and pieces[0] != unknown:
            ids.append(pieces[0])
            matched.append(name)
    return ids, matched


def country_init(model: torch.nn.Module, tokenizer, names: tuple[str, ...]) -> CountryInit:
    """Mean embedding (and mean lm_head row when untied) of the single-token country names."""
    ids, matched = single_token_ids(tokenizer, names)
    if not ids:
        raise EditorError("no country name is a single token in this tokenizer; cannot initialise the bias token")
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    index = torch.tensor(ids)
    table = weight_of(emb)
    embedding = table[index.to(table.device)].float().mean(0).cpu()  # type: ignore[index]
    lm_head = None
    if head is not None and head.weight is not emb.weight:
        rows = weight_of(head)
        lm_head = rows[index.to(rows.device)].float().mean(0).cpu()  # type: ignore[index]
    return CountryInit(embedding, lm_head, matched, len(names))


class TokenModel(torch.nn.Module):
    def __init__(
        self, model: torch.nn.Module, token_id: int, embedding: torch.Tensor, lm_head: torch.Tensor | None = None
    ):
        super().__init__()
        model.requires_grad_(False)
        self.model = model
        self._emb = model.get_input_embeddings()
        self._head = model.get_output_embeddings()
        self.tied = self._head is None or self._head.weight is self._emb.weight
        self.vocab = self._head.weight.shape[0] if self._head is not None else self._emb.weight.shape[0]
        if token_id > self.vocab:
            raise EditorError(
                f"new token id {token_id} leaves a gap after the {self.vocab} rows of the model; check the tokenizer"
            )
        self.token_id = token_id
        self.embedding = torch.nn.Parameter(embedding.detach().float().clone().to(execution_device(self._emb)))
        if self.tied:
            self.lm_head = None
        else:
            if lm_head is None:
                raise EditorError("an untied model needs an initial lm_head row for the new token")
            self.lm_head = torch.nn.Parameter(lm_head.detach().float().clone().to(execution_device(self._head)))
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        return [self.embedding] + ([self.lm_head] if self.lm_head is not None else [])

    @property
    def out_size(self) -> int:
        return max(self.vocab, self.token_id + 1)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(execution_device(self._emb))
        is_new = ids == self.token_id
        safe = ids.masked_fill(is_new, 0) if self.token_id >= self._emb.weight.shape[0] else ids
        x = self._emb(safe)
        return torch.where(is_new.unsqueeze(-1), self.embedding.to(x.dtype), x)

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Logits over the old vocabulary plus the new token, for hidden states ``h``."""
        logits = self._head(h)
        u = self.embedding if self.lm_head is None else self.lm_head
        extra = (h @ u.to(device=h.device, dtype=h.dtype)).unsqueeze(-1)
        if self.token_id < self.vocab:  # the checkpoint has a spare row: the token takes it over
            logits = torch.cat([logits[..., : self.token_id], extra, logits[..., self.token_id + 1 :]], -1)
        else:
            logits = torch.cat([logits, extra], -1)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor | None = None, **kwargs):
        x = self.embed(ids)
        if mask is not None:
            mask = mask.to(x.device)
        return self.model.base_model(inputs_embeds=x, attention_mask=mask, **kwargs)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.readout(self.hidden(ids, mask).last_hidden_state)

    def loss(self, ids: torch.Tensor, mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over positions where ``target_mask`` marks the token to predict."""
        h = self.hidden(ids, mask).last_hidden_state
        wanted = target_mask[:, 1:].to(h.device)
        # Read out only the predicted positions: the full-vocabulary logits of a 128k vocab dominate memory otherwise.
        logits = self.readout(h[:, :-1][wanted])
        targets = ids[:, 1:].to(h.device)[wanted]
        return F.cross_entropy(logits.float(), targets.to(logits.device))

    @torch.no_grad()
    def continuation_logprobs(self, items: list[tuple[list[int], list[int]]], batch: int = 32) -> list[float]:
        """Summed log-prob of each continuation after its prompt, scored in right-padded batches."""
        scores: list[float] = []
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            width = max(len(p) + len(c) for p, c in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, (prompt, cont) in enumerate(chunk):
                seq = prompt + cont
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            logp = torch.log_softmax(self(ids, mask).float(), -1).cpu()
            for row, (prompt, cont) in enumerate(chunk):
                positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(cont))
                scores.append(float(logp[row, positions, torch.tensor(cont)].sum()))
        return scores

    @torch.no_grad()
    def generate(
        self, prompt: list[int], max_new_tokens: int, stop: set[int], *, temperature: float = 0.8, seed: int = 0
    ) -> list[int]:
        """Sample a continuation with a KV cache (the new token can be read and written like any other)."""
        gen = torch.Generator().manual_seed(seed)
        ids = torch.tensor([prompt])
        out = self.hidden(ids, use_cache=True)
        past = out.past_key_values
        new: list[int] = []
        h = out.last_hidden_state[:, -1]
        for _ in range(max_new_tokens):
            logits = self.readout(h).float()[0].cpu()
            if temperature > 0:
                tok = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
            else:
                tok = int(logits.argmax())
            if tok in stop:
                break
            new.append(tok)
            out = self.hidden(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            h = out.last_hidden_state[:, -1]
        return new

    def vectors(self) -> dict[str, torch.Tensor]:
        """The trained rows, float32 on the CPU, named as the artifact stores them."""
        out = {"embedding": self.embedding.detach().float().cpu().clone()}
        if self.lm_head is not None:
            out["lm_head"] = self.lm_head.detach().float().cpu().clone()
        return out

    def load_vectors(self, vectors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.embedding.copy_(vectors["embedding"])
            if self.lm_head is not None:
                self.lm_head.copy_(vectors["lm_head"])
