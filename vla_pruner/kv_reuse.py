"""What the Llama engine does with the visual rows a stage leaves out: delete them (`Deleting`, every plan without
`KVReuse`), or keep them as keys that carry the previous query's keys/values (`Reusing`, VLA-Cache's plan).

The engine calls the same hooks on either (`RowsLeftOut`), so KV reuse is a capability offered here rather than
branches in its layer loop. Groups are the engine's (`samples`, `tokens`, `structure`, `hidden`, `cache`); this
module does not import the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from vla_pruner.layout import SequenceLayout, TokenSet
from vla_pruner.models.llama import KVCache, Probe, ReuseCache, bidirectional_mask
from vla_pruner.protocol import QueryTrace, attention_probs
from vla_pruner.pruning import KVReuse, Pruner, QueryKV, indices_to_hex


class Deleting:
    """Rows a stage leaves out are gone: each layer runs and caches only its rows."""

    def layout(self, layout: SequenceLayout) -> SequenceLayout:
        return layout

    def cache(self, num_layers: int, length: int) -> KVCache:
        return KVCache(num_layers)

    def mask(self, layout: SequenceLayout, group: Any, positions: torch.Tensor) -> torch.Tensor | None:
        """The attention mask of the group's rows (None: causal)."""
        return None if layout.causal else bidirectional_mask(len(group.structure), group.hidden.device)

    def after_stage(self, groups: Sequence[Any], pruners: Sequence[Pruner], num_layers: int,
                    length: int) -> None:
        """Groups a stage just made."""

    def probes(self, layout: SequenceLayout, group: Any, num_layers: int) -> dict[int, Probe]:
        return {}

    def decode_moving(self, group: Any) -> torch.Tensor:
        """[b, 1]: 1 where a sample's decode steps move on from the prefill's positions, 0 where they stay at 0."""
        return torch.tensor([[1] for _ in group.samples], device=group.next_token.device)

    def record(self, trace: QueryTrace, tokens: TokenSet, layout: SequenceLayout, num_layers: int) -> None:
        """Add to a sample's trace once its prefill is done."""

    def finish(self, groups: Sequence[Any], pruners: Sequence[Pruner], length: int, num_layers: int) -> None:
        """After the query's decode."""


@dataclass
class ReuseStats:
    """One sample's attention statistics of a KV-reusing query (`QueryKV`'s), on the device until `finish`."""

    reusing: bool  # whether the query reuses the previous query's keys/values (the episode's first does not)
    entropy: dict[int, torch.Tensor] = field(default_factory=dict)  # by layer, 0-d
    text_attention: list[torch.Tensor] = field(default_factory=list)  # per image [M_i]


class Reusing(Deleting):
    """A `KVReuse` plan: every layer runs over all positions as keys, rows its stages leave out taking the
    keys/values of the pruner's previous query (`stored_query`); after the query each pruner keeps this one's
    (`keep_query`)."""

    def __init__(self, plan: KVReuse, pruners: Sequence[Pruner]):
        self.plan = plan
        self.stats = [ReuseStats(p.stored_query() is not None) for p in pruners]  # per sample

    def layout(self, layout: SequenceLayout) -> SequenceLayout:
        return replace(layout, causal=False) if self.plan.bidirectional else layout

    def cache(self, num_layers: int, length: int) -> KVCache:
        return ReuseCache(num_layers, length)

    def mask(self, layout: SequenceLayout, group: Any, positions: torch.Tensor) -> torch.Tensor | None:
        """A group with fewer rows than positions: its rows against every position's key, in position order."""
        rows = len(group.structure)
        if rows == layout.length:
            return super().mask(layout, group, positions)
        group.cache.rows = positions
        return (visible_keys(layout, positions)[:, None] if layout.causal
                else torch.ones(1, 1, rows, layout.length, dtype=torch.bool, device=group.hidden.device))

    def after_stage(self, groups: Sequence[Any], pruners: Sequence[Pruner], num_layers: int, length: int) -> None:
        """A group that first runs fewer rows than positions takes its samples' stored keys/values (stacked)."""
        for group in groups:
            if len(group.structure) == length or group.cache.base is not None:
                continue
            stored = [pruners[sample].stored_query() for sample in group.samples]
            if any(q is None for q in stored):
                raise RuntimeError("a KV-reusing pruner left rows out of a query with no stored previous query")
            group.cache.base = tuple([torch.stack([getattr(q, part)[layer] for q in stored])
                                      for layer in range(num_layers)] for part in ("keys", "values"))

    def probes(self, layout: SequenceLayout, group: Any, num_layers: int) -> dict[int, Probe]:
        """At every layer: the mean entropy of the head-averaged attention of the rows the layer runs; at the
        plan's attention layer also the text rows' attention to each image (`QueryKV`). Keys are every position
        in order (reused ones included), so a key's index is its position."""
        positions = torch.stack([rows.position for rows in group.tokens])
        visible = visible_keys(layout, positions)[:, None] if layout.causal else None
        text = group.structure.rows_in(layout.text)

        def probe_at(layer: int) -> Probe:
            def probe(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> None:
                probs = attention_probs(query, keys, scaling, visible)  # [b, rows, S]
                entropy = attention_entropy(probs)
                text_attention = probs[:, text].mean(1) if layer == self.plan.attention_layer else None
                for j, sample in enumerate(group.samples):
                    stats = self.stats[sample]
                    stats.entropy[layer] = entropy[j]
                    if text_attention is not None:
                        stats.text_attention = [text_attention[j, s] for s in layout.visual]

            return probe

        return {layer: probe_at(layer) for layer in range(num_layers)}

    def decode_moving(self, group: Any) -> torch.Tensor:
        """The released VLA-Cache decodes a reusing query at RoPE position 0."""
        at_zero = self.plan.decode_at_zero
        return torch.tensor([[0 if at_zero and self.stats[sample].reusing else 1] for sample in group.samples],
                            device=group.next_token.device)

    def record(self, trace: QueryTrace, tokens: TokenSet, layout: SequenceLayout, num_layers: int) -> None:
        """Every layer attended to all positions; the visual tokens the last layer reused, per image."""
        trace.prefill_keys = [layout.length] * num_layers
        trace.reused_mask = [reused_mask(tokens, s) for s in layout.visual]

    def finish(self, groups: Sequence[Any], pruners: Sequence[Pruner], length: int, num_layers: int) -> None:
        """Each pruner keeps the query's prompt keys/values, attention statistics and, if the plan asks, its action
        logits (`QueryKV`)."""
        for group in groups:
            logits = torch.cat(group.logits, dim=1) if group.logits else None
            decode_steps = sum(part.shape[1] for part in group.logits[1:])
            for j, sample in enumerate(group.samples):
                stats = self.stats[sample]
                pruners[sample].keep_query(QueryKV(
                    keys=[k[j, :, :length].clone() for k in group.cache.keys],
                    values=[v[j, :, :length].clone() for v in group.cache.values],
                    entropy=torch.stack([stats.entropy[layer] for layer in range(num_layers)]),
                    text_attention=stats.text_attention,
                    logits=None if logits is None else logits[j].float(), decode_steps=decode_steps))


RowsLeftOut = Deleting  # the hooks' interface; `Reusing` overrides them


def rows_left_out(plan_reuse: KVReuse | None, pruners: Sequence[Pruner]) -> RowsLeftOut:
    """The engine's treatment of left-out rows for a plan."""
    return Deleting() if plan_reuse is None else Reusing(plan_reuse, pruners)


def reused_mask(tokens: TokenSet, visual: slice) -> str:
    """Hex bitmask (bit j = visual token j) of an image's tokens missing from a KV-reusing group's rows."""
    n = visual.stop - visual.start
    reused = torch.ones(n, dtype=torch.bool)
    inside = (tokens.position >= visual.start) & (tokens.position < visual.stop)
    reused[(tokens.position[inside] - visual.start).cpu()] = False
    return indices_to_hex(torch.nonzero(reused).flatten(), n)


def visible_keys(layout: SequenceLayout, positions: torch.Tensor) -> torch.Tensor:
    """[B, n, S] causal visibility of every position's key from rows at `positions` [B, n]."""
    return torch.arange(layout.length, device=positions.device)[None, None] <= positions[:, :, None]


def attention_entropy(probs: torch.Tensor) -> torch.Tensor:
    """[B] mean over rows of the entropy of head-averaged attention rows [B, R, N] (VLA-Cache's layer score:
    rows renormalised, 1e-10 inside the log as its code does)."""
    probs = probs / (probs.sum(-1, keepdim=True) + 1e-10)
    return -(probs * torch.log(probs + 1e-10)).sum(-1).mean(-1)
