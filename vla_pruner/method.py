"""VLA-Pruner (arXiv 2511.16449): keep visual tokens that matter for the semantics (prefill attention) OR
for the actions (decode attention, estimated from the last few queries), then drop redundant ones.

Each switch where the public code differs from the paper is an option whose default follows the paper
(see ../shared/spec/vla_pruner.md; configs/pruner/vla_released.yaml sets them all as released);
`criterion` and `redundancy_filter` express the paper's ablations.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import torch

from vla_pruner.diversity import select_diverse
from vla_pruner.pruning import (
    DEFAULT_PRUNE_LAYER, DroppingConfig, PrunePlan, Selection, SingleCutPruner, StageInputs, check_choice, top_k,
)

CRITERIA = ("dual", "semantic_only", "action_only", "fusion")
TEMPORAL_ORDERS = ("paper", "reversed")
# precision of the scores the top-k ranks and of the diversity filter's distances: the public code selects in the
# model's bfloat16, where near-equal scores tie
SELECTION_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
RELEASED_LAYER, RELEASED_DEPTH = 15, 32  # the public code's action layer: layer 15 of OpenVLA's 32


def released_layer(num_layers: int) -> tuple[int, ...]:
    """The public code's action layer, 15 of 32, at the same relative depth of an L-layer model:
    round(15 * L / 32), half up (layer 4 of the 8-layer tiny models)."""
    return (math.floor(RELEASED_LAYER * num_layers / RELEASED_DEPTH + 0.5),)


# symbolic `action_layers`, as functions of the model's depth L
ACTION_LAYER_RULES: dict[str, Callable[[int], tuple[int, ...]]] = {
    "later_half": lambda num_layers: tuple(range(num_layers // 2, num_layers)),  # paper: L/2..L-1
    "released": released_layer,
}


@dataclass(frozen=True)
class VLAPrunerConfig(DroppingConfig):
    """`dense_warmup` defaults to `window` (the paper: the first queries run dense while the action history
    fills); with fewer, the queries after the dense ones that still find the history short select by the semantic
    score alone (`dense_warmup=0`: no dense query at all)."""

    RETIRED = {"warmup": "folded into dense_warmup: warmup=dense is dense_warmup=<window> (the default), "
                         "warmup=semantic is dense_warmup=0"}
    dense_warmup: int | None = None  # None: = window
    criterion: str = "dual"
    alpha: float = 0.5  # fusion weight of the semantic score
    redundancy_filter: bool = True
    window: int = 3
    gamma: float = 0.8
    prune_layer: int = DEFAULT_PRUNE_LAYER
    semantic_source: str = "prefill"
    action_layers: str | tuple[int, ...] = "later_half"
    temporal_order: str = "paper"
    selection_dtype: str = "float32"

    def __post_init__(self):
        if self.dense_warmup is None:
            object.__setattr__(self, "dense_warmup", self.window)
        super().__post_init__()  # field types, dense_warmup's range
        check_choice("criterion", self.criterion, CRITERIA)
        check_choice("semantic_source", self.semantic_source, ("prefill", "last", "text"))
        check_choice("temporal_order", self.temporal_order, TEMPORAL_ORDERS)
        check_choice("selection_dtype", self.selection_dtype, tuple(SELECTION_DTYPES))
        layers = self.action_layers
        if layers not in ACTION_LAYER_RULES and (isinstance(layers, str) or not layers):
            raise ValueError(f"action_layers={layers!r} is not valid; use one of "
                             f"{', '.join(map(repr, ACTION_LAYER_RULES))} or a list of layer indices such as [15]")
        if self.window < 1:
            raise ValueError(f"window={self.window!r} must be a positive integer")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma={self.gamma!r} must be in (0, 1]")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha!r} must be in [0, 1]")

    @property
    def uses_action(self) -> bool:
        return self.criterion != "semantic_only"


def temporal_weights(window: int, gamma: float, order: str = "paper") -> torch.Tensor:
    """Weights of the history, oldest entry first, summing to 1. Paper: the entry i queries back gets
    gamma^i (newest largest); reversed (Feb-2026 public code): the newest gets the smallest weight."""
    check_choice("temporal_order", order, TEMPORAL_ORDERS)
    powers = torch.arange(window, 0, -1, dtype=torch.float64)  # oldest first: w, ..., 1
    if order == "reversed":
        powers = powers.flip(0)
    weights = gamma ** powers
    return (weights / weights.sum()).float()


def min_max(scores: torch.Tensor) -> torch.Tensor:
    low, high = scores.min(), scores.max()
    return (scores - low) / (high - low).clamp_min(1e-12)


def interleave_union(first: torch.Tensor, second: torch.Tensor, k: int) -> torch.Tensor:
    """The first k distinct tokens of two rankings read alternately (first[0], second[0], first[1], ...):
    the union trimmed to budget without a redundancy criterion (the `redundancy_filter: false` ablation)."""
    merged = torch.stack([first, second], dim=1).flatten()
    unique, inverse = torch.unique(merged, return_inverse=True)
    reading_order = torch.arange(len(merged), device=merged.device)
    first_seen = torch.full((len(unique),), len(merged), device=merged.device).scatter_reduce_(
        0, inverse, reading_order, reduce="amin")
    return merged[first_seen.sort().values[:k]]


class VLAPruner(SingleCutPruner):
    """One cut before prune_layer; the action scores of past queries (fed by observe) steer the next cut."""

    name = "vla"
    Config = VLAPrunerConfig
    config: VLAPrunerConfig

    def check_layout(self) -> None:
        super().check_layout()
        layers, num_layers = self.config.action_layers, self.layout.num_layers
        if not isinstance(layers, str) and not all(0 <= i < num_layers for i in layers):
            raise ValueError(f"action_layers={list(layers)} outside 0..{num_layers - 1}")

    def make_plan(self) -> PrunePlan:
        cfg = self.config
        filters = cfg.criterion == "dual" and cfg.redundancy_filter
        stage = self.cut(rows=cfg.semantic_source, visual_embeddings=filters)
        return PrunePlan(stages=(stage,), action_layers=self.resolve_action_layers() if cfg.uses_action else ())

    def resolve_action_layers(self) -> tuple[int, ...]:
        layers = self.config.action_layers
        if isinstance(layers, str):
            return ACTION_LAYER_RULES[layers](self.layout.num_layers)
        return tuple(sorted(set(layers)))

    def reset(self, seed: int = 0, episode: int | str = 0) -> None:
        super().reset(seed, episode)
        self.history: deque[list[torch.Tensor]] = deque(maxlen=self.config.window)

    @cached_property
    def weights(self) -> torch.Tensor:
        """The history's weights, oldest entry first."""
        return temporal_weights(self.config.window, self.config.gamma, self.config.temporal_order)

    @property
    def history_short(self) -> bool:
        """The action history holds fewer than `window` queries (the episode's first ones): no action estimate yet."""
        return self.config.uses_action and len(self.history) < self.config.window

    def action_estimate(self) -> list[torch.Tensor]:
        """Decaying-window average of the last `window` action scores, per image."""
        per_image = zip(*self.history)
        return [self.weights.to(s[0].device) @ torch.stack(s) for s in per_image]

    def choose(self, inputs: StageInputs) -> Selection:
        semantic = [a.float().mean(0) for a in inputs.attention]
        if self.history_short or self.config.criterion == "semantic_only":
            kept = [self.rank(s, k) for s, k in zip(semantic, self.budgets)]
        else:
            embeddings = inputs.visual_embeddings or [None] * len(semantic)
            kept = [self.choose_image(s, a, e, k)
                    for s, a, e, k in zip(semantic, self.action_estimate(), embeddings, self.budgets)]
        return Selection(kept=[k.sort().values for k in kept], num_rows=self.rows_per_image(inputs))

    def choose_image(self, semantic: torch.Tensor, action: torch.Tensor, embeddings: torch.Tensor | None,
                     k: int) -> torch.Tensor:
        cfg = self.config
        action = action.to(semantic.device)
        if cfg.selection_dtype == "bfloat16":  # the OpenVLA release divides its guide by its sum before the cast
            action = action / action.sum().clamp_min(torch.finfo(torch.float32).tiny)
        if cfg.criterion == "action_only":
            return self.rank(action, k)
        if cfg.criterion == "fusion":
            return self.rank(cfg.alpha * min_max(semantic) + (1 - cfg.alpha) * min_max(action), k)
        by_semantic, by_action = self.rank(semantic, k), self.rank(action, k)
        if not cfg.redundancy_filter:
            return interleave_union(by_semantic, by_action, k)
        candidates = torch.unique(torch.cat([by_semantic, by_action]))  # sorted
        return select_diverse(embeddings, k, SELECTION_DTYPES[cfg.selection_dtype], rows=candidates)

    def rank(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """top_k of the scores rounded to `selection_dtype`: in bfloat16, scores closer than its 8-bit mantissa
        resolves become equal and the tie goes to the lower index (the public code's CUDA top-k leaves the
        order of ties unspecified)."""
        if self.config.selection_dtype == "bfloat16":
            scores = scores.to(torch.bfloat16).float()
        return top_k(scores, k)

    def observe(self, action_attention: Sequence[torch.Tensor]) -> None:
        """Append this query's action scores (in original token order, zero where pruned) to the history."""
        if self.last_kept is None:
            raise RuntimeError("observe() before select() in this episode")
        scores = []
        for attn, kept, m in zip(action_attention, self.last_kept, self.layout.image_tokens):
            attn = attn.detach().float().flatten()
            if len(attn) == m:
                scores.append(attn)
            elif len(attn) == len(kept):
                scores.append(torch.zeros(m, device=attn.device).index_copy_(0, kept.to(attn.device), attn))
            else:
                raise ValueError(f"action attention has {len(attn)} entries; expected the {len(kept)} kept "
                                 f"tokens or all {m}")
        self.history.append(scores)
