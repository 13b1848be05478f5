"""VLA-Cache (Xu et al., arXiv 2502.02175): reuse, don't delete. From one policy query to the next, visual tokens
whose image patch barely changed and that the previous query did not attend to stop being recomputed: from the
layers the layer-adaptive rule picks, they are keys only, with the keys/values the previous query left at their
ORIGINAL positions (the engine's KV-reuse path, `vla_pruner.pruning.KVReuse`). The first query of an episode
runs dense and fills the store; `reset()` empties it.

Per query t > 0 (spec/baselines.md, "VLA-Cache"), for each image:
- static candidates: 14 px patches (16 x 16 for 256 tokens) of the preprocessed image whose raw-pixel cosine
  similarity with the previous query's image is >= `threshold`, the `candidates` most similar;
- task-relevant eviction: the previous query's `eviction_top_k` visual tokens most attended by the text rows at
  `attention_layer` (heads and rows averaged) are never reused; reusable = candidates minus those;
- layer-adaptive reuse: r_l = 1 - min-max normalised mean attention entropy of layer l in the previous query,
  increases damped by `growth`; at each of `reuse_layers` the first int(r_l * |reusable|) reusable tokens (over
  the images, in sequence order) stop being queries, and the set only grows with depth.

`keep` is the share of visual tokens recomputed, as the VLA-Pruner paper compares it ("the same token reuse
ratio"): `candidates` defaults to round((1 - keep) * M) per image. `budget` says what else follows keep:
`joint` (the runs' default, configs/pruner/vla_cache.yaml) also caps the eviction at M - candidates, so a query
whose every candidate is static and unattended reuses all of them and recomputes keep * M tokens: the budget is
reachable, and so are the paper's VLA-Cache FLOPs; `candidates` (the library default, VLA-Cache's own rule) keeps
the eviction fixed, so a query never reuses more than M - eviction_top_k tokens (136 of 256 with 120 evicted,
whatever keep says). The rest of VLA-Cache's rules are unchanged, so fewer tokens are reused in practice.
`behaviour: released` adds what the released code does beyond the paper: a bidirectional prefill, decode steps
at RoPE position 0 on reusing queries, and at least one reused token per reuse layer (`max(1, int(r_l * n))`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vla_pruner.pruning import (KVReuse, PrunePlan, Pruner, PrunerConfig, QueryKV, Selection, Stage, StageInputs,
                                StageRows, check_choice, top_k)

BEHAVIOURS = ("paper", "released")
BUDGETS = ("candidates", "joint")
RELEASED_ATTENTION_LAYER, RELEASED_DEPTH = 15, 32  # eviction attention: layer 15 of OpenVLA-7B's 32


@dataclass(frozen=True)
class VLACacheConfig(PrunerConfig):
    threshold: float = 0.996  # raw-pixel patch cosine similarity at which a patch counts as static
    candidates: int | None = None  # static candidates per image; None: round((1 - keep) * M)
    eviction_top_k: int = 120  # most-attended visual tokens per image never reused (released OFT: 100)
    attention_layer: int | None = None  # layer of the eviction attention; None: round(15 * L / 32)
    reuse_layers: tuple[int, ...] = (2, 6, 9, 11)  # layers where the reused set may grow (those < L)
    growth: float = 0.55  # damping of increases of the reuse fraction from one layer to the next
    behaviour: str = "paper"  # paper | released (bidirectional prefill, decode at position 0 when reusing,
    # at least one reused token per reuse layer)
    budget: str = "candidates"  # candidates | joint (the eviction capped at M - candidates: keep * M reachable)

    def __post_init__(self):
        super().__post_init__()
        check_choice("behaviour", self.behaviour, BEHAVIOURS)
        check_choice("budget", self.budget, BUDGETS)
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold} must be a cosine similarity in [-1, 1]")
        if not 0.0 <= self.growth <= 1.0:
            raise ValueError(f"growth={self.growth} must be in [0, 1]")
        if self.eviction_top_k < 0 or (self.candidates is not None and self.candidates < 0):
            raise ValueError(f"candidates={self.candidates} and eviction_top_k={self.eviction_top_k} "
                             f"must be >= 0")
        if list(self.reuse_layers) != sorted(set(self.reuse_layers)) or min(self.reuse_layers, default=1) < 1:
            raise ValueError(f"reuse_layers={list(self.reuse_layers)} must be increasing layers >= 1 "
                             f"(layer 0 always recomputes)")


def patch_similarity(frame: np.ndarray, previous: np.ndarray, grid: int) -> np.ndarray:
    """[grid * grid] cosine similarity of each square patch's raw pixels (float32) between two images
    [H, W, C], patches in row-major order (the visual tokens' order)."""
    if frame.shape != previous.shape or frame.shape[0] % grid or frame.shape[1] % grid:
        raise ValueError(f"images {frame.shape} and {previous.shape} do not split into {grid} x {grid} patches")

    def patches(image: np.ndarray) -> np.ndarray:
        h, w, c = image.shape
        blocks = image.reshape(grid, h // grid, grid, w // grid, c).transpose(0, 2, 1, 3, 4)
        return blocks.reshape(grid * grid, -1).astype(np.float32)

    a, b = patches(np.asarray(frame)), patches(np.asarray(previous))
    dot = np.sum(a * b, axis=1)
    return dot / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def static_candidates(similarity: np.ndarray, threshold: float, count: int) -> torch.Tensor:
    """The `count` most similar patches at or above `threshold` (ties: lower index first)."""
    scores = torch.from_numpy(np.ascontiguousarray(similarity))
    order = top_k(scores, len(scores))
    return order[scores[order] >= threshold][:count]


def reuse_fractions(entropy: torch.Tensor, growth: float) -> list[float]:
    """Per layer r_l = 1 - min-max normalised entropy, each increase over the previous layer damped by
    `growth` (VLA-Cache's layer-adaptive schedule, float32 as its code)."""
    entropy = entropy.float()
    reuse = (1.0 - (entropy - entropy.min()) / (entropy.max() - entropy.min() + 1e-10)).tolist()
    for i in range(1, len(reuse)):
        if reuse[i] > reuse[i - 1]:
            reuse[i] = reuse[i - 1] + (reuse[i] - reuse[i - 1]) * growth
    return torch.tensor(reuse, dtype=torch.float32).tolist()


def reused_counts(fractions: list[float], layers: tuple[int, ...], reusable: int, minimum: int = 0) -> list[int]:
    """Reused tokens from each reuse layer on: max(minimum, int(r_l * |reusable|)) (the released code: minimum 1),
    at most |reusable|, never fewer than at the layer before."""
    counts, most = [], 0
    for layer in layers:
        count = max(minimum, int(torch.tensor(fractions[layer], dtype=torch.float32) * reusable))
        most = max(most, min(reusable, count))
        counts.append(most)
    return counts


class VLACache(Pruner):
    """VLA-Cache on the engine's KV-reuse path: one stage before each reuse layer, whose `kept` rows are the
    ones still recomputed (the others are reused keys from then on)."""

    name = "vla_cache"
    Config = VLACacheConfig
    keeps_action_logits = False  # whether the plan keeps each query's action logits (`QueryKV.logits`)

    def __init__(self, config: VLACacheConfig, keep: float, layout):
        super().__init__(config, keep, layout)
        if not self.plan.stages and any(self.candidates):  # explicit candidates reuse even at keep=1.0
            self.plan = self.make_plan()

    def check_layout(self) -> None:
        c, layout = self.config, self.layout
        self.layers = tuple(layer for layer in c.reuse_layers if layer < layout.num_layers)
        if not self.layers:
            raise ValueError(f"reuse_layers={list(c.reuse_layers)}: none below the model's {layout.num_layers} "
                             f"layers")
        self.attention_layer = (round(RELEASED_ATTENTION_LAYER * layout.num_layers / RELEASED_DEPTH)
                                if c.attention_layer is None else c.attention_layer)
        if not 0 <= self.attention_layer < layout.num_layers:
            raise ValueError(f"attention_layer={c.attention_layer} must be in 0..{layout.num_layers - 1}")
        for m in layout.image_tokens:
            if math.isqrt(m) ** 2 != m:
                raise ValueError(f"VLA-Cache needs a square patch grid, got {m} visual tokens per image")
        if c.candidates is not None and c.candidates > min(layout.image_tokens):
            raise ValueError(f"candidates={c.candidates} exceeds the {min(layout.image_tokens)} visual tokens "
                             f"of an image")
        self.candidates = tuple(round((1.0 - self.keep) * m) if c.candidates is None else c.candidates
                                for m in layout.image_tokens)
        self.eviction = tuple(min(c.eviction_top_k, m - n) if c.budget == "joint" else c.eviction_top_k
                              for m, n in zip(layout.image_tokens, self.candidates))

    def make_plan(self) -> PrunePlan:
        released = self.config.behaviour == "released"
        return PrunePlan(stages=tuple(Stage(layer=layer - 1, frames=i == 0) for i, layer in enumerate(self.layers)),
                         reuse=KVReuse(self.attention_layer, bidirectional=released, decode_at_zero=released,
                                       action_logits=self.keeps_action_logits))

    def reset(self, seed: int = 0, episode: int | str = 0) -> None:
        super().reset(seed, episode)
        self.stored: QueryKV | None = None
        self.previous_frames: list[np.ndarray] | None = None
        self.static: list[torch.Tensor] = []  # this query's static candidates, per image (most similar first)
        self.reusable: list[torch.Tensor] = []  # this query's, per image (indices, sorted)
        self.counts: list[int] = []  # reused tokens from each reuse layer on

    def keep_query(self, query: QueryKV) -> None:
        self.stored = query

    def stored_query(self) -> QueryKV | None:
        return self.stored

    def choose(self, inputs: StageInputs) -> Selection:
        if inputs.stage == 0:
            self._plan_query([np.asarray(f) for f in inputs.frames])
        reused = self._reused(self.counts[inputs.stage] if self.counts else 0)
        before = self._reused(self.counts[inputs.stage - 1]) if inputs.stage and self.counts else None
        kept, rows = [], []
        for i, m in enumerate(self.layout.image_tokens):
            current = torch.ones(m, dtype=torch.bool)
            if before is not None:
                current[before[i]] = False
            recomputed = current.clone()
            recomputed[reused[i]] = False
            kept.append(torch.nonzero(recomputed[current]).flatten())
            rows.append(int(current.sum()))
        return Selection(kept=kept, num_rows=rows, warmup=self.stored is None)

    def _plan_query(self, frames: list[np.ndarray]) -> None:
        """Stage 0: this query's reusable tokens and the reused count at each reuse layer."""
        previous, self.previous_frames = self.previous_frames, frames
        self.static, self.reusable, self.counts = [], [], []
        stored = self.stored_query()
        if stored is None or previous is None:
            return  # the episode's first query (or one a subclass runs in full): dense, it fills the store
        for i, m in enumerate(self.layout.image_tokens):
            similarity = patch_similarity(frames[i], previous[i], math.isqrt(m))
            static = static_candidates(similarity, self.config.threshold, self.candidates[i])
            self.static.append(static)
            attended = top_k(stored.text_attention[i].float().cpu(), self.eviction[i])
            self.reusable.append(torch.sort(static[~torch.isin(static, attended)]).values)
        fractions = reuse_fractions(stored.entropy, self.config.growth)
        minimum = 1 if self.config.behaviour == "released" else 0
        self.counts = reused_counts(fractions, self.layers, sum(len(r) for r in self.reusable), minimum)

    def _reused(self, count: int) -> list[torch.Tensor]:
        """Per image, the tokens among the first `count` reusable ones over the images in sequence order."""
        out = []
        for reusable in self.reusable or [torch.zeros(0, dtype=torch.long)] * len(self.layout.image_tokens):
            out.append(reusable[:count])
            count = max(0, count - len(reusable))
        return out

    def most_reused(self) -> tuple[int, ...]:
        """Per image, the most tokens a query can reuse under these rules: every candidate static, none of them among
        the evicted ones, r_l = 1 from the first reuse layer."""
        return tuple(min(n, m - e) for m, n, e in zip(self.layout.image_tokens, self.candidates, self.eviction))

    def schedule(self) -> tuple[StageRows, ...]:
        """Per stage, the rows it leaves as queries at the most reuse the rules allow (what the analytic FLOPs count
        assumes: a count a query can reach)."""
        rows = tuple(m - r for m, r in zip(self.layout.image_tokens, self.most_reused()))
        return tuple(StageRows(stage.layer, rows) for stage in self.plan.stages)

    def describe(self) -> dict:
        """Also the schedule's per-image counts (`stage_counts`, per image then per stage)."""
        counts = [[stage.rows[i] for stage in self.schedule()] for i in range(len(self.layout.image_tokens))]
        return {**super().describe(), "candidates_per_image": list(self.candidates),
                "eviction_per_image": list(self.eviction), "most_reused_per_image": list(self.most_reused()),
                "attention_layer_used": self.attention_layer, "reuse_layers_used": list(self.layers),
                "stage_counts": counts}
