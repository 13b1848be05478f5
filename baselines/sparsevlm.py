"""SparseVLM (Zhang et al., ICML 2025): visual tokens are scored by the attention of "rater" text tokens, the
prompt tokens most related to the image.

- `single` (what the VLA-Pruner paper's table ran): one cut before layer K, top M_keep by rater attention.
- `progressive` (SparseVLM v1.5): cuts after several layers (LLaVA's 2, 6, 15 of 32, scaled to the model's
  depth), each scored by that layer's own attention, with per-stage counts whose layer average equals the
  budget; deleted tokens are partly recycled: the best 30% (+1) are clustered (DPC-kNN) and each cluster is
  merged into one token. Merged tokens count towards the budget, so FLOPs stay comparable.

Raters (both modes, chosen once per query from the LLM input embeddings): relevance(j) = mean over visual
tokens of softmax_j(H_v H_t^T), the softmax running over the candidate text rows only; the rule (`raters`)
says which rows are candidates and how they compare with the mean relevance:

- `repository` (default): the VLA-Pruner repository's OpenVLA baseline, which produced the paper's SparseVLM
  rows (MINT-SJTU/VLA-Pruner, src/openvla/transformers/src/transformers/models/llama/modeling_llama.py,
  `fastv_forward`): candidates are the text rows without the first one and without the final 29871 row
  (OpenVLA rows 258..S-2), the softmax is taken over these candidates alone, raters are those `>=` the mean.
- `paper`: the SparseVLM code (Gumpest/SparseVLMs, llava/model/language_model/modelling_sparse_llama.py,
  "Select Text Raters"): every text row after the image is a candidate (OpenVLA rows 257..S-1), raters are
  those `>` the mean (all of them when none is, where that code would average over no rows).

The engine's "text" rows for OpenVLA are rows 257..S-1. OpenVLA-OFT: the repository's OFT port
(src/openvla-oft/) has FastV and VLA-Pruner but no SparseVLM baseline, so the rule is translated: the
proprio token is not text and never a candidate, and the first prompt token and the 29871 row are dropped
as for OpenVLA. `repository` drops the first and last of the "text" rows the engine hands over, so it is
that translation once OFT's sequence layout leaves the proprio token out of its "text" rows; while they
start with it, the proprio row is dropped in place of the first prompt token (and `paper` counts it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vla_pruner.pruning import (
    DEFAULT_PRUNE_LAYER, DroppingConfig, MergedTokens, PrunePlan, Selection, SingleCutPruner, Stage, StageInputs,
    StageRows, check_choice, top_k,
)

LLAVA_LAYERS = (2, 6, 15)  # SparseVLM's pruning layers in LLaVA-1.5-7B
LLAVA_DEPTH = 32
RECYCLE_FRACTION = 0.3


@dataclass(frozen=True)
class RaterRule:
    """Which "text" rows may rate (the rows between the first `skip_first` and the last `skip_last`) and
    whether a rater's relevance may equal the candidates' mean (`>=`) or must exceed it (`>`)."""

    skip_first: int
    skip_last: int
    at_mean: bool


RATER_RULES = {
    "repository": RaterRule(skip_first=1, skip_last=1, at_mean=True),  # VLA-Pruner's baseline: rows 258..S-2, >=
    "paper": RaterRule(skip_first=0, skip_last=0, at_mean=False),  # SparseVLM's code: rows 257..S-1, >
}


@dataclass(frozen=True)
class SparseVLMConfig(DroppingConfig):
    mode: str = "single"
    prune_layer: int = DEFAULT_PRUNE_LAYER  # single mode only: tokens dropped before this layer
    raters: str = "repository"  # rater rule, see RATER_RULES

    def __post_init__(self):
        super().__post_init__()
        check_choice("mode", self.mode, ("single", "progressive"))
        check_choice("raters", self.raters, tuple(RATER_RULES))


def rater_rows(visual: torch.Tensor, text: torch.Tensor, rule: RaterRule) -> torch.Tensor:
    """Indices into the text rows of the raters: relevance(j) = mean over visual tokens i of softmax_j(H_v H_t^T)
    on LLM input embeddings, the softmax over the rule's candidate rows only, compared with their mean."""
    stop = len(text) - rule.skip_last
    if stop <= rule.skip_first:
        raise ValueError(f"SparseVLM's rater rule {rule} leaves no candidate among {len(text)} text rows")
    relevance = torch.softmax(visual.float() @ text[rule.skip_first:stop].float().T, dim=-1).mean(0)
    chosen = relevance >= relevance.mean() if rule.at_mean else relevance > relevance.mean()
    if not chosen.any():  # `>` with every candidate at the mean (one candidate, or all alike): all of them rate
        chosen = torch.ones_like(chosen)
    return torch.nonzero(chosen).flatten() + rule.skip_first


def progressive_layers(num_layers: int) -> tuple[int, ...]:
    """LLaVA's 2/6/15 scaled to `num_layers`, distinct, each leaving at least one later layer."""
    scaled = (math.floor(p * num_layers / LLAVA_DEPTH + 0.5) for p in LLAVA_LAYERS)
    return tuple(sorted({min(p, num_layers - 2) for p in scaled}))


def stage_counts(num_tokens: int, keep_tokens: int, layers: tuple[int, ...], num_layers: int) -> list[int]:
    """Visual tokens (kept + merged) after each stage, so that the count averaged over all layers equals
    `keep_tokens` (to within half a token). Every stage keeps the same fraction rho of the previous one;
    rho is solved by bisection. Layers 0..layers[0] see all `num_tokens`."""
    spans = [b - a for a, b in zip(layers, layers[1:] + (num_layers - 1,))]
    remaining = keep_tokens * num_layers - (layers[0] + 1) * num_tokens
    if remaining < sum(spans):
        raise ValueError(f"budget {keep_tokens}/{num_tokens} is below what progressive SparseVLM can reach: "
                         f"layers 0..{layers[0]} already average {(layers[0] + 1) * num_tokens / num_layers:.1f} tokens")

    def tokens(rho: float) -> float:
        return sum(span * num_tokens * rho ** (j + 1) for j, span in enumerate(spans))

    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if tokens(mid) < remaining else (low, mid)
    counts = [max(1, math.floor(num_tokens * low ** (j + 1) + 0.5)) for j in range(len(spans) - 1)]
    last = math.floor((remaining - sum(s * c for s, c in zip(spans, counts))) / spans[-1] + 0.5)
    counts.append(min(max(1, last), counts[-1] if counts else num_tokens))
    return counts


def recycle_sizes(deleted: int) -> tuple[int, int]:
    """(tokens recycled, clusters) for `deleted` dropped tokens: top 30% (+1), floor(n/10)+1 clusters."""
    if deleted == 0:
        return 0, 0
    recycled = min(deleted, math.floor(RECYCLE_FRACTION * deleted) + 1)
    return recycled, min(recycled, recycled // 10 + 1)


def kept_for_total(rows: int, total: int) -> int:
    """Most tokens a stage can keep so that kept + merged tokens fit in `total`."""
    for kept in range(min(rows, total), 0, -1):
        if kept + recycle_sizes(rows - kept)[1] <= total:
            return kept
    return 0


def dpc_knn(x: torch.Tensor, clusters: int) -> torch.Tensor:
    """Cluster rows of x [n, d] by density peaks with k-nearest-neighbour density (DPC-kNN, as SparseVLM
    uses it: k = number of clusters, distances scaled by sqrt(d)). Returns each row's cluster id.
    Deterministic: density ties go to the lower index instead of SparseVLM's random jitter."""
    n = x.shape[0]
    if clusters >= n:
        return torch.arange(n, device=x.device)
    dist = torch.cdist(x.float(), x.float()) / math.sqrt(x.shape[1])
    nearest = dist.topk(clusters, dim=1, largest=False).values  # includes the row itself
    density = torch.exp(-(nearest ** 2).mean(1))
    index = torch.arange(n, device=x.device)
    denser = (density[None, :] > density[:, None]) | (
        (density[None, :] == density[:, None]) & (index[None, :] < index[:, None]))
    parent_dist = torch.where(denser, dist, dist.max()).min(1).values
    centres = top_k(parent_dist * density, clusters)
    assign = dist[:, centres].argmin(1)
    assign[centres] = torch.arange(clusters, device=x.device)
    return assign


def merge_clusters(features: torch.Tensor, scores: torch.Tensor, origin: torch.Tensor,
                   assign: torch.Tensor) -> MergedTokens:
    """Mean feature per cluster; each merged token takes the origin of its highest-scoring member."""
    clusters = int(assign.max()) + 1
    sums = torch.zeros(clusters, features.shape[1], dtype=torch.float32, device=features.device)
    sums.index_add_(0, assign, features.float())
    counts = torch.bincount(assign, minlength=clusters).unsqueeze(1)
    order = top_k(scores, len(scores))  # members by descending score
    best = torch.full((clusters,), len(order), device=assign.device).scatter_reduce_(
        0, assign[order], torch.arange(len(order), device=assign.device), reduce="amin")
    return MergedTokens(features=(sums / counts).to(features.dtype), origin=origin[order[best]])


class SparseVLM(SingleCutPruner):
    name = "sparsevlm"
    Config = SparseVLMConfig
    config: SparseVLMConfig

    def reset(self, seed: int = 0, episode: int | str = 0) -> None:
        super().reset(seed, episode)
        self.raters: torch.Tensor | None = None  # rows of the "text" rows that rate, chosen per query
        self.origin: list[torch.Tensor] = []  # per image: original index (position source) of each current row

    @property
    def cuts_once(self) -> bool:
        return self.config.mode == "single"

    def make_plan(self) -> PrunePlan:
        if self.cuts_once:
            return PrunePlan(stages=(self.cut(rows="text", visual_embeddings=True, text_embeddings=True),))
        self.layers = progressive_layers(self.layout.num_layers)
        self.counts = [stage_counts(m, b, self.layers, self.layout.num_layers)
                       for m, b in zip(self.layout.image_tokens, self.budgets)]
        first = Stage(layer=self.layers[0], rows="text", visual_embeddings=True, text_embeddings=True,
                      hidden_states=True)
        later = tuple(Stage(layer=p, rows="text", hidden_states=True) for p in self.layers[1:])
        return PrunePlan(stages=(first,) + later)

    def schedule(self) -> tuple[StageRows, ...]:
        if self.cuts_once or not self.plan.stages:
            return super().schedule()
        return tuple(StageRows(stage.layer, tuple(c[j] for c in self.counts)) for j, stage in enumerate(self.plan.stages))

    def describe(self) -> dict:
        described = super().describe()
        if self.config.mode == "progressive" and self.plan.stages:
            described["stage_counts"] = self.counts  # per image: visual tokens (kept + merged) after each stage
        return described

    def choose(self, inputs: StageInputs) -> Selection:
        if inputs.stage == 0:  # raters are chosen once per query, from the input embeddings
            self.raters = rater_rows(torch.cat(inputs.visual_embeddings), inputs.text_embeddings,
                                     RATER_RULES[self.config.raters])
        scores = [a.float()[self.raters].mean(0) for a in inputs.attention]
        rows = self.rows_per_image(inputs)
        if self.config.mode == "single":
            kept = [top_k(s, k).sort().values for s, k in zip(scores, self.budgets)]
            return Selection(kept=kept, num_rows=rows)
        if inputs.stage == 0:
            self.origin = [torch.arange(len(e), device=e.device) for e in inputs.visual_embeddings]
        kept, merged = [], []
        for i, (score, hidden) in enumerate(zip(scores, inputs.hidden_states)):
            image_kept, image_merged = self.recycle(score, hidden, self.origin[i], self.counts[i][inputs.stage])
            kept.append(image_kept)
            merged.append(image_merged)
            self.origin[i] = torch.cat([self.origin[i][image_kept], image_merged.origin])
        return Selection(kept=kept, num_rows=rows, merged=merged)

    @staticmethod
    def recycle(score: torch.Tensor, hidden: torch.Tensor, origin: torch.Tensor,
                total: int) -> tuple[torch.Tensor, MergedTokens]:
        """Keep the best rows and merge part of the rest, `total` tokens in all."""
        rows = len(score)
        ranked = top_k(score, rows)
        num_kept = kept_for_total(rows, total)
        kept, deleted = ranked[:num_kept], ranked[num_kept:]
        recycled_count, clusters = recycle_sizes(len(deleted))
        if recycled_count == 0:
            empty = MergedTokens(features=hidden[:0], origin=origin[:0])
            return kept.sort().values, empty
        recycled = deleted[:recycled_count]  # deleted rows are already ranked by score
        assign = dpc_knn(hidden[recycled], clusters)
        return kept.sort().values, merge_clusters(hidden[recycled], score[recycled], origin[recycled], assign)
