"""The pruning engine: visual-token dropping inside the LLM's own layer loop.

Per policy query (spec/vla_pruner.md, "Where it acts"): layers 0..K-1 run on every token; at each stage of
the pruner's plan the engine computes only the attention-probability rows the pruner asked for (the
stage's query rows against that layer's keys, with the model's own mask, softmax in float32), asks the
pruner which visual tokens to keep, and gathers the hidden states; later layers run on the kept tokens
with their ORIGINAL position ids, so their KV cache holds only kept tokens. While decoding, the engine
probes the action queries at the plan's action layers and hands the pruner their attention (`observe`).

Attention everywhere else stays SDPA: probes cost O(rows x keys) at the probed layers only, and a pruner
with an empty plan (none, or any pruner at keep=1.0) runs exactly the dense computation.

The engine knows the sequence layout (where each image's visual tokens are) but not the model class beyond
its Llama layer loop (`LlamaLM.run_layers`, `.layers`, `.rotary_emb`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from vla_pruner.models.llama import KVCache, LlamaLM
from vla_pruner.pruning import Pruner, Selection, StageInputs


@dataclass(frozen=True)
class SequenceLayout:
    """Where things are in the ORIGINAL prefill sequence."""

    length: int  # S, prefill tokens
    visual: tuple[slice, ...]  # per image, its visual tokens
    text: slice  # SparseVLM's "text" rows: prompt tokens after the visual block, up to and including 29871
    last_prompt: int  # the query row that emits action token 1 (FastV's "last" row)
    action_queries: slice  # prefill rows whose attention is the action score (decode rows come on top)
    prompt_end: int  # rows before this are BOS, visual and text: the "prefill" semantic rows
    causal: bool = True

    @classmethod
    def openvla(cls, length: int, num_visual: int = 256) -> "SequenceLayout":
        """[BOS, visual, prompt..., 29871]: the last row emits action token 1, decode steps the rest."""
        return cls(length, (slice(1, 1 + num_visual),), slice(1 + num_visual, length), length - 1,
                   slice(length - 1, length), prompt_end=length)


@dataclass
class TokenSet:
    """The rows a layer runs on: each row's RoPE position, image id (-1: not visual), merged flag."""

    position: torch.Tensor  # [n] long: original sequence index (merged rows: their origin's)
    image: torch.Tensor  # [n] long
    merged: torch.Tensor  # [n] bool

    @classmethod
    def full(cls, layout: SequenceLayout, device: torch.device) -> "TokenSet":
        position = torch.arange(layout.length, device=device)
        image = torch.full_like(position, -1)
        for i, s in enumerate(layout.visual):
            image[s] = i
        return cls(position, image, torch.zeros_like(position, dtype=torch.bool))

    def __len__(self) -> int:
        return len(self.position)

    def visual_rows(self, i: int) -> torch.Tensor:
        return torch.nonzero(self.image == i).flatten()

    def insert(self, at: int, positions: torch.Tensor, image: int) -> "TokenSet":
        """The same set with merged rows of `image` at `positions` inserted before row `at`."""
        new = TokenSet(positions, torch.full_like(positions, image), torch.ones_like(positions, dtype=torch.bool))
        return TokenSet(*(torch.cat([old[:at], add, old[at:]])
                          for old, add in zip((self.position, self.image, self.merged),
                                              (new.position, new.image, new.merged))))

    def rows_at(self, positions: torch.Tensor) -> torch.Tensor:
        """Rows of original (non-merged) tokens at these sequence positions, in row order."""
        return torch.nonzero(torch.isin(self.position, positions) & ~self.merged).flatten()


@dataclass
class QueryTrace:
    """What one query's pruning did, for the episode record."""

    visual_tokens: int  # before pruning, all images
    prefill_tokens: list[int] = field(default_factory=list)  # tokens each layer ran on during prefill
    kept_visual: int = 0  # visual tokens (kept + merged) the last layer ran on
    selections: list[Selection] = field(default_factory=list)

    def to_record(self) -> dict:
        return {
            "visual_tokens": self.visual_tokens,
            "kept_visual": self.kept_visual,
            "prefill_tokens": self.prefill_tokens,
            "warmup": any(s.warmup for s in self.selections),
            "selection_ms": round(sum(s.select_ms for s in self.selections), 4),
            "pruning": [s.to_record() for s in self.selections],
        }


def attention_rows(
    lm: LlamaLM,
    layer_idx: int,
    hidden_in: torch.Tensor,
    positions: torch.Tensor,
    keys: torch.Tensor,
    visible: torch.Tensor | None,
) -> torch.Tensor:
    """Head-averaged attention probabilities [R, N] of R query rows at one layer.

    hidden_in [1, R, d] are the layer's INPUT hidden states of those rows, positions [1, R] their RoPE
    positions, keys [1, kv_heads, N, head_dim] the layer's cached (rotated) keys, visible [R, N] the mask
    (None: every key). Recomputes q for the R rows only; nothing of the model changes.
    """
    layer = lm.layers[layer_idx]
    attn = layer.self_attn
    x = layer.input_layernorm(hidden_in)
    q = attn.q_proj(x).view(1, x.shape[1], -1, attn.head_dim).transpose(1, 2)
    cos, sin = lm.rotary_emb(x, positions)
    q, _ = apply_rotary_pos_emb(q, q, cos, sin)
    k = repeat_kv(keys, attn.num_key_value_groups)
    scores = (q.float() @ k.float().transpose(-1, -2)) * attn.scaling
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    return scores.softmax(-1).mean(1)[0]


Probe = Callable[[torch.Tensor], None]  # receives the probed layer's input hidden states


class PruningEngine:
    """Runs one model's LLM with one pruner: `prefill`, then `decode` (OpenVLA) and `finish` per query."""

    def __init__(self, lm: LlamaLM, pruner: Pruner):
        self.lm = lm
        self.pruner = pruner
        self.num_layers = len(lm.layers)
        stage_layers = [s.layer for s in pruner.plan.stages]
        if stage_layers != sorted(set(stage_layers)) or (stage_layers and stage_layers[-1] >= self.num_layers - 1):
            raise ValueError(f"pruner stages at layers {stage_layers} do not fit a {self.num_layers}-layer model")
        self._layout: SequenceLayout | None = None
        self._cache: KVCache | None = None
        self._layer_tokens: list[TokenSet] = []  # the rows each layer ran on in this query's prefill
        self._action: list[torch.Tensor] = []  # per image: summed action attention on original indices
        self._action_queries = 0

    def run_layers(self, hidden, positions, cache, start, stop, probes: dict[int, Probe], mask=None):
        """Layers start..stop-1, stopping at each probed layer to hand its input to the probe (called after
        the layer ran, so that the cache holds the layer's keys for these tokens too)."""
        current = start
        for layer in sorted(l for l in probes if start <= l < stop):
            hidden = self.lm.run_layers(hidden, positions, cache, mask, start=current, stop=layer)
            layer_input = hidden
            hidden = self.lm.run_layers(hidden, positions, cache, mask, start=layer, stop=layer + 1)
            probes[layer](layer_input)
            current = layer + 1
        return self.lm.run_layers(hidden, positions, cache, mask, start=current, stop=stop)

    # --- prefill ----------------------------------------------------------------------------------------
    def prefill(self, inputs_embeds: torch.Tensor, layout: SequenceLayout) -> tuple[torch.Tensor, KVCache, QueryTrace]:
        """Prefill with pruning. Returns the final hidden states of the rows that survived [1, n, d] (original
        order; merged tokens after their image's kept rows), the cache, and the query's trace."""
        if inputs_embeds.shape[0] != 1 or inputs_embeds.shape[1] != layout.length:
            raise ValueError(f"prefill takes one sequence of {layout.length} tokens, got {tuple(inputs_embeds.shape)}")
        device = inputs_embeds.device
        self._layout, self._cache, self._layer_tokens = layout, KVCache(self.num_layers), []
        self._action = [torch.zeros(s.stop - s.start, device=device) for s in layout.visual]
        self._action_queries = 0
        tokens = TokenSet.full(layout, device)
        trace = QueryTrace(visual_tokens=sum(s.stop - s.start for s in layout.visual))
        hidden, start = inputs_embeds, 0
        for index, stage in enumerate(self.pruner.plan.stages):
            captured: dict[str, torch.Tensor] = {}
            probes = self._prefill_action_probes(tokens)
            probes[stage.layer] = _chain(probes.get(stage.layer), lambda h: captured.__setitem__("input", h))
            hidden = self._segment(hidden, tokens, start, stage.layer + 1, probes)
            selection = self.pruner.select(
                self._stage_inputs(index, stage, tokens, captured["input"], hidden, inputs_embeds))
            trace.selections.append(selection)
            if not selection.is_dense:
                hidden, tokens = self._gather(hidden, tokens, selection)
            start = stage.layer + 1
        hidden = self._segment(hidden, tokens, start, self.num_layers, self._prefill_action_probes(tokens))
        trace.prefill_tokens = [len(t) for t in self._layer_tokens]
        trace.kept_visual = int((tokens.image >= 0).sum())
        return hidden, self._cache, trace

    def _segment(self, hidden, tokens: TokenSet, start: int, stop: int, probes: dict[int, Probe]):
        self._layer_tokens.extend([tokens] * (stop - start))
        mask = None if self._layout.causal else torch.ones(1, 1, len(tokens), len(tokens), dtype=torch.bool,
                                                             device=hidden.device)
        return self.run_layers(hidden, tokens.position[None], self._cache, start, stop, probes, mask)

    def _stage_inputs(self, index, stage, tokens: TokenSet, layer_input, layer_output, inputs_embeds) -> StageInputs:
        layout = self._layout
        device = tokens.position.device
        visual = [tokens.visual_rows(i) for i in range(len(layout.visual))]
        inputs = StageInputs(stage=index)
        if stage.rows is not None:
            n = len(tokens)
            if stage.rows == "prefill":  # BOS, visual and text rows (not OFT's action placeholders)
                rows = torch.nonzero(tokens.position < layout.prompt_end).flatten()
            elif stage.rows == "last":
                rows = tokens.rows_at(torch.tensor([layout.last_prompt], device=device))
            else:  # "text"
                rows = tokens.rows_at(torch.arange(layout.text.start, layout.text.stop, device=device))
            visible = rows[:, None] >= torch.arange(n, device=device)[None] if layout.causal else None
            probs = attention_rows(self.lm, stage.layer, layer_input[:, rows], tokens.position[rows][None],
                                   self._cache.keys[stage.layer], visible)
            if stage.rows != "text":  # only the row mean is used
                probs = probs.mean(0, keepdim=True)
            inputs.attention = [probs[:, v] for v in visual]
        if stage.visual_embeddings:
            inputs.visual_embeddings = [inputs_embeds[0, tokens.position[v]] for v in visual]
        if stage.text_embeddings:
            inputs.text_embeddings = inputs_embeds[0, layout.text]
        if stage.hidden_states:
            inputs.hidden_states = [layer_output[0, v] for v in visual]
        return inputs

    def _gather(self, hidden: torch.Tensor, tokens: TokenSet, selection: Selection):
        """Keep every non-visual row and each image's kept rows; merged tokens go right after their image's
        kept rows, at their origin's position."""
        device = hidden.device
        keep = tokens.image < 0
        for i in range(len(self._layout.visual)):
            keep[tokens.visual_rows(i)[selection.kept[i].to(device)]] = True
        rows = torch.nonzero(keep).flatten()
        hidden, kept = hidden[:, rows], TokenSet(tokens.position[rows], tokens.image[rows], tokens.merged[rows])
        for i, merged in enumerate(selection.merged or []):
            image_rows = torch.nonzero(kept.image == i).flatten()
            after = (int(image_rows[-1]) + 1 if len(image_rows)
                     else int((kept.position < self._layout.visual[i].start).sum()))
            hidden = torch.cat([hidden[:, :after], merged.features[None].to(hidden.dtype), hidden[:, after:]], 1)
            kept = kept.insert(after, self._layout.visual[i].start + merged.origin.to(device), image=i)
        return hidden, kept

    # --- action attention -------------------------------------------------------------------------------
    def _prefill_action_probes(self, tokens: TokenSet) -> dict[int, Probe]:
        """The prefill's action query rows (OpenVLA: the last row; OFT: the action placeholders)."""
        layout = self._layout

        def probe_at(layer: int) -> Probe:
            def probe(layer_input: torch.Tensor) -> None:
                device = layer_input.device
                queries = tokens.rows_at(torch.arange(layout.action_queries.start, layout.action_queries.stop,
                                                      device=device))
                visible = (queries[:, None] >= torch.arange(len(tokens), device=device)[None]
                           if layout.causal else None)
                probs = attention_rows(self.lm, layer, layer_input[:, queries], tokens.position[queries][None],
                                       self._cache.keys[layer], visible)
                self._add_action(layer, probs)

            return probe

        return {layer: probe_at(layer) for layer in self.pruner.plan.action_layers}

    def _decode_action_probes(self, position: torch.Tensor) -> dict[int, Probe]:
        def probe_at(layer: int) -> Probe:
            def probe(layer_input: torch.Tensor) -> None:
                self._add_action(layer, attention_rows(self.lm, layer, layer_input, position,
                                                       self._cache.keys[layer], None))

            return probe

        return {layer: probe_at(layer) for layer in self.pruner.plan.action_layers}

    def _add_action(self, layer: int, probs: torch.Tensor) -> None:
        """Add [R, keys] head-averaged attention onto original visual indices: the first columns of a layer's keys are the
        rows it ran on in the prefill (pruned tokens have no key and get nothing; merged tokens are skipped)."""
        tokens = self._layer_tokens[layer]
        total = probs.sum(0)
        for i, s in enumerate(self._layout.visual):
            rows = torch.nonzero((tokens.image == i) & ~tokens.merged).flatten()
            self._action[i].index_add_(0, tokens.position[rows] - s.start, total[rows].float())
        self._action_queries += len(probs)

    # --- decode and finish ------------------------------------------------------------------------------
    def decode(self, first_token: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """Greedy tokens [1, n_tokens]: `first_token` (from the prefill), then cached single-token steps at
        positions continuing from the FULL prefill length."""
        tokens = [first_token]
        for step in range(n_tokens - 1):
            position = torch.full_like(first_token, self._layout.length + step)
            hidden = self.run_layers(self.lm.embed(tokens[-1]), position, self._cache, 0, self.num_layers,
                                     self._decode_action_probes(position))
            tokens.append(self.lm.logits(hidden).argmax(-1))
        return torch.cat(tokens, dim=1)

    def finish(self) -> None:
        """Hand this query's action attention (mean over heads, action queries and action layers; original
        visual order, zero where pruned) to the pruner's history."""
        if self.pruner.plan.action_layers:
            self.pruner.observe([a / self._action_queries for a in self._action])


def _chain(first: Probe | None, second: Probe) -> Probe:
    if first is None:
        return second

    def both(layer_input: torch.Tensor) -> None:
        first(layer_input)
        second(layer_input)

    return both
