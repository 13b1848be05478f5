"""The pruning engine: the runner of a Llama-layer LLM (OpenVLA's and OpenVLA-OFT's; pi0's Gemmas run in
vla_pruner/models/pi0/pruned.py), with visual-token dropping inside its layer loop.

Per policy query (spec/vla_pruner.md, "Where it acts"): layers 0..K-1 run on every token; at each stage of
the pruner's plan the engine computes only the attention-probability rows the pruner asked for (the
stage's query rows against that layer's keys, with the model's own mask, softmax in float32), asks the
pruner which visual tokens to keep, and gathers the hidden states; later layers run on the kept tokens
with their ORIGINAL position ids, so their KV cache holds only kept tokens. While decoding, the engine
probes the action queries at the plan's action layers and hands the pruner their attention (`finish`).

A query may be a batch of B sequences of one layout (B episodes answered at once), each sample with its OWN
pruner (same plan, its own state: action history, warm-up, random stream). Each sample's pruner sees exactly
what a batch-1 query would show it, and each sample keeps its own tokens. Samples that keep the same number of
rows per image run on together as one rectangular batch (a `Group`, with its own KV cache); a stage where
their counts differ (one episode still in a dense warm-up, say) splits them into groups.

Attention stays SDPA. A probe is shown the queries and keys the layer's own attention uses (`Probe`), so it
costs the probed rows' scores only (rows x keys x width at the probed layers) and changes no output; a pruner
with an empty plan (none, or any pruner at keep=1.0) runs exactly the dense computation, which is how the
models run their plain (unpruned) path too. Nothing in the per-layer path waits for the device (row indices
are found once per prefill segment, action attention is summed on the device and mapped to the original
tokens once per query), so the same code keeps a GPU busy.

A query's state lives in the `QueryState` that `prefill` returns and `decode` / `finish` take; the engine
itself holds only the model's LLM and its default pruner. It knows the sequence layout (where each image's
visual tokens are) but not the model class beyond its Llama layer loop (`LlamaLM.run_layers`, `.layers`,
`.rotary_emb`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from vla_pruner.layout import SequenceLayout, TokenSet
from vla_pruner.kv_reuse import Deleting, RowsLeftOut, rows_left_out
from vla_pruner.models.llama import KVCache, LlamaLM, Probe
from vla_pruner.protocol import (ActionAttention, Offers, QueryTrace, attention_probs, check_pruners, gather,
                                 has_work, row_attention, stage_inputs)
from vla_pruner.pruning import ModelLayout, PrunePlan, Pruner, Selection, Stage, StageInputs, build_pruner

OFFERS = Offers("the Llama engine", kv_reuse=True, frames=True, renumbered_positions=True, qk_scores=True)


@dataclass
class Group:
    """Samples of a batch that run together: the same number of rows per image, so one rectangular batch with
    its own KV cache. Each sample keeps its own rows (`tokens`: its kept tokens' positions). Non-visual rows are
    never dropped and an image's rows stay together, so equal counts per image give every sample the same kind
    of row (image id, or non-visual position) in each row: rows are found once, on `structure`."""

    samples: list[int]  # batch indices, in the order of this group's tensors
    tokens: list[TokenSet]  # per sample, the rows the next layers run on
    hidden: torch.Tensor  # [b, n, d] the last layer run's output (at first the inputs; finally before the norm)
    cache: KVCache
    layer_tokens: list[list[TokenSet]] = field(default_factory=list)  # per layer run, each sample's rows
    next_token: torch.Tensor | None = None  # [b, 1] the last row's greedy token, for layouts that decode
    logits: list[torch.Tensor] = field(default_factory=list)  # [b, r, V] each: the action logits, if the plan keeps them

    @property
    def structure(self) -> TokenSet:
        """Any sample's rows: for finding rows by image or by non-visual position (not by visual position)."""
        return self.tokens[0]

    def continued(self, indices: list[int], hidden: torch.Tensor, tokens: list[TokenSet]) -> "Group":
        """These samples (indices into this group) continuing on new rows: this group if they are all of it,
        else a sub-batch with its share of the cache."""
        if indices == list(range(len(self.samples))):
            self.hidden, self.tokens = hidden, tokens
            return self
        return Group([self.samples[j] for j in indices], tokens, hidden, self.cache.subset(indices),
                     [[rows[j] for j in indices] for rows in self.layer_tokens])


@dataclass
class QueryState:
    """One query's run over a batch: made by `prefill`, continued by `decode` and `finish`. Per-sample results
    come in batch order, whatever groups the samples ran in."""

    layout: SequenceLayout
    pruners: list[Pruner]  # per sample
    groups: list[Group]
    traces: list[QueryTrace]  # per sample
    actions: list[ActionAttention]  # per sample
    frames: Sequence[Sequence[Any]] | None = None  # per sample, per image: the preprocessed images (plans that ask)
    left_out: RowsLeftOut = field(default_factory=Deleting)  # what happens to the rows a stage leaves out

    @property
    def plan(self) -> PrunePlan:
        """The plan every sample's pruner shares."""
        return self.pruners[0].plan

    @property
    def keeps_logits(self) -> bool:
        """Whether the plan keeps the query's action logits (`KVReuse.action_logits`)."""
        return self.plan.reuse is not None and self.plan.reuse.action_logits

    def in_batch_order(self, per_group: list[torch.Tensor]) -> torch.Tensor:
        """Per-group tensors [b, ...] (in `groups` order) -> one [B, ...] in batch order."""
        if len(per_group) == 1:
            return per_group[0]  # one group holds every sample in batch order
        order = [b for group in self.groups for b in group.samples]
        return torch.cat(per_group)[sorted(range(len(order)), key=order.__getitem__)]

    def last_rows(self, n: int) -> torch.Tensor:
        """[B, n, d]: the last n rows of each sample's final hidden states (before the final norm), which no
        pruning moves (OpenVLA's action-token row, OFT's action-head window)."""
        return self.in_batch_order([group.hidden[:, -n:] for group in self.groups])

    @property
    def next_token(self) -> torch.Tensor | None:
        """[B, 1] each sample's first greedy token, for layouts that decode (None otherwise)."""
        if self.groups[0].next_token is None:
            return None
        return self.in_batch_order([group.next_token for group in self.groups])

    @property
    def trace(self) -> QueryTrace:
        """The trace of a batch-1 query (`traces` for a batch)."""
        if len(self.traces) != 1:
            raise ValueError(f"a batch of {len(self.traces)} has one trace per sample: read state.traces")
        return self.traces[0]


class PruningEngine:
    """Runs one model's LLM: `prefill`, then `decode` (OpenVLA) and `finish` per query, with its own pruner
    (batch 1) or one pruner per sample."""

    def __init__(self, lm: LlamaLM, pruner: Pruner):
        self.lm = lm
        self.pruner = pruner
        self.num_layers = len(lm.layers)
        self._check_fits(pruner.plan)

    def _check_fits(self, plan: PrunePlan) -> None:
        stage_layers = [s.layer for s in plan.stages]
        if stage_layers != sorted(set(stage_layers)) or (stage_layers and stage_layers[-1] >= self.num_layers - 1):
            raise ValueError(f"pruner stages at layers {stage_layers} do not fit a {self.num_layers}-layer model")

    @classmethod
    def dense(cls, lm: LlamaLM, layout: ModelLayout) -> "PruningEngine":
        """The plain model: the `none` pruner's empty plan (an empty plan also takes batches of sequences)."""
        return cls(lm, build_pruner({"name": "none"}, 1.0, layout))

    def _pruners_for(self, batch: int, pruners: Sequence[Pruner] | None) -> list[Pruner]:
        """One pruner per sample, all with one plan (the batch runs its stages together)."""
        if pruners is None:
            if batch != 1 and has_work(self.pruner.plan):
                raise ValueError(f"a pruner runs one sequence at a time, got a batch of {batch}; "
                                 f"pass one pruner per sample (prefill(..., pruners=[...]))")
            return [self.pruner] * batch  # an empty plan never calls its pruner
        pruners = check_pruners(pruners, batch, OFFERS)
        self._check_fits(pruners[0].plan)
        return pruners

    # --- prefill ----------------------------------------------------------------------------------------
    def prefill(self, inputs_embeds: torch.Tensor, layout: SequenceLayout,
                pruners: Sequence[Pruner] | None = None, frames: Sequence[Sequence[Any]] | None = None) -> QueryState:
        """Prefill a batch [B, S, d] with pruning: each sample's final hidden states of the rows that survived
        (original order; merged tokens after their image's kept rows) and, if the layout decodes, its first
        greedy token. `pruners`: one per sample (None: the engine's pruner, batch 1 unless its plan is empty).
        `frames`: per sample, its preprocessed images (uint8 [H, W, 3] each), for plans whose stages ask.
        Rows a stage leaves out are deleted, or kept as keys under a KV-reuse plan (`vla_pruner.kv_reuse`)."""
        batch, length = inputs_embeds.shape[:2]
        if length != layout.length:
            raise ValueError(f"prefill takes sequences of {layout.length} tokens, got {tuple(inputs_embeds.shape)}")
        pruners = self._pruners_for(batch, pruners)
        plan = pruners[0].plan
        if any(stage.frames for stage in plan.stages) and (frames is None or len(frames) != batch):
            raise ValueError(f"this pruner's plan needs the images of each of the {batch} samples: "
                             f"prefill(..., frames=[per sample, per image uint8 arrays])")
        left_out = rows_left_out(plan.reuse, pruners)
        layout = left_out.layout(layout)
        full = TokenSet.full(layout, inputs_embeds.device)
        visual_tokens = sum(s.stop - s.start for s in layout.visual)
        cache = left_out.cache(self.num_layers, length)
        state = QueryState(layout, pruners, [Group(list(range(batch)), [full] * batch, inputs_embeds, cache)],
                           [QueryTrace(visual_tokens) for _ in range(batch)], [ActionAttention() for _ in range(batch)],
                           frames, left_out)
        start = 0
        for index, stage in enumerate(state.plan.stages):
            state.groups = [part for group in state.groups
                            for part in self._stage(state, group, index, stage, start, inputs_embeds)]
            start = stage.layer + 1
        for group in state.groups:
            self._segment(state, group, start, self.num_layers, self._prefill_probes(state, group))
            if layout.decodes or state.keeps_logits:  # rows from the first action's on are never pruned
                logits = self.lm.logits(group.hidden[:, layout.last_prompt - layout.length:])
                if state.keeps_logits:
                    group.logits.append(logits)
                if layout.decodes:
                    group.next_token = logits[:, -1:].argmax(-1)
            for j, sample in enumerate(group.samples):
                trace = state.traces[sample]
                trace.prefill_tokens = [len(rows[j]) for rows in group.layer_tokens]
                trace.kept_visual = int((group.tokens[j].image >= 0).sum())
                left_out.record(trace, group.tokens[j], layout, self.num_layers)
        return state

    def _segment(self, state: QueryState, group: Group, start: int, stop: int, probes: dict[int, Probe]) -> None:
        """Layers start..stop-1 on the group's rows, each sample at its own positions (masked as the left-out rows'
        treatment says; a renumbering plan: at 0..n-1 whatever their original positions)."""
        group.layer_tokens.extend([group.tokens] * (stop - start))
        positions = torch.stack([rows.position for rows in group.tokens])
        mask = state.left_out.mask(state.layout, group, positions)
        if state.plan.renumber_positions:
            positions = torch.arange(len(group.structure), device=group.hidden.device).expand_as(positions)
        group.hidden = self.lm.run_layers(group.hidden, positions, group.cache, mask, start, stop, probes)

    def _stage(self, state: QueryState, group: Group, index: int, stage: Stage, start: int,
               inputs_embeds: torch.Tensor) -> list[Group]:
        """Run the group up to the stage's layer, let each sample's pruner select, keep each sample's rows: the
        groups its samples continue in."""
        seen: dict[str, Any] = {}  # the stage layer's queries, keys and scaling

        def see(query, keys, scaling):
            seen.update(query=query, keys=keys, scaling=scaling)

        probes = self._prefill_probes(state, group)
        probes[stage.layer] = _chain(probes.get(stage.layer), see)
        self._segment(state, group, start, stage.layer + 1, probes)
        inputs = self._stage_inputs(state, group, index, stage, seen, inputs_embeds)
        selections = [state.pruners[sample].select(x) for sample, x in zip(group.samples, inputs)]
        for sample, selection in zip(group.samples, selections):
            state.traces[sample].selections.append(selection)
        if all(s.is_dense for s in selections):
            return [group]
        groups = self._regroup(state.layout, group, selections)
        state.left_out.after_stage(groups, state.pruners, self.num_layers, state.layout.length)
        return groups

    def _stage_inputs(self, state: QueryState, group: Group, index: int, stage: Stage, seen: dict[str, Any],
                      inputs_embeds: torch.Tensor) -> list[StageInputs]:
        """Per sample of the group, what a batch-1 query would hand its pruner at this stage."""
        layout, structure = state.layout, group.structure
        visual = [structure.visual_rows(i) for i in range(len(layout.visual))]
        attention = None
        if stage.rows is not None:
            n = len(structure)
            if stage.rows == "prefill":  # BOS, visual and text rows (not OFT's action placeholders): every
                # visual position is below prompt_end, so any sample's rows tell them
                rows = torch.nonzero(structure.position < layout.prompt_end).flatten()
            elif stage.rows == "last":
                rows = structure.rows_in(slice(layout.last_prompt, layout.last_prompt + 1))
            else:  # "text"
                rows = structure.rows_in(layout.text)
            visible = rows[:, None] >= torch.arange(n, device=rows.device)[None] if layout.causal else None
            attention = row_attention(attention_probs(seen["query"][:, :, rows], seen["keys"], seen["scaling"],
                                                      visible), stage.rows)
        qk = self._qk_scores(layout, group, stage.layer + 1) if stage.qk_scores else None
        return [stage_inputs(index, stage, visual, None if attention is None else attention[j], inputs_embeds[sample],
                             group.tokens[j], layout.text, group.hidden[j],
                             None if state.frames is None else state.frames[sample], None if qk is None else qk[j])
                for j, sample in enumerate(group.samples)]

    def _qk_scores(self, layout: SequenceLayout, group: Group, layer: int) -> torch.Tensor:
        """[b, R, n] `Stage.qk_scores`: layer `layer`'s input_layernorm, q_proj and k_proj on the group's current
        rows (its input), no RoPE and no mask, q.k / sqrt(head_dim) per head in float32, mean over heads; R = the
        context rows (BOS, the text rows, rows after the action queries: OFT's </s>)."""
        structure, attention = group.structure, self.lm.layers[layer].self_attn
        after_actions = max(layout.text.stop, layout.action_queries.stop)
        context = torch.cat([structure.rows_in(slice(0, 1)), structure.rows_in(layout.text),
                             structure.rows_in(slice(after_actions, layout.length))])
        normed = self.lm.layers[layer].input_layernorm(group.hidden)
        b, n, head_dim = normed.shape[0], normed.shape[1], attention.head_dim
        query = attention.q_proj(normed[:, context]).float().view(b, len(context), -1, head_dim).transpose(1, 2)
        keys = attention.k_proj(normed).float().view(b, n, -1, head_dim).transpose(1, 2)
        keys = keys.repeat_interleave(query.shape[1] // keys.shape[1], dim=1)  # key/value heads -> query heads
        return (query @ keys.transpose(-1, -2) * head_dim ** -0.5).mean(1)

    def _regroup(self, layout: SequenceLayout, group: Group, selections: list[Selection]) -> list[Group]:
        """Each sample keeps its selected rows; samples with equal rows per image stay together (in order)."""
        starts = [s.start for s in layout.visual]
        kept = [(group.hidden[j], group.tokens[j]) if s.is_dense else gather(group.tokens[j], group.hidden[j], s, starts)
                for j, s in enumerate(selections)]
        by_rows: dict[tuple[int, ...], list[int]] = {}
        for j, s in enumerate(selections):
            rows = tuple(len(k) + (len(s.merged[i].origin) if s.merged else 0) for i, k in enumerate(s.kept))
            by_rows.setdefault(rows, []).append(j)
        return [group.continued(indices, torch.stack([kept[j][0] for j in indices]), [kept[j][1] for j in indices])
                for indices in by_rows.values()]

    # --- probes -----------------------------------------------------------------------------------------
    def _prefill_probes(self, state: QueryState, group: Group) -> dict[int, Probe]:
        """The probes of the prefill segment the group is about to run: action attention, and what the left-out
        rows' treatment measures."""
        probes = self._prefill_action_probes(state, group)
        for layer, probe in state.left_out.probes(state.layout, group, self.num_layers).items():
            probes[layer] = _chain(probes.get(layer), probe)
        return probes

    # --- action attention -------------------------------------------------------------------------------
    def _prefill_action_probes(self, state: QueryState, group: Group) -> dict[int, Probe]:
        """Probes for the prefill segment the group is about to run: the action query rows (OpenVLA: the last
        row; OFT: the action placeholders), found once for the segment, each sample's attention to its own."""
        layers = state.plan.action_layers
        if not layers:
            return {}
        layout, structure, tokens = state.layout, group.structure, group.tokens
        queries = structure.rows_in(layout.action_queries)
        visible = (queries[:, None] >= torch.arange(len(structure), device=queries.device)[None]
                   if layout.causal else None)

        def probe(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> None:
            _add_action(state, group, attention_probs(query[:, :, queries], keys, scaling, visible), tokens)

        return dict.fromkeys(layers, probe)

    def _decode_action_probes(self, state: QueryState, group: Group) -> dict[int, Probe]:
        """Probes for the group's decode steps: the step's one query row against all the layer's keys."""

        def probe_at(layer: int) -> Probe:
            tokens = group.layer_tokens[layer]

            def probe(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> None:
                _add_action(state, group, attention_probs(query, keys, scaling), tokens)

            return probe

        return {layer: probe_at(layer) for layer in state.plan.action_layers}

    # --- decode and finish ------------------------------------------------------------------------------
    def decode(self, state: QueryState, n_tokens: int) -> torch.Tensor:
        """Greedy tokens [B, n_tokens]: the prefill's token, then cached single-token steps at positions
        continuing from the FULL prefill length (a renumbering plan: from the kept length; each group on its own
        cache)."""
        return state.in_batch_order([self._decode_group(state, group, n_tokens) for group in state.groups])

    def _decode_group(self, state: QueryState, group: Group, n_tokens: int) -> torch.Tensor:
        if group.next_token is None:
            raise ValueError("this query's layout does not decode (its prefill gave no first token)")
        tokens, probes = [group.next_token], self._decode_action_probes(state, group)
        moving = state.left_out.decode_moving(group)
        start = len(group.structure) if state.plan.renumber_positions else state.layout.length
        for step in range(n_tokens - 1):
            position = moving * (start + step)
            hidden = self.lm.run_layers(self.lm.embed(tokens[-1]), position, group.cache, probes=probes)
            logits = self.lm.logits(hidden)
            tokens.append(logits.argmax(-1))
            if state.keeps_logits:
                group.logits.append(logits)
        return torch.cat(tokens, dim=1)

    def finish(self, state: QueryState) -> None:
        """Hand each sample's action attention (mean over heads, action queries and action layers; original
        visual order, zero where pruned) to that sample's pruner's history; then the left-out rows' treatment
        closes the query (KV reuse: each pruner keeps its keys/values)."""
        for pruner, action in zip(state.pruners, state.actions):
            if pruner.plan.action_layers:
                pruner.observe(action.mean(state.layout.visual))
        state.left_out.finish(state.groups, state.pruners, state.layout.length, self.num_layers)


def _add_action(state: QueryState, group: Group, probs: torch.Tensor, tokens: list[TokenSet]) -> None:
    """Each sample of the group adds its rows of `probs` [b, R, keys] to its own action attention."""
    for j, sample in enumerate(group.samples):
        state.actions[sample].add(probs[j][:, :len(tokens[j])].sum(0), probs.shape[1], tokens[j], id(tokens[j]))


def _chain(first: Probe | None, second: Probe) -> Probe:
    if first is None:
        return second

    def both(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> None:
        first(query, keys, scaling)
        second(query, keys, scaling)

    return both
