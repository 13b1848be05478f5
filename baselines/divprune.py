"""DivPrune (Alvar et al., CVPR 2025): keep a max-min diverse subset of the visual tokens, with no relevance
stage, selected on the projected visual embeddings before the LLM.

The selection is the greedy of DivPrune's public code (vbdi/divprune @799e2d9, `DivPrune` in its LLaVA
integration), which differs from VLA-Pruner's diversity filter (`vla_pruner.diversity.select_diverse`) in the
numbers it ranks, so it is kept separate:
- distances = 1 - (u @ u.T) with u = features / row norm, float32 (DivPrune's own formula; `cosine_distances`
  scales a Gram matrix instead, which can flip near-ties in the last bit);
- first pick = argmax over tokens of the SECOND-smallest entry of the token's distance column (its smallest
  being, normally, its own distance ~0), i.e. the token whose nearest other token is farthest;
- then repeatedly the token maximising its minimum distance to the chosen ones; ties go to the lowest index.
One deliberate difference: chosen tokens are excluded from later picks. DivPrune's code ranks them by their
own float distance (~0), so it could pick a token twice when every remaining token is an exact duplicate of a
chosen one (uniform image regions); here the budget is always k distinct tokens.

Where it prunes (`prune_layer`): 0 = DivPrune's own point, on the LLM input embeddings (the projector's outputs),
so every LLM layer sees only the kept tokens; K >= 1 = the shared prune point of the other pruners, selecting on
the layer-K input states (layer K-1's outputs) and dropping before layer K. Runs default to the shared point
(configs/pruner/divprune.yaml: the VLA-Pruner paper's DivPrune FLOPs sit on its FastV row, not at K = 0); the
library's `DivPruneConfig()` keeps DivPrune's own point.
Positions (`positions`): `original` = kept tokens keep their position ids, as every other pruner here;
`renumbered` = DivPrune's code (`position_ids=None` after the drop): the kept sequence is numbered 0..n-1 and
decoding goes on from n. Only at its own point (K = 0), where no layer saw the dropped tokens.
Budget: the shared round(keep * M) half up (DivPrune's code rounds half to even; equal at 256 x 0.5/0.25/0.125).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vla_pruner.pruning import (DroppingConfig, PrunePlan, Selection, SingleCutPruner, StageInputs, check_choice,
                                check_prune_layer)

POSITIONS = ("original", "renumbered")


def divprune_distances(features: torch.Tensor) -> torch.Tensor:
    """[n, n] 1 - cosine similarity in float32, computed as DivPrune's code does (normalise rows, then one
    product)."""
    x = features.float()
    unit = x / x.norm(dim=1, keepdim=True)
    return 1.0 - unit @ unit.T


def divprune_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [k] (long, on `features`' device) of the rows of `features` [n, d] that DivPrune keeps, in
    selection order (see the module docstring). Raises ValueError for a k outside 0..n or non-finite distances
    (a zero or non-finite feature row)."""
    if features.dim() != 2:
        raise ValueError(f"divprune_select: features must be 2-D [n, d], got shape {tuple(features.shape)}")
    n = features.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"divprune_select: k must be an integer in 0..{n}, got {k!r}")
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=features.device)
    dist = divprune_distances(features).cpu().numpy()
    if not np.isfinite(dist).all():
        bad = np.flatnonzero(~np.isfinite(dist).all(axis=1)).tolist()
        raise ValueError(f"divprune_select: distances of rows {bad[:10]} are not finite (zero or non-finite features)")
    picks = [int(np.partition(dist, 1, axis=0)[1].argmax())] if n > 1 else [0]
    min_dist = dist[picks[0]].copy()  # each token's minimum distance to the chosen ones
    min_dist[picks[0]] = -np.inf  # chosen: never picked again (stays -inf under np.minimum)
    for _ in range(k - 1):
        j = int(min_dist.argmax())  # first maximum: ties go to the lowest index
        picks.append(j)
        np.minimum(min_dist, dist[j], out=min_dist)
        min_dist[j] = -np.inf
    return torch.tensor(picks, dtype=torch.long, device=features.device)


@dataclass(frozen=True)
class DivPruneConfig(DroppingConfig):
    # 0 = DivPrune's own point: select on the projected visual embeddings, before layer 0;
    # K >= 1 = the shared prune point: layers 0..K-1 see every token, select on the layer-K input states
    prune_layer: int = 0
    positions: str = "original"  # original | renumbered (DivPrune's code; K = 0 only)

    def __post_init__(self):
        super().__post_init__()
        check_choice("positions", self.positions, POSITIONS)
        if self.positions == "renumbered" and self.prune_layer != 0:
            raise ValueError(f"positions='renumbered' (DivPrune's code renumbers the kept sequence) needs "
                             f"prune_layer=0, its own point before the LLM; got prune_layer={self.prune_layer}")


class DivPrune(SingleCutPruner):
    name = "divprune"
    Config = DivPruneConfig
    config: DivPruneConfig

    def check_layout(self) -> None:
        """K = 0 (before the LLM) is DivPrune's own point, so K ranges over 0..L-1 (the shared check starts at 1)."""
        check_prune_layer(self.config.prune_layer, self.layout.num_layers, lowest=0,
                          why=" (0 = before the LLM, DivPrune's own point)")

    def make_plan(self) -> PrunePlan:
        if self.config.prune_layer == 0:  # stage layer -1: before layer 0
            return PrunePlan(stages=(self.cut(visual_embeddings=True),),
                             renumber_positions=self.config.positions == "renumbered")
        return PrunePlan(stages=(self.cut(hidden_states=True),))

    def choose(self, inputs: StageInputs) -> Selection:
        features = inputs.visual_embeddings if self.config.prune_layer == 0 else inputs.hidden_states
        kept = [divprune_select(f, k).sort().values for f, k in zip(features, self.budgets)]
        return Selection(kept=kept, num_rows=self.rows_per_image(inputs))
