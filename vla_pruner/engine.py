"""The pruning engine: the one runner of a model's LLM, with visual-token dropping inside its layer loop.

Per policy query (spec/vla_pruner.md, "Where it acts"): layers 0..K-1 run on every token; at each stage of
the pruner's plan the engine computes only the attention-probability rows the pruner asked for (the
stage's query rows against that layer's keys, with the model's own mask, softmax in float32), asks the
pruner which visual tokens to keep, and gathers the hidden states; later layers run on the kept tokens
with their ORIGINAL position ids, so their KV cache holds only kept tokens. While decoding, the engine
probes the action queries at the plan's action layers and hands the pruner their attention (`finish`).

Attention stays SDPA. A probe is shown the queries and keys the layer's own attention uses (`Probe`), so it
costs the probed rows' scores only (rows x keys x width at the probed layers) and changes no output; a pruner
with an empty plan (none, or any pruner at keep=1.0) runs exactly the dense computation, which is how the
models run their plain (unpruned) path too. Nothing in the per-layer path waits for the device (row indices
are found once per prefill segment, action attention is summed on the device and mapped to the original
tokens once per query), so the same code keeps a GPU busy.

A query's state lives in the `QueryState` that `prefill` returns and `decode` / `finish` take; the engine
itself holds only the model's LLM and the pruner. It knows the sequence layout (where each image's visual
tokens are) but not the model class beyond its Llama layer loop (`LlamaLM.run_layers`, `.layers`,
`.rotary_emb`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vla_pruner.layout import SequenceLayout, TokenSet
from vla_pruner.models.llama import KVCache, LlamaLM, Probe, bidirectional_mask
from vla_pruner.pruning import ModelLayout, Pruner, Selection, StageInputs, build_pruner


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


def attention_probs(query: torch.Tensor, keys: torch.Tensor, scaling: float,
                    visible: torch.Tensor | None = None) -> torch.Tensor:
    """Head-averaged attention probabilities [B, R, N] of R query rows, from the queries [B, heads, R, head_dim]
    and keys [B, heads, N, head_dim] a layer attends with (what a `Probe` is shown); visible [R, N] is the mask
    (None: every key). Scores and softmax in float32."""
    scores = (query.float() @ keys.float().transpose(-1, -2)) * scaling
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    return scores.softmax(-1).mean(1)


@dataclass
class ActionAttention:
    """The attention the action queries paid to the prefill's tokens, summed over query rows and action layers.

    Sums stay on the device, one per token set (the layers of one prefill segment share theirs), and reach the
    ORIGINAL visual tokens once per query, in `mean` (pruned tokens have no key and get nothing)."""

    sums: dict[int, tuple[TokenSet, torch.Tensor]] = field(default_factory=dict)  # by id of the token set
    rows: int = 0

    def add(self, probs: torch.Tensor, tokens: TokenSet) -> None:
        """Add [R, keys] head-averaged attention of R query rows at a layer whose first keys are `tokens`, the
        rows it ran on in the prefill (later keys are decoded tokens)."""
        total = probs[:, :len(tokens)].sum(0)
        if id(tokens) in self.sums:
            self.sums[id(tokens)][1].add_(total)
        else:
            self.sums[id(tokens)] = (tokens, total)
        self.rows += probs.shape[0]

    def mean(self, layout: SequenceLayout) -> list[torch.Tensor]:
        """Per image, the mean over heads, query rows and layers, in original visual order, zero where pruned
        (merged tokens are skipped)."""
        if not self.rows:
            raise RuntimeError("no action attention was probed in this query")
        device = next(iter(self.sums.values()))[1].device
        means = [torch.zeros(s.stop - s.start, device=device) for s in layout.visual]
        for tokens, total in self.sums.values():
            for i, s in enumerate(layout.visual):
                rows = tokens.original_visual_rows(i)
                means[i].index_add_(0, tokens.position[rows] - s.start, total[rows])
        return [m / self.rows for m in means]


@dataclass
class QueryState:
    """One query's run: made by `prefill`, continued by `decode` and `finish`."""

    layout: SequenceLayout
    cache: KVCache
    tokens: TokenSet  # the rows the layers after the last stage run on
    trace: QueryTrace
    action: ActionAttention = field(default_factory=ActionAttention)
    layer_tokens: list[TokenSet] = field(default_factory=list)  # per layer, the rows it ran on in the prefill
    hidden: torch.Tensor | None = None  # [B, n, d] the last layer's output for `tokens` (before the final norm)
    next_token: torch.Tensor | None = None  # [B, 1] the last row's greedy token, for layouts that decode


class PruningEngine:
    """Runs one model's LLM with one pruner: `prefill`, then `decode` (OpenVLA) and `finish` per query."""

    def __init__(self, lm: LlamaLM, pruner: Pruner):
        self.lm = lm
        self.pruner = pruner
        self.num_layers = len(lm.layers)
        stage_layers = [s.layer for s in pruner.plan.stages]
        if stage_layers != sorted(set(stage_layers)) or (stage_layers and stage_layers[-1] >= self.num_layers - 1):
            raise ValueError(f"pruner stages at layers {stage_layers} do not fit a {self.num_layers}-layer model")

    @classmethod
    def dense(cls, lm: LlamaLM, layout: ModelLayout) -> "PruningEngine":
        """The plain model: the `none` pruner's empty plan (an empty plan also takes batches of sequences)."""
        return cls(lm, build_pruner({"name": "none"}, 1.0, layout))

    # --- prefill ----------------------------------------------------------------------------------------
    def prefill(self, inputs_embeds: torch.Tensor, layout: SequenceLayout) -> QueryState:
        """Prefill with pruning: the query's state, with the final hidden states of the rows that survived
        (original order; merged tokens after their image's kept rows) and, if the layout decodes, the first
        greedy token."""
        plan = self.pruner.plan
        batch, length = inputs_embeds.shape[:2]
        if length != layout.length:
            raise ValueError(f"prefill takes sequences of {layout.length} tokens, got {tuple(inputs_embeds.shape)}")
        if batch != 1 and (plan.stages or plan.action_layers):
            raise ValueError(f"a pruner runs one sequence at a time, got a batch of {batch}")
        device = inputs_embeds.device
        state = QueryState(layout, KVCache(self.num_layers), TokenSet.full(layout, device),
                           QueryTrace(visual_tokens=sum(s.stop - s.start for s in layout.visual)))
        hidden, start = inputs_embeds, 0
        for index, stage in enumerate(plan.stages):
            seen: dict[str, Any] = {}  # the stage layer's queries, keys and scaling

            def see(query, keys, scaling, seen=seen):
                seen.update(query=query, keys=keys, scaling=scaling)

            probes = self._prefill_action_probes(state)
            probes[stage.layer] = _chain(probes.get(stage.layer), see)
            hidden = self._segment(state, hidden, start, stage.layer + 1, probes)
            selection = self.pruner.select(self._stage_inputs(state, index, stage, seen, hidden, inputs_embeds))
            state.trace.selections.append(selection)
            if not selection.is_dense:
                hidden = self._gather(state, hidden, selection)
            start = stage.layer + 1
        state.hidden = self._segment(state, hidden, start, self.num_layers, self._prefill_action_probes(state))
        state.trace.prefill_tokens = [len(t) for t in state.layer_tokens]
        state.trace.kept_visual = int((state.tokens.image >= 0).sum())
        if layout.decodes:
            state.next_token = self.lm.logits(state.hidden[:, -1:]).argmax(-1)
        return state

    def _segment(self, state: QueryState, hidden, start: int, stop: int, probes: dict[int, Probe]):
        tokens = state.tokens
        state.layer_tokens.extend([tokens] * (stop - start))
        mask = None if state.layout.causal else bidirectional_mask(len(tokens), hidden.device)
        positions = tokens.position[None].expand(hidden.shape[0], -1)
        return self.lm.run_layers(hidden, positions, state.cache, mask, start, stop, probes)

    def _stage_inputs(self, state: QueryState, index, stage, seen, layer_output, inputs_embeds) -> StageInputs:
        layout, tokens = state.layout, state.tokens
        visual = [tokens.visual_rows(i) for i in range(len(layout.visual))]
        inputs = StageInputs(stage=index)
        if stage.rows is not None:
            n = len(tokens)
            if stage.rows == "prefill":  # BOS, visual and text rows (not OFT's action placeholders)
                rows = torch.nonzero(tokens.position < layout.prompt_end).flatten()
            elif stage.rows == "last":
                rows = tokens.rows_in(slice(layout.last_prompt, layout.last_prompt + 1))
            else:  # "text"
                rows = tokens.rows_in(layout.text)
            visible = rows[:, None] >= torch.arange(n, device=rows.device)[None] if layout.causal else None
            probs = attention_probs(seen["query"][:, :, rows], seen["keys"], seen["scaling"], visible)[0]
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

    def _gather(self, state: QueryState, hidden: torch.Tensor, selection: Selection) -> torch.Tensor:
        """Keep every non-visual row and each image's kept rows; merged tokens go right after their image's
        kept rows, at their origin's position. Updates `state.tokens`."""
        device, visual, tokens = hidden.device, state.layout.visual, state.tokens
        keep = tokens.image < 0
        for i in range(len(visual)):
            keep[tokens.visual_rows(i)[selection.kept[i].to(device)]] = True
        rows = torch.nonzero(keep).flatten()
        hidden, kept = hidden[:, rows], tokens.select(rows)
        for i, merged in enumerate(selection.merged or []):
            image_rows = torch.nonzero(kept.image == i).flatten()
            after = (int(image_rows[-1]) + 1 if len(image_rows)
                     else int((kept.position < visual[i].start).sum()))
            hidden = torch.cat([hidden[:, :after], merged.features[None].to(hidden.dtype), hidden[:, after:]], 1)
            kept = kept.insert(after, visual[i].start + merged.origin.to(device), image=i)
        state.tokens = kept
        return hidden

    # --- action attention -------------------------------------------------------------------------------
    def _prefill_action_probes(self, state: QueryState) -> dict[int, Probe]:
        """Probes for the prefill segment about to run on `state.tokens`: the action query rows (OpenVLA: the
        last row; OFT: the action placeholders), found once for the segment."""
        layers = self.pruner.plan.action_layers
        if not layers:
            return {}
        layout, tokens = state.layout, state.tokens
        queries = tokens.rows_in(layout.action_queries)
        visible = (queries[:, None] >= torch.arange(len(tokens), device=queries.device)[None]
                   if layout.causal else None)

        def probe(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> None:
            state.action.add(attention_probs(query[:, :, queries], keys, scaling, visible)[0], tokens)

        return dict.fromkeys(layers, probe)

    def _decode_action_probes(self, state: QueryState) -> dict[int, Probe]:
        """Probes for the decode steps: the step's one query row against all the layer's keys."""

        def probe_at(layer: int) -> Probe:
            tokens = state.layer_tokens[layer]

            def probe(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> None:
                state.action.add(attention_probs(query, keys, scaling)[0], tokens)

            return probe

        return {layer: probe_at(layer) for layer in self.pruner.plan.action_layers}

    # --- decode and finish ------------------------------------------------------------------------------
    def decode(self, state: QueryState, n_tokens: int) -> torch.Tensor:
        """Greedy tokens [B, n_tokens]: the prefill's token, then cached single-token steps at positions
        continuing from the FULL prefill length."""
        if state.next_token is None:
            raise ValueError("this query's layout does not decode (its prefill gave no first token)")
        tokens, probes = [state.next_token], self._decode_action_probes(state)
        for step in range(n_tokens - 1):
            position = torch.full_like(state.next_token, state.layout.length + step)
            hidden = self.lm.run_layers(self.lm.embed(tokens[-1]), position, state.cache, probes=probes)
            tokens.append(self.lm.logits(hidden).argmax(-1))
        return torch.cat(tokens, dim=1)

    def finish(self, state: QueryState) -> None:
        """Hand the query's action attention (mean over heads, action queries and action layers; original
        visual order, zero where pruned) to the pruner's history."""
        if self.pruner.plan.action_layers:
            self.pruner.observe(state.action.mean(state.layout))


def _chain(first: Probe | None, second: Probe) -> Probe:
    if first is None:
        return second

    def both(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> None:
        first(query, keys, scaling)
        second(query, keys, scaling)

    return both
